"""The grid sweep: each (i, j) pair of the RYS grid once, in a seeded random order, then stop.

    >>> sampler = GridSweep(seed=0)                 # make_sampler(config) for sampler = "grid"
    >>> trial.suggest_categorical(GRID_PARAM, grid_pairs(28, space))   # an untaken pair
    >>> sampler.left(study, pairs)                  # pairs no trial has taken: 0 ends the study

Optuna's GridSampler stores the whole grid in every trial and compares each trial's copy with
its own on every call (trials x grid comparisons per trial, about 0.2 s per trial at 400
trials), and once every point is done it proposes done points again: a 400-trial study of a
181-point grid pruned 219 duplicates. Here a pair is taken by a trial that is running,
waiting, finished or failed (a surplus trial, failed before it was scored, takes nothing);
finished trials are read once and remembered, since they never change. Workers sharing a
study draw from the untaken pairs, so two of them rarely draw the same one, and the duplicate
check settles it when they do. run_study stops when no pair is left untaken.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState


__all__ = ["GridSweep"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class GridSweep(BaseSampler):
    def __init__(self, seed: int | None = None, param: str = "rys"):
        self.param = param  # the categorical parameter that holds the pair (space.GRID_PARAM)
        self._rng = np.random.RandomState(seed)
        self._fallback = RandomSampler(seed=seed)  # parameters other than the grid's (none in our spaces)
        self._finished: dict[int, str | None] = {}  # trial number -> its pair, for trials that are done

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def taken(self, study) -> set[str]:
        """The pairs of the study's running, waiting and finished trials (surplus ones excepted)."""
        pairs = set()
        for t in study.get_trials(deepcopy=False):
            if t.number in self._finished:
                pair = self._finished[t.number]
            else:
                pair = _pair(t, self.param)
                if t.state in _FINISHED:
                    self._finished[t.number] = pair
            if pair is not None:
                pairs.add(pair)
        return pairs

    def left(self, study, pairs: list[str]) -> int:
        return len(set(pairs) - self.taken(study))

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution) -> Any:
        if param_name != self.param or not isinstance(param_distribution, CategoricalDistribution):
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        choices = list(param_distribution.choices)
        taken = self.taken(study)
        free = [c for c in choices if c not in taken] or choices  # all taken: the loop stops before this
        return free[self._rng.randint(len(free))]


def _pair(trial, param: str) -> str | None:
    if trial.state == TrialState.FAIL and trial.user_attrs.get("surplus"):
        return None
    pair = trial.params.get(param)
    if pair is None and trial.state == TrialState.WAITING:  # enqueued: its pair is a fixed parameter
        pair = trial.system_attrs.get("fixed_params", {}).get(param)
    return pair
