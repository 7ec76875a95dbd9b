"""The study loop's bookkeeping: in-memory views against Optuna's own answers, the grid sweep, batched tracking."""

import functools
import json
import random
import sqlite3
from collections import Counter

import optuna
import pytest

from rys_search.search.config import SearchSpace, load_config
from rys_search.search.parallel import admitted, live_trials, original_of
from rys_search.search.progress import FrontView
from rys_search.search.space import GRID_PARAM
from rys_search.search.study import open_study, run_study
from rys_search.search.sweep import GridSweep
from rys_search.search.tpe_split import _memoized, memoize_split


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")


@pytest.mark.parametrize("directions", [["maximize", "maximize"], ["maximize", "minimize", "maximize"]])
def test_the_front_view_agrees_with_optuna(directions):
    rng = random.Random(len(directions))
    study = optuna.create_study(directions=directions)
    view = FrontView()
    for n in range(300):
        trial = study.ask()
        if n % 7 == 3:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif n % 11 == 5:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:  # coarse values: ties and equal points on the front are common
            study.tell(trial, [float(rng.randint(0, 12)) for _ in directions])
        if n % 23 == 0 or n == 299:  # read now and then, as workers do: several new trials at once
            view.read(study)
            complete = [t for t in study.trials if t.state.name == "COMPLETE"]
            assert sorted(view.front) == sorted(t.number for t in study.best_trials)
            assert view.finished == sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
            for k, d in enumerate(directions):
                pick = max if d == "maximize" else min
                assert view.best[k] == pick(t.values[k] for t in complete)


def test_one_read_serves_the_admission_and_duplicate_checks(workdir):
    study = optuna.create_study(storage="sqlite:///race.db", directions=["maximize"])
    trials = [study.ask() for _ in range(5)]
    for trial, schedule in zip(trials, ["x", "y", "x", "z", "x"]):
        trial.set_user_attr("schedule", schedule)
    study.tell(trials[1], state=optuna.trial.TrialState.FAIL)
    live = live_trials(study)
    for trial in trials[2:]:
        assert admitted(study, trial, 3, live=live) == admitted(study, trial, 3)
        schedule = trial.user_attrs["schedule"]
        assert original_of(study, trial, schedule, live=live) == original_of(study, trial, schedule)
    assert [admitted(study, t, 3, live=live) for t in trials[2:]] == [True, True, False]
    assert original_of(study, trials[4], "x", live=live) == 0


def test_the_sweep_draws_each_pair_once_and_a_surplus_trial_takes_none():
    pairs = ["none"] + [f"{i},{i + 1}" for i in range(9)]
    study = optuna.create_study(sampler=GridSweep(seed=1))
    surplus = study.ask()
    surplus.suggest_categorical(GRID_PARAM, pairs)
    surplus.set_user_attr("surplus", True)
    study.tell(surplus, state=optuna.trial.TrialState.FAIL)
    drawn = []
    for _ in range(len(pairs)):
        trial = study.ask()
        drawn.append(trial.suggest_categorical(GRID_PARAM, pairs))
        study.tell(trial, 0.0)
    assert sorted(drawn) == sorted(pairs)  # the surplus trial's pair was drawn again, every pair once
    assert study.sampler.left(study, pairs) == 0
    for seed in range(5):  # a running trial takes its pair as well
        study = optuna.create_study(sampler=GridSweep(seed=seed))
        first, second = study.ask(), study.ask()
        assert {first.suggest_categorical(GRID_PARAM, ["a", "b"]), second.suggest_categorical(GRID_PARAM, ["a", "b"])} == {"a", "b"}


def test_a_grid_study_stops_when_the_grid_is_exhausted(tiny_folder, workdir):
    space = SearchSpace(max_blocks=1, width=(1, 2), extra_passes=(1, 1), max_added_layers=2, region=(1, -2))
    cfg = load_config(overrides={"model": tiny_folder, "limit": 2, "trials": 20, "name": "sweep", "sampler": "grid",
                                 "space": space, "objectives": "math"})
    summary = run_study(cfg, progress=False)
    grid = 1 + 4 + 3  # the unmodified model, 4 blocks of width 1 and 3 of width 2 in layers 1..4
    assert summary["finished_trials"] == grid
    assert summary["status"].startswith(f"grid exhausted: each of its {grid} schedules has had its trial")
    study = open_study(cfg, create=False)
    assert not [t for t in study.trials if "duplicate_of" in t.user_attrs]  # nothing drawn twice
    assert len({t.user_attrs["schedule"] for t in study.trials}) == grid
    again = run_study(cfg, progress=False)  # resumed: nothing left to draw
    assert again["status"].startswith("grid exhausted") and again["finished_trials"] == grid


def test_sqlite_storages_write_ahead_without_an_fsync_per_commit(workdir):
    from rys_search.search.storage import storage_for

    storage = storage_for(f"sqlite:///{workdir / 'fast.db'}")
    optuna.create_study(storage=storage, study_name="s")
    with storage.engine.connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    assert sqlite3.connect(workdir / "fast.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_each_trial_run_gets_one_batch(tiny_folder, workdir, monkeypatch):
    """The study's runs carry what one batch logs; closing a trial's run (what the writer process
    does, search/trial_runs.py) makes exactly one log_batch call."""
    from rys_search.tracking import Tracker, trial_params

    cfg = load_config(overrides={"model": tiny_folder, "limit": 2, "trials": 4, "name": "batched",
                                 "sampler": "random", "objectives": "math"})
    run_study(cfg, progress=False)
    study = open_study(cfg, create=False)
    tracker = Tracker(cfg.tracking_location())
    logged = tracker.client.get_run(study.trials[1].user_attrs["mlflow_run"]).data
    assert logged.params["schedule"] == study.trials[1].user_attrs["schedule"] and logged.params["sampler"] == "random"
    assert "1_score/math_v1" in logged.metrics

    calls = Counter()
    original = Tracker._batch

    def counting(self, run_id, params=None, metrics=None, tags=None):
        calls[run_id] += 1
        return original(self, run_id, params=params, metrics=metrics, tags=tags)

    monkeypatch.setattr(Tracker, "_batch", counting)
    parent = study.user_attrs["mlflow_parent_run"]
    for trial in study.trials:
        run = tracker.open_trial_run(parent, "batched-again", trial.number, schedule=trial.user_attrs.get("schedule", ""))
        assert calls[run] == 0  # params come when it closes
        tracker.close_trial_run(trial, "batched-again", parent, run_id=run, params=trial_params(trial))
        assert calls[run] == 1


def test_eta_paces_cheap_trials_and_the_confirmations_left_apart(monkeypatch):
    """The ETA leaves out the first trial's one-off costs and counts the confirmation budget left at
    a confirmation's pace: after 4 trials of a 10-trial study (1 s each, one confirmed in 10 s, 2 in
    the budget) it is 6 trials x 1 s + 1 confirmation x 10 s, where elapsed / done x left said 94 s."""
    import io
    from types import SimpleNamespace

    import rys_search.search.progress as progress
    from optuna.trial import TrialState

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    config = SimpleNamespace(trials=10, objective_names=lambda: ["math@1"],
                             confirm=SimpleNamespace(max_confirmed=2))
    out = io.StringIO()
    line = progress.Progress(config, already=0, out=out)
    trials = []
    study = SimpleNamespace(directions=[SimpleNamespace(name="MAXIMIZE")],
                            get_trials=lambda deepcopy, states: list(trials))
    runner = SimpleNamespace(confirmer=object())
    # trial 0: the unmodified model, its confirmation the baseline (40 s); then 1 s each, trial 2 confirmed in 10 s
    confirmed = {"math@2:generate": {"change": 0.0}}
    for number, at, attrs in ((0, 50.0, {"unmodified": True, "added_layers": 0, "confirmed": confirmed,
                                         "confirm_seconds": 40.0}),
                              (1, 51.0, {"added_layers": 2}),
                              (2, 62.0, {"added_layers": 2, "confirmed": confirmed, "confirm_seconds": 10.0}),
                              (3, 63.0, {"added_layers": 2})):
        clock[0] = at
        trial = SimpleNamespace(number=number, state=TrialState.COMPLETE, values=[float(number)], user_attrs=attrs)
        trials.append(trial)
        line.update(study, trial, runner)
    assert line.view.confirmed == 1
    assert "4/10 trials, 6 left, ETA 0:16 |" in out.getvalue().splitlines()[-1]
    runner.confirmer = None  # a study without the stage: the cheap pace alone
    clock[0] = 64.0
    trials.append(SimpleNamespace(number=4, state=TrialState.COMPLETE, values=[4.0], user_attrs={"added_layers": 2}))
    line.update(study, trials[-1], runner)
    assert "5/10 trials, 5 left, ETA 0:05 |" in out.getvalue().splitlines()[-1]


def _tpe_proposals(shared: bool, path: str) -> tuple[list[str], int]:
    """40 TPE trials of the study's space on SQLite by one worker: the schedules, and storage reads of all trials."""
    from rys_search.search.samplers import build_sampler
    from rys_search.search.space import suggest_schedule

    space = load_config().space
    study = optuna.create_study(storage=f"sqlite:///{path}", directions=["maximize"] * 3,
                                sampler=build_sampler("tpe", seed=3, shared=shared))
    reads = []
    original = study._storage.get_all_trials
    study._storage.get_all_trials = lambda *a, **k: reads.append(1) or original(*a, **k)
    proposals, seen = [], set()
    for n in range(40):
        trial = study.ask()
        key = str(suggest_schedule(trial, 30, space))
        proposals.append(key)
        if key in seen:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            seen.add(key)
            score = sum(map(ord, key)) % 17
            study.tell(trial, [float(score), float(n % 5), float(len(key))])
    return proposals, len(reads)


def test_tpe_without_the_constant_liar_proposes_what_it_would_with_one_worker(workdir):
    """The liar only matters beside other workers' running trials: alone it changes nothing but the reads."""
    alone, alone_reads = _tpe_proposals(False, "alone.db")
    liar, liar_reads = _tpe_proposals(True, "liar.db")
    assert alone == liar
    assert len(set(alone)) > 20  # past the 10 random start-up trials, TPE itself proposed
    assert alone_reads < liar_reads


def test_tpe_with_incremental_groups_and_one_split_a_trial_proposes_what_optuna_s_own_does(monkeypatch):
    """60 trials of the study's space, some pruned, some finished after a later-numbered one; ours
    keeps its groups incrementally, splits the trials once per trial (tpe_split.py) and reads their
    values directly (tpe.py); Optuna's works all three out again for every group. Both sample a group
    when the trial asks for it (test_tpe_samples_a_group_when_the_trial_asks_for_it)."""
    from optuna.samplers._tpe import sampler as tpe

    from rys_search.search.samplers import IncrementalGroups, build_sampler
    from rys_search.search.space import suggest_schedule
    from rys_search.search.tpe import StudyTPE

    space = load_config().space

    def proposals(sampler):
        study = optuna.create_study(directions=["maximize"] * 3, sampler=sampler)
        keys, held = [], []

        def tell(trial, key):
            if key in keys[:-1] or len(key) % 5 == 0:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, [float(sum(map(ord, key)) % 17), float(trial.number % 5), float(len(key))])

        for n in range(60):
            trial = study.ask()
            keys.append(str(suggest_schedule(trial, 30, space)))
            if n % 9 == 4:  # held back: it finishes after the next trial
                held.append((trial, keys[-1]))
                continue
            tell(trial, keys[-1])
            while held:
                tell(*held.pop())
        return keys

    own = getattr(tpe._split_trials, "__wrapped__", tpe._split_trials)  # Optuna's function
    splits = []

    def counted(*args):
        splits.append(1)
        return own(*args)

    monkeypatch.setattr(tpe, "_split_trials", _memoized(counted))
    ours = build_sampler("tpe", seed=3)  # leaves a memo in place as it is
    assert isinstance(ours._group_decomposed_search_space, IncrementalGroups)
    ours_proposed, ours_splits = proposals(ours), len(splits)
    monkeypatch.setattr(tpe, "_split_trials", counted)  # once per group of parameters, as Optuna does
    theirs = StudyTPE(seed=3, multivariate=True, group=True, constant_liar=False)
    theirs._get_internal_repr = functools.partial(optuna.samplers.TPESampler._get_internal_repr, theirs)
    assert ours_proposed == proposals(theirs)
    assert len(ours._group_decomposed_search_space._added) > 50  # the sampler kept them
    assert 0 < ours_splits < 0.7 * (len(splits) - ours_splits)  # the memo served the other groups


def test_tpe_samples_a_group_when_the_trial_asks_for_it():
    """Optuna samples every group at a trial's first suggestion; ours samples a group at the first look-up of
    one of its parameters, with Optuna's own sampling of it, so a trial that asks for every group in their
    order gets Optuna's values, and a group never asked for draws nothing; with the constant liar the groups
    sampled are shared in the trial's attributes as Optuna shares them."""
    from rys_search.search.tpe import LazyGroups, StudyTPE

    dist = optuna.distributions.IntDistribution(0, 9)
    for liar in (False, True):
        sampler = StudyTPE(seed=1, multivariate=True, group=True, constant_liar=liar, n_startup_trials=2)
        study = optuna.create_study(directions=["maximize"] * 2, sampler=sampler)
        for n in range(12):  # "a" and "b" in every trial, "c" and "d" in every third
            names = ("a", "b", "c", "d") if n % 3 == 0 else ("a", "b")
            study.tell(study.ask({name: dist for name in names}), [float(n % 4), float(n % 5)])
        trial = study.ask()
        space = sampler.infer_relative_search_space(study, study._storage.get_trial(trial._trial_id))
        assert sorted(space) == ["a", "b", "c", "d"]
        frozen = study._storage.get_trial(trial._trial_id)
        state = sampler._rng.rng.get_state()
        eager = optuna.samplers.TPESampler.sample_relative(sampler, study, frozen, space)  # every group now
        assert sorted(eager) == ["a", "b", "c", "d"]

        sampler._rng.rng.set_state(state)
        lazy = sampler.sample_relative(study, frozen, space)
        assert isinstance(lazy, LazyGroups) and lazy.sampled == 0
        assert "a" in lazy and lazy["b"] == eager["b"] and lazy["a"] == eager["a"] and lazy.sampled == 1
        if liar:  # only what was sampled is shared
            shared = study._storage.get_trial(trial._trial_id).system_attrs["tpe:relative_params:0"]
            assert json.loads(shared) == {"a": eager["a"], "b": eager["b"]}
        assert lazy["d"] == eager["d"] and lazy.sampled == 2 and dict(lazy) == eager

        sampler._rng.rng.set_state(state)
        first_only = sampler.sample_relative(study, frozen, space)
        assert first_only["a"] == eager["a"] and first_only.sampled == 1  # "c" and "d" never asked for: never drawn


def test_tpe_reads_the_trials_values_as_optuna_does():
    from rys_search.search.tpe import StudyTPE

    dists = {"i": optuna.distributions.IntDistribution(1, 64, log=True), "f": optuna.distributions.FloatDistribution(0, 1),
             "c": optuna.distributions.CategoricalDistribution(["x", 3, None]), "s": optuna.distributions.IntDistribution(0, 8, step=2)}
    sampler = StudyTPE(seed=0, multivariate=True, group=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for n in range(9):  # some without "c", some pruned
        trial = study.ask({k: d for k, d in dists.items() if k != "c" or n % 3})
        study.tell(trial, float(n)) if n % 4 else study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False)
    for space in (dists, {k: dists[k] for k in ("i", "s")}):
        ours = sampler._get_internal_repr(trials, space, study)
        theirs = optuna.samplers.TPESampler._get_internal_repr(sampler, trials, space, study)
        assert list(ours) == list(theirs)
        for name in theirs:
            assert ours[name].dtype == theirs[name].dtype and ours[name].tolist() == theirs[name].tolist()
    assert len(theirs["i"]) == 9 and len(sampler._get_internal_repr(trials, dists, study)["c"]) == 6


def test_the_split_memo_is_put_in_place_once(monkeypatch):
    from optuna.samplers._tpe import sampler as tpe

    own = getattr(tpe._split_trials, "__wrapped__", tpe._split_trials)
    monkeypatch.setattr(tpe, "_split_trials", own)
    assert memoize_split()
    memo = tpe._split_trials
    assert memo.memoized and memo.__wrapped__ is own
    assert memoize_split() and tpe._split_trials is memo


def test_incremental_groups_are_optuna_s_groups_when_a_trial_finishes_after_a_later_one():
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace

    from rys_search.search.samplers import IncrementalGroups

    study = optuna.create_study()
    ours, theirs = IncrementalGroups(), _GroupDecomposedSearchSpace(include_pruned=True)
    dist = optuna.distributions.IntDistribution(0, 9)

    def same():
        a, b = ([list(group) for group in g.calculate(study).search_spaces] for g in (ours, theirs))
        assert a == b
        return a

    late = study.ask({"x": dist, "y": dist, "z": dist})  # finishes last
    for names in (("x",), ("x", "y")):
        study.tell(study.ask({n: dist for n in names}), 1.0)
        same()
    study.tell(late, state=optuna.trial.TrialState.PRUNED)
    assert sorted(map(sorted, same())) == [["x"], ["y"], ["z"]]


def test_the_constant_liar_is_on_only_for_a_shared_study():
    from rys_search.search.samplers import build_sampler

    assert build_sampler("tpe", seed=0, shared=True)._constant_liar
    assert not build_sampler("tpe", seed=0)._constant_liar
