"""Several workers, one study: real PostgreSQL and `mlflow server`, real worker processes on the CPU."""

import json
import os
import subprocess
import sys
from collections import Counter

import optuna
import pytest

from rys_search.search.config import load_config
from rys_search.search.parallel import admitted, has_room, original_of
from rys_search.search.study import open_study, pareto_rows
from rys_search.tracking import Tracker


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("qwen3")


def cli(*args):
    return [sys.executable, "-m", "rys_search.cli", *args]


def assert_one_run_per_trial(cfg, study):
    """Every trial of the study has exactly one MLflow run, in the trial's state; one parent run."""
    tracker = Tracker(cfg.tracking_location())
    runs = Counter()
    for run in tracker.trial_runs(cfg.name):
        number = int(run.data.tags["rys.trial"])
        runs[number] += 1
        trial = study.trials[number]
        assert run.info.status == ("FAILED" if trial.state.name == "FAIL" else "FINISHED"), (number, run.info.status)
        assert run.data.tags["rys.state"] == trial.state.name
    assert runs == Counter(t.number for t in study.trials)
    parents = tracker.client.search_runs([tracker.experiment_id],
                                         filter_string=f"tags.`rys.study` = '{cfg.name}' and tags.`rys.kind` = 'study'")
    assert [p.info.run_id for p in parents] == [study.user_attrs["mlflow_parent_run"]]


def test_three_workers_on_postgres_and_an_mlflow_server(servers, tiny_folder, workdir, overlapping_workers):
    storage = servers.storage("three")
    args = cli("run", "--model", tiny_folder, "--trials", "30", "--limit", "2", "--study", "three", "--no-confirm",
               "--storage", storage, "--tracking-uri", servers.tracking_uri, "--json")
    env = {**overlapping_workers(2), "OMP_NUM_THREADS": "1"}  # as `run --workers` sets it: 3 workers share 2 cores
    procs = [subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    summaries = [json.loads(out) for out, _ in outputs]

    cfg = load_config(overrides={"model": tiny_folder, "trials": 30, "limit": 2, "name": "three", "storage": storage,
                                 "tracking_uri": servers.tracking_uri})
    study = open_study(cfg, create=False)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == numbers[-1] + 1  # unique, no gaps
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 30
    assert all(t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("surplus") for t in study.trials)
    evaluated = [t.user_attrs["schedule"] for t in finished if "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated))  # no schedule scored twice, at the same time or not
    for t in finished:
        if "duplicate_of" in t.user_attrs:  # the lower trial number wins
            original = study.trials[t.user_attrs["duplicate_of"]]
            assert original.number < t.number and original.user_attrs["schedule"] == t.user_attrs["schedule"]
    workers = Counter(t.user_attrs["worker"] for t in study.trials)
    assert len(workers) >= 2, workers  # the study really was shared
    assert study.trials[0].user_attrs["schedule"] == "0-5"  # the unmodified model, once
    assert sum(t.user_attrs.get("added_layers") == 0 and "duplicate_of" not in t.user_attrs for t in finished) == 1

    assert_one_run_per_trial(cfg, study)
    expected = [(r["trial"], r["schedule"]) for r in pareto_rows(study)]
    assert expected
    for summary in summaries:  # every worker read back the same Pareto set
        assert summary["finished_trials"] == 30
        assert [(r["trial"], r["schedule"]) for r in summary["pareto"]] == expected
    print(f"workers: {dict(workers)}; surplus trials: {sum(s['surplus_trials'] for s in summaries)}")


def test_workers_flag_runs_local_workers_on_sqlite(tiny_folder, workdir):
    """`run --workers 2` on the embedded defaults: both workers on one SQLite file and one MLflow file."""
    done = subprocess.run(cli("run", "--model", tiny_folder, "--trials", "8", "--limit", "2", "--study", "local", "--no-confirm",
                              "--workers", "2"), cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "study local: 8/8 finished trials, 2 workers" in done.stdout
    assert "worker 0 (" in done.stdout and "worker 1 (" in done.stdout  # each worker's own line
    cfg = load_config(overrides={"model": tiny_folder, "trials": 8, "limit": 2, "name": "local"})
    study = open_study(cfg, create=False)
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 8
    assert_one_run_per_trial(cfg, study)


def test_gpus_gives_each_worker_its_device_and_the_same_command():
    from rys_search.cli import build_parser
    from rys_search.errors import UserError
    from rys_search.search.workers import worker_command, worker_envs

    assert worker_envs(None, "0,1") == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert worker_envs(None, "0,0") == [{"CUDA_VISIBLE_DEVICES": "0"}] * 2  # two workers sharing GPU 0
    assert worker_envs(3, None) == [{}, {}, {}]
    for workers, gpus in [(2, "0,1"), (0, None), (None, "a,b"), (None, "")]:
        with pytest.raises(UserError):
            worker_envs(workers, gpus)
    args = build_parser().parse_args(["run", "--gpus", "0,1", "--study", "s", "--storage", "postgresql://h/db",
                                      "--trials", "40", "--suites", "mine"])
    command = worker_command(args)
    assert command[:3] == [sys.executable, "-m", "rys_search.cli"]
    assert command[3:] == ["run", "--study", "s", "--trials", "40", "--storage", "postgresql://h/db", "--suites", "mine"]


def test_an_unreachable_tracking_server_is_one_line(tiny_folder, workdir):
    from servers import free_port

    done = subprocess.run(cli("run", "--model", tiny_folder, "--trials", "2", "--no-confirm", "--tracking-uri",
                              f"http://127.0.0.1:{free_port()}"), cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "cannot reach the MLflow tracking server" in done.stderr


def race(schedules: list[str]):
    """Trials started together, as if by several workers at once: ask all, then publish schedules."""
    study = optuna.create_study(storage="sqlite:///race.db", directions=["maximize"])
    trials = [study.ask() for _ in schedules]
    for trial, schedule in zip(trials, schedules):
        trial.set_user_attr("schedule", schedule)
    return study, trials


def test_the_rank_rule_admits_exactly_the_target(workdir):
    study, trials = race(["a", "b", "c", "d", "e"])
    assert [admitted(study, t, 3) for t in trials] == [True, True, True, False, False]
    study.tell(trials[1], state=optuna.trial.TrialState.FAIL)  # a failure frees a place ...
    assert [admitted(study, t, 3) for t in trials[3:]] == [True, False]  # ... for the next trial only
    for t in trials[3:]:
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert has_room(study, 3)  # two running, none finished: one more may start
    study.tell(trials[0], 1.0)
    study.tell(trials[2], 1.0)
    assert has_room(study, 3)
    last = study.ask()
    study.tell(last, 1.0)
    assert not has_room(study, 3)


def test_the_lowest_trial_with_a_schedule_evaluates_it(workdir):
    study, trials = race(["x", "y", "x", "x"])
    assert [original_of(study, t, t.user_attrs["schedule"]) for t in trials] == [0, 1, 0, 0]
    study.tell(trials[0], state=optuna.trial.TrialState.FAIL)  # the original failed: the next one tries it
    assert original_of(study, trials[2], "x") == 2 and original_of(study, trials[3], "x") == 2
