"""The study's TPE: Optuna's TPESampler, each group of parameters sampled when the trial first asks
for one of its parameters, and the trials' parameters read without a call per value.

    >>> sampler = StudyTPE(seed=0, multivariate=True, group=True)   # samplers.build_sampler("tpe") makes it

With `group=True` Optuna samples every group of the study's parameters (a schedule's first block with
the block count, its second block, ...) at a trial's first suggestion, each from the finished
trials that have that group, and the trial uses those it asks for. A schedule of one block never
asks for the second block's parameters, yet Optuna sampled them. (A 500-trial study of the stub
landscape, benchmarks/study_loop.py: 371 of its trials had one block; at its end, sampling the
first group took 4.5 ms and the second 2.3 ms on a CPU. The 1.5B study on the H100: 338 of 500.)
Here `sample_relative` gives a mapping that samples a group (Optuna's own sampling of it) when the
trial first looks up one of its parameters. Each group a trial uses is drawn from the same
distribution as before; what changes is the order of the random draws (a group not asked for draws
none), so with the same seed the proposals differ from Optuna's own after the first trial that
leaves a group out. With the constant liar (several workers), each group's parameters are shared
through the trial's attributes as Optuna shares them, once that group is sampled.

Measured against Optuna's own (every group at once):
- Qwen2.5-Coder-1.5B on the H100, `benchmarks/search_efficiency.py --samplers tpe,tpe-eager --seeds
  0..11 --max-trials 150`: trials to 95% of the grid's hypervolume 25.6 against 33.8 (mean of 12
  seeds), share of it after 150 trials 139.9% against 141.5%, duplicates 51 against 45 a run (10-88
  against 23-87): the same within the seeds' spread.
- The 500-trial study of that model (`benchmarks/study_breakdown.py`): 643 group samplings in
  4.6-5.2 s (three runs) against Optuna's 998 in 4.9-5.9 s (two runs), taking turns on one machine.
- Stub landscape, 500 trials, 6 seeds, a CPU: 3.04 against 3.74 s proposing, 335 against 343
  distinct schedules, hypervolume 0.795 against 0.800 of the best run.

`_get_internal_repr` (the finished trials' values of a group, as arrays, twice per group and
trial) reads each finished trial's parameters directly instead of through a method call per trial
and a conversion call per value; it gives Optuna's arrays, values and types alike
(tests/search/test_study_loop.py), and a list with a running trial (the liar's) goes to Optuna's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import TPESampler

__all__ = ["LazyGroups", "StudyTPE"]


class LazyGroups(Mapping):
    """A trial's relative parameters, {name: value}, sampled group by group on first look-up:
    `sample(group)` gives a group's values ({} where TPE has too few trials yet and leaves them to
    independent sampling). Looking up a name samples its group once; iterating samples them all."""

    def __init__(self, groups: list[dict[str, Any]], sample: Callable[[dict[str, Any]], dict[str, Any]]):
        self._waiting = {name: group for group in groups for name in group}  # names of the groups not sampled yet
        self._sample = sample
        self._values: dict[str, Any] = {}
        self.sampled = 0  # groups sampled so far

    def _fill(self, name: str) -> None:
        group = self._waiting.get(name)
        if group is not None:
            for other in group:
                del self._waiting[other]
            self._values.update(self._sample(group))
            self.sampled += 1

    def __contains__(self, name: object) -> bool:
        self._fill(name)  # type: ignore[arg-type]
        return name in self._values

    def __getitem__(self, name: str) -> Any:
        self._fill(name)
        return self._values[name]

    def _all(self) -> dict[str, Any]:
        while self._waiting:
            self._fill(next(iter(self._waiting)))
        return self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


class StudyTPE(TPESampler):
    """TPESampler with its groups sampled when asked for and its trials' values read directly (above)."""

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> Any:
        groups = getattr(self, "_search_space_group", None)
        if not getattr(self, "_group", False) or groups is None:
            return super().sample_relative(study, trial, search_space)
        parts = [{name: search_space[name] for name in sorted(sub) if name in search_space}
                 for sub in groups.search_spaces]
        # Optuna's sample_relative over one group's names samples that group alone (and shares it, with the liar)
        return LazyGroups([part for part in parts if part],
                          lambda part: TPESampler.sample_relative(self, study, trial, part))

    def _get_internal_repr(self, trials: list[Any], search_space: dict[str, Any], study: Any) -> dict[str, np.ndarray]:
        if not all(t.state.is_finished() for t in trials):  # a running trial's values are its shared ones
            return super()._get_internal_repr(trials, search_space, study)
        names = search_space.keys()
        rows = [params for t in trials if names <= (params := t.params).keys()]
        out = {}
        for name, distribution in search_space.items():
            to_internal = distribution.to_internal_repr if isinstance(distribution, CategoricalDistribution) else float
            out[name] = np.asarray([to_internal(params[name]) for params in rows])
        return out
