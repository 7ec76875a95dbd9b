"""Objectives by name: the registered ones (fixed_point) and the probe suites of the suite folders.

    >>> objective = get_objective("math", mode="logprob")
    >>> available_objectives(["my_suites/"])       # ['eq', 'fixed_point', 'math', ..., 'mine']

A module that defines an objective in code registers it once at import
(`register("fixed_point", factory)`); a second registration of the same name is refused, so
two objectives never answer to one name. A probe suite needs no registration: a file in a
suite folder is found by its name.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserError
from .objective import MODES, Objective

__all__ = ["available_objectives", "get_objective", "register"]

_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register(name: str, factory: Callable[..., Objective]) -> None:
    """Make an objective available by name; factory(mode=..., suites=...) builds it."""
    if name in _REGISTRY:
        raise ValueError(f"an objective named {name!r} is registered already")
    _REGISTRY[name] = factory


def available_objectives(suites: list[str] | None = None) -> list[str]:
    from .suites import load_suites

    return sorted(set(_REGISTRY) | set(load_suites(suites)))


def get_objective(name: str, mode: str = "logprob", suites: list[str] | None = None) -> Objective:
    """The objective called name: a registered one, or a probe suite from the suite folders."""
    from .probes import ProbeObjective
    from .suites import load_suites

    if mode not in MODES:
        raise UserError(f"unknown scoring mode {mode!r}; use one of {', '.join(MODES)}")
    if name in _REGISTRY:
        return _REGISTRY[name](mode=mode, suites=suites)
    found = load_suites(suites)
    if name in found:
        return ProbeObjective.from_suite(found[name], mode=mode)
    known = sorted(set(_REGISTRY) | set(found))
    raise UserError(f"unknown objective {name!r}; available: {', '.join(known)}")
