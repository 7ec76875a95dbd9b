"""The samplers a study can use, by name: one table, read by the config check and the study.

    >>> SAMPLERS                                    # ('tpe', 'nsga2', 'nsga3', 'gp', 'random', 'grid')
    >>> sampler = build_sampler("nsga2", seed=0)    # an Optuna sampler; optuna is imported here, lazily
    >>> sampler = build_sampler("tpe", seed=None, shared=True)   # one of several workers on a study

TPE's constant liar (a running trial of another worker counts as a bad one, so workers do not all
sample the same region) is on only where several workers share the study (`shared`). With one
worker the only running trial is the one being sampled, which the liar leaves out, so it proposes
exactly what the liar would; but the liar makes TPE read the trials from storage again for each
group of parameters instead of once per trial, and store each trial's relative parameters as
extra attributes (tests/search/test_study_loop.py checks both proposals agree). A study is shared
when `run --workers`/`--gpus` started its workers, its storage is a server, or a process found
workers at work on its SQLite file (search/alone.py).

In the fixed encoding (search/encoding.py) NSGA-II and NSGA-III see the study without its
unmodified trial, which has no parameters (`HideUnmodified`): they evolve only the intersection
of the trials' parameters, and with that trial in view the intersection was empty, so they
proposed exactly what the random sampler did with the same seed (benchmarks/search_efficiency.py
on Qwen2.5-Coder-1.5B, H100: nsga2 and gp gave identical results; tests/search/test_encoding.py).
GP is left as it was, with a reason: shown the study without that trial it does model the
space, but it then proposes schedules already scored in nearly every trial (136 of 150 on the
H100: many parameter vectors decode to one schedule, and a duplicate is pruned, which teaches
it nothing), so it stalls below random sampling; as it is, its proposals are random ones.

`grid` sweeps the (i, j) pairs of search/space.py once each, in random order, and ends the study when
none is left (search/sweep.py).

TPE's groups of parameters (`group=True`) are worked out again from every finished trial before
each trial in Optuna (0.95 s of a 500-trial study on the H100); `IncrementalGroups` adds only the
trials finished since, which gives the same groups in the same order (adding a trial's parameters
again changes nothing): the same proposals as Optuna's own (tests/search/test_study_loop.py).
Each group's sampling also splits the finished trials into TPE's good and bad sets again, to the
same split; tpe_split.py keeps the last split for the next group and for the parameters sampled
on their own, with the same proposals. What it saves depends on how costly the split is: with scores
full of ties (many trials on the first non-dominated front, a hypervolume tie-break each time) a
synthetic 500-trial study took 9.5-11.3 s of TPE before and 5.3-5.9 s after on the H100's host; on
the stub landscape of `benchmarks/study_loop.py --compare-split` the change is within the noise. In
the real 1.5B study, `sample_independent` went from about 1.0 s to 0.5-0.66 s, and
`sample_relative` showed no clear change from run to run.

The study's TPE is tpe.StudyTPE: Optuna's, but a group is sampled when the trial first asks for one
of its parameters (Optuna samples every group at the trial's first suggestion, and a one-block
schedule never uses the second block's), and the trials' values are read without a call per value.
The groups a trial uses come from the same distributions; the random draws come in another order,
so the proposals are not Optuna's own for the same seed (tpe.py says what was measured).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["SAMPLERS", "HideUnmodified", "IncrementalGroups", "build_sampler"]


_FACTORIES: dict[str, Callable[[Any, int | None, dict[str, list[Any]] | None, bool], Any]] = {
    "tpe": lambda optuna, seed, grid, shared: _tpe(optuna, seed, shared),
    "nsga2": lambda optuna, seed, grid, shared: optuna.samplers.NSGAIISampler(seed=seed),
    "nsga3": lambda optuna, seed, grid, shared: optuna.samplers.NSGAIIISampler(seed=seed),
    "gp": lambda optuna, seed, grid, shared: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False),
    "random": lambda optuna, seed, grid, shared: optuna.samplers.RandomSampler(seed=seed),
    "grid": lambda optuna, seed, grid, shared: _grid_sweep(seed, grid),
}
SAMPLERS = tuple(_FACTORIES)
HIDING = ("nsga2", "nsga3")  # shown the study without the unmodified trial in the fixed encoding (see above)


def _tpe(optuna: Any, seed: int | None, shared: bool) -> Any:
    from .tpe import StudyTPE
    from .tpe_split import memoize_split

    memoize_split()  # one split of the trials per trial, not one per group (tpe_split.py)
    sampler = StudyTPE(seed=seed, multivariate=True, group=True, constant_liar=shared)  # groups sampled when used
    if getattr(sampler, "_group_decomposed_search_space", None) is not None:  # Optuna's own, where it has one
        sampler._group_decomposed_search_space = IncrementalGroups()
    return sampler


class IncrementalGroups:
    """Optuna's group-decomposed search space of the finished (complete and pruned) trials, with only
    the trials finished since the last call added to it.

    Optuna's own adds every finished trial at every call to groups it keeps; a trial added before
    changes nothing (its parameters are already a union of groups), so adding the new ones alone,
    in the order of their numbers as Optuna goes through them, gives the same groups."""

    def __init__(self) -> None:
        from optuna.search_space.group_decomposed import _SearchSpaceGroup

        self._groups = _SearchSpaceGroup()
        self._added: set[int] = set()  # numbers of the trials added

    def calculate(self, study: Any, use_cache: bool = False) -> Any:
        import copy

        from optuna.trial import TrialState

        for trial in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED),
                                       use_cache=use_cache):
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._groups.add_distributions(trial.distributions)
        return copy.deepcopy(self._groups)


def _grid_sweep(seed: int | None, grid: dict[str, list[Any]] | None) -> Any:
    """The grid: each (i, j) pair once, in random order; the pairs come from the trial's own
    suggest_categorical (space.suggest_grid), and the study stops once they are exhausted (sweep.py)."""
    from .sweep import GridSweep

    return GridSweep(seed=seed, param=next(iter(grid)) if grid else "rys")


def build_sampler(name: str, seed: int | None = None, grid: dict[str, list[Any]] | None = None,
                  shared: bool = False, hide: str | None = None) -> Any:
    """The Optuna sampler called name (grid: over the search space given, {param: values}); seed None: fresh
    randomness; shared: one of several workers on the study; hide: in the fixed encoding, the user
    attribute of the trial NSGA-II and -III are not shown (space.UNMODIFIED)."""
    import warnings

    import optuna

    if name not in _FACTORIES:
        raise ValueError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = _FACTORIES[name](optuna, seed, grid, shared)
    return HideUnmodified(sampler, hide) if hide and name in HIDING else sampler


def _without(study: Any, hide: str) -> Any:
    """The study as a sampler sees it, less the trials with the user attribute `hide`."""
    from .trials_view import TrialsView

    return TrialsView(study, lambda deepcopy, states, use_cache: [
        t for t in study._get_trials(deepcopy, states, use_cache) if not t.user_attrs.get(hide)])


def _hiding(method: str) -> Callable[..., Any]:
    def call(self, study: Any, *args: Any) -> Any:
        return getattr(self.base, method)(_without(study, self.hide), *args)

    call.__name__ = method
    return call


class HideUnmodified:
    """A sampler that never sees the study's unmodified trial (enqueued with no parameters, marked by
    the user attribute `hide`)."""

    def __init__(self, base: Any, hide: str):
        self.base = base
        self.hide = hide

    infer_relative_search_space = _hiding("infer_relative_search_space")
    sample_relative = _hiding("sample_relative")
    sample_independent = _hiding("sample_independent")
    before_trial = _hiding("before_trial")
    after_trial = _hiding("after_trial")

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)
