"""TPE's split of the finished trials into "below" (the good ones) and "above", worked out once per
trial instead of once per group of parameters.

    >>> memoize_split()      # once per process; TPESampler then reuses a split it has just made

With `group=True` Optuna's TPESampler samples each group of parameters (a schedule's first block,
its second, ...) on its own, and each group's sampling splits every finished trial again (for
several objectives: non-domination ranks, then a hypervolume tie-break) from the same trials, to
the same split. `memoize_split` puts a wrapper in place of Optuna's `_split_trials` that keeps its
last answer and gives it back while the study, n_below and the trials are the same: the same
objects, in the same order. Optuna's in-memory storage (the loop's, search/alone.py) replaces a
trial's object whenever anything of it changes, and a storage read without its cache makes new
objects, so a changed trial is never answered from the memo. Anything else runs Optuna's own
function, so the proposals are Optuna's (tests/search/test_study_loop.py).
"""

from __future__ import annotations

import operator
from typing import Any, Callable

__all__ = ["memoize_split"]


def memoize_split() -> bool:
    """Wrap optuna's TPE `_split_trials` in the memo (once; later calls change nothing); False where
    this Optuna has no such function (its TPE then runs as it is)."""
    from optuna.samplers._tpe import sampler as tpe

    split = getattr(tpe, "_split_trials", None)
    if split is None:
        return False
    if not getattr(split, "memoized", False):
        tpe._split_trials = _memoized(split)
    return True


def _memoized(split: Callable[..., tuple[list[Any], list[Any]]]) -> Callable[..., tuple[list[Any], list[Any]]]:
    last: list[Any] = [None, None]  # (study, n_below, other arguments, trials), (below, above)

    def memo(study: Any, trials: list[Any], n_below: int, *rest: Any) -> tuple[list[Any], list[Any]]:
        key = last[0]
        if (key is not None and key[0] is study and key[1] == n_below and key[2] == rest
                and len(key[3]) == len(trials) and all(map(operator.is_, key[3], trials))):
            below, above = last[1]
        else:
            below, above = split(study, trials, n_below, *rest)
            last[0], last[1] = (study, n_below, rest, list(trials)), (below, above)
        return list(below), list(above)

    memo.memoized = True  # type: ignore[attr-defined]
    memo.__wrapped__ = split  # type: ignore[attr-defined]
    return memo
