"""Nothing lost: a killed run resumes, failing trials are recorded and the study goes on."""

import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from rys_search.search.config import Screen, load_config
from rys_search.search.study import open_study, run_study
from rys_search.tracking import Tracker


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("qwen3")



def runs_by_trial(cfg):
    out = {}
    for run in Tracker(cfg.tracking_location()).trial_runs(cfg.name):
        out.setdefault(int(run.data.tags["rys.trial"]), []).append(run)
    return out


def assert_optuna_and_mlflow_agree(cfg):
    study = open_study(cfg, create=False)
    runs = runs_by_trial(cfg)
    for trial in study.trials:
        assert trial.state.is_finished(), f"trial {trial.number} left {trial.state.name}: {trial.user_attrs}"
        assert len(runs.get(trial.number, [])) == 1, f"trial {trial.number}: {[r.info for r in runs.get(trial.number, [])]}"
        [run] = runs[trial.number]
        assert run.info.status == ("FAILED" if trial.state.name == "FAIL" else "FINISHED")
        assert run.data.tags["rys.state"] == trial.state.name
    assert set(runs) == {t.number for t in study.trials}
    return study


CHEAP_CONFIRM = '[confirm]\nlimit = 2\nmax_confirmed = 3\nobjectives = { math = "math@1", eq = "eq@2", reasoning = "reasoning@1" }\n'


def test_kill_9_at_a_random_point_then_resume(tiny_folder, workdir):
    config = workdir / "crash.toml"
    config.write_text(CHEAP_CONFIRM)  # a confirmation stage that is quick on a tiny model: the kill may land in it
    args = [sys.executable, "-m", "rys_search.cli", "run", "--config", str(config), "--model", tiny_folder,
            "--trials", "8", "--limit", "2", "--study", "crash", "--sampler", "random"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = workdir / "studies" / "crash.db"
    rng = random.Random()
    target = rng.randint(1, 5)  # kill once this many trials have finished, at a random moment after
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    done = con.execute("select count(*) from trials where state in ('COMPLETE','PRUNED')").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= target:
                time.sleep(rng.uniform(0, 1.5))
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cfg = load_config(config, overrides={"model": tiny_folder, "trials": 8, "limit": 2, "name": "crash",
                                         "sampler": "random"})
    before = {}
    if db.exists():
        study = open_study(cfg, create=False)
        before = {t.number: t.values for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")}
    again = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    study = assert_optuna_and_mlflow_agree(cfg)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8
    for number, values in before.items():  # every trial finished before the kill is kept as it was
        assert study.trials[number].values == values
    confirmed = [t.user_attrs["schedule"] for t in finished if "confirmed" in t.user_attrs]
    assert confirmed and len(confirmed) == len(set(confirmed))  # each schedule confirmed once, kill or not


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_folder, workdir, monkeypatch):
    from rys_search.scoring.probes import ProbeObjective

    original = ProbeObjective.result  # every probe's result is made here, scored alone or together
    calls = {"n": 0}

    def sometimes(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("tokenizer error: unexpected byte")
        if calls["n"] == 7:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return original(self, *args, **kw)

    monkeypatch.setattr(ProbeObjective, "result", sometimes)
    cfg = load_config(overrides={"model": tiny_folder, "trials": 4, "limit": 2, "name": "flaky", "sampler": "random",
                                 "screen": Screen(enabled=False), "confirm": {"enabled": False}})
    summary = run_study(cfg, progress=False)
    assert summary["finished_trials"] == 4 and summary["stopped_reason"] is None
    study = assert_optuna_and_mlflow_agree(cfg)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "RuntimeError: tokenizer error: unexpected byte"
    # the out-of-memory trial was retried with smaller batches and completed
    assert all(t.state.name != "FAIL" or "OutOfMemory" not in t.user_attrs.get("fail_reason", "") for t in study.trials)


def test_the_same_failure_again_and_again_stops_the_run(tiny_folder, workdir, monkeypatch, capsys):
    from rys_search.cli import main
    from rys_search.scoring.probes import ProbeObjective

    def broken(self, *args, **kw):
        result = original(self, *args, **kw)
        result.score = float("nan")
        return result

    original = ProbeObjective.result
    monkeypatch.setattr(ProbeObjective, "result", broken)
    config = workdir / "noscreen.toml"
    config.write_text('[screen]\nenabled = false\n')  # every trial reaches the probes
    code = main(["run", "--config", str(config), "--model", tiny_folder, "--trials", "10", "--limit", "2",
                 "--study", "nan", "--sampler", "random"])
    assert code == 1
    err = capsys.readouterr().err
    assert "stopped: 3 trials failed in a row; the last: FloatingPointError: the math@1 score is nan" in err
    cfg = load_config(config, overrides={"model": tiny_folder, "trials": 10, "limit": 2, "name": "nan", "sampler": "random"})
    study = assert_optuna_and_mlflow_agree(cfg)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3


def test_a_trial_killed_before_it_named_its_worker_is_failed(saved_tiny, workdir):
    """Optuna's heartbeat never sees a trial killed before its first beat: rys-search fails it by age."""
    from optuna.trial import TrialState

    settings = {"model": saved_tiny("qwen3"), "limit": 2, "name": "orphan", "sampler": "random",
                "confirm": {"enabled": False}}
    cfg = load_config(overrides={**settings, "trials": 2})
    run_study(cfg, progress=False)
    study = open_study(cfg, create=False)
    orphan = study.ask()  # RUNNING, no heartbeat, no worker: what a kill right after ask() leaves
    assert study.trials[orphan.number].state == TrialState.RUNNING
    summary = run_study(load_config(overrides={**settings, "trials": 3}), progress=False)
    assert summary["finished_trials"] == 3
    study = open_study(cfg, create=False)
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert_optuna_and_mlflow_agree(cfg)
