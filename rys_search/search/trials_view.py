"""A study seen through another list of its trials: every read of its trials answered by one function.

    >>> view = TrialsView(study, lambda deepcopy, states, use_cache: trials)   # these trials, no storage read

Used where a reader must see the study with some trials left out (samplers.HideUnmodified: NSGA-II
and -III without the unmodified trial) or from trials already in hand (plots.study_figures: one read,
not a dozen). Reads by state, `trials` and `best_trials` (Optuna's own property) all go through
`read(deepcopy, states, use_cache)`; everything else is the study's.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["TrialsView", "given_trials"]


class TrialsView:
    def __init__(self, study: Any, read: Callable[[bool, Any, bool], list[Any]]):
        self._study = study
        self._read = read

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
        return self._read(deepcopy, states, use_cache)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[Any]:
        return self.get_trials()

    @property
    def best_trials(self) -> list[Any]:  # Optuna's own, over the trials this view reads
        return type(self._study).best_trials.fget(self)


def given_trials(study: Any, trials: list[Any]) -> TrialsView:
    """The study with exactly these trials, read from the list, not its storage (deepcopy is ignored:
    they are not copied, so a reader must not change them)."""
    return TrialsView(study, lambda deepcopy, states, use_cache: [t for t in trials
                                                                  if states is None or t.state in states])
