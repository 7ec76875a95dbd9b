"""Objectives by name: the registered ones (fixed_point) and the probe suites of the suite folders.

    >>> objective = get_objective("math", mode="logprob")
    >>> available_objectives(["my_suites/"])       # ['eq', 'fixed_point', 'math', ..., 'mine']

A suite name may carry its version ('math@2'); the bare name means the suite's default version.
A module that defines an objective in code registers it once at import
(`register("fixed_point", factory)`); a second registration of the same name is refused, so
two objectives never answer to one name. A probe suite needs no registration: a file in a
suite folder is found by its name.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserError
from .objective import MODES, Objective

__all__ = ["available_objectives", "get_objective", "objective_key", "register"]

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
        suite = found[name]
        if mode not in suite.modes:
            raise UserError(f"objective {suite.key} is scored in {', '.join(suite.modes)} mode only, not {mode}")
        return ProbeObjective.from_suite(suite, mode=mode)
    known = sorted(set(_REGISTRY) | set(found))
    raise UserError(f"unknown objective {name!r}; available: {', '.join(known)}")


def objective_key(name: str, suites: list[str] | None = None) -> str:
    """The versioned key of an objective name: 'math' -> 'math@1' (the suite the bare name means
    now), 'math@2' -> itself; registered objectives (fixed_point) keep their name. A study stores
    keys, so a later change of a suite's default version never changes what a study measures."""
    from .suites import load_suites

    if name in _REGISTRY:
        return name
    found = load_suites(suites)
    if name not in found:
        known = sorted(set(_REGISTRY) | set(found))
        raise UserError(f"unknown objective {name!r}; available: {', '.join(known)}")
    return found[name].key
