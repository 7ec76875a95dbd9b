"""The writer process of trials' MLflow runs: every run written in order, errors raised in the study, nothing left running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from rys_search.errors import UserError
from rys_search.search.trial_runs import TrialRuns
from rys_search.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")


def _trial(number: int, run: str | None = None) -> optuna.trial.FrozenTrial:
    attrs = {"schedule": f"0-{number}", "blocks": "none", "added_layers": number}
    if run:
        attrs["mlflow_run"] = run
    trial = optuna.trial.create_trial(params={}, distributions={}, values=[float(number)], user_attrs=attrs)
    trial.number = number
    return trial


def _runs(uri: str) -> dict[int, object]:
    return {int(r.data.tags["rys.trial"]): r for r in Tracker(uri).trial_runs("s")}


def test_every_queued_run_is_written_in_order_and_the_writer_ends(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    tracker = Tracker(uri)
    parent = tracker.study_run("s", {"x": 1})
    opened = tracker.open_trial_run(parent, "s", 0, schedule="0-0")
    runs = TrialRuns(uri)
    runs.close(_trial(0, opened), "s", parent, items={"math": [{"id": "a", "score": 1.0}]}, params={"schedule": "0-0"})
    for n in range(1, 6):
        runs.close(_trial(n), "s", parent, params={"schedule": f"0-{n}"})
    runs.finish()
    assert not runs.process.is_alive() and runs.process.exitcode == 0
    assert runs.seconds > 0
    written = _runs(uri)
    assert sorted(written) == list(range(6))
    assert written[0].info.run_id == opened  # the run opened while the trial ran is the one closed
    assert all(r.info.status == "FINISHED" and r.data.tags["rys.state"] == "COMPLETE" for r in written.values())
    assert written[3].data.params["schedule"] == "0-3"
    starts = [written[n].info.start_time for n in range(1, 6)]
    assert starts == sorted(starts)  # written in the order queued


def test_a_failed_write_stops_the_study_with_one_line(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    parent = Tracker(uri).study_run("s", {})
    runs = TrialRuns(uri)
    runs.close(_trial(1, run="0" * 32), "s", parent)  # a run the store does not have
    runs.close(_trial(2), "s", parent)
    with pytest.raises(UserError, match=r"cannot write a trial's MLflow run: trial 1: .*"):
        runs.finish()
    assert sorted(_runs(uri)) == [2]  # the runs after it are still written


def test_drain_waits_for_what_was_queued_and_raises_its_failures_with_the_writer_still_running(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    parent = Tracker(uri).study_run("s", {})
    runs = TrialRuns(uri)
    runs.close(_trial(1, run="0" * 32), "s", parent)  # fails
    for n in range(2, 6):
        runs.close(_trial(n), "s", parent)
    with pytest.raises(UserError, match=r"cannot write a trial's MLflow run: trial 1: .*"):
        runs.drain()
    assert sorted(_runs(uri)) == [2, 3, 4, 5] and runs.process.is_alive()  # every one written before drain returned
    runs.close(_trial(6), "s", parent)
    runs.drain()  # nothing failed since
    assert sorted(_runs(uri)) == [2, 3, 4, 5, 6]
    runs.finish()
    assert not runs.process.is_alive()


def test_the_writer_closes_the_study_run_with_its_figures(tiny_folder, workdir):
    from rys_search.search.config import load_config
    from rys_search.search.study import open_study

    cfg = load_config(overrides={"model": tiny_folder, "name": "s", "trials": 5})
    study = open_study(cfg)
    for k in range(6):
        trial = study.ask()
        trial.set_user_attr("blocks", f"{k % 3}-{k % 3 + 1}x2")
        study.tell(trial, [k, 6 - k, k % 2])
    tracker = Tracker(cfg.tracking_location())
    parent = tracker.study_run("s", {})
    runs = TrialRuns(tracker.uri)
    runs.close_study(cfg, 6, parent, [{"trial": 0}], {"pareto_size": 1.0}, trials=study.get_trials())  # as alone
    runs.finish()
    run = tracker.client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["pareto_size"] == 1.0
    artifacts = {a.path for a in tracker.client.list_artifacts(parent)}
    assert {"pareto_front.png", "layers.png", "history.png", "importances.png", "pareto.json"} <= artifacts
    bad = TrialRuns(tracker.uri)
    bad.close_study(cfg, 6, "0" * 32, [], {})  # a parent run the store does not have; the stored trials read
    with pytest.raises(UserError, match=r"^cannot write the study's MLflow run: .*"):
        bad.finish()


def test_the_figures_read_the_stored_trials_once_or_none_where_they_are_given():
    from rys_search.search.config import load_config
    from rys_search.search.plots import study_figures

    study = optuna.create_study(directions=["maximize"] * 3)
    for k in range(8):
        trial = study.ask()
        trial.set_user_attr("blocks", f"{k % 3}-{k % 3 + 1}x2")
        study.tell(trial, [k, 8 - k, k % 2])
    reads = []
    read = study._storage.get_all_trials
    study._storage.get_all_trials = lambda *a, **k: reads.append(1) or read(*a, **k)
    figures = study_figures(study, load_config(), 6)
    assert len(reads) == 1 and "among 8 complete trials" in figures["pareto_front.png"]._suptitle.get_text()
    assert "importances.png" in figures and "layers.png" in figures
    figures = study_figures(study, load_config(), 6, trials=study.trials[:5])  # read before the count below
    assert len(reads) == 2 and "among 5 complete trials" in figures["pareto_front.png"]._suptitle.get_text()


def _script(uri: str, ending: str) -> str:
    return f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import optuna
from rys_search.search.trial_runs import TrialRuns
from rys_search.tracking import Tracker

if __name__ == "__main__":
    parent = Tracker({uri!r}).study_run("s", {{}})
    runs = TrialRuns({uri!r})
    for n in range(4):
        trial = optuna.trial.create_trial(params={{}}, distributions={{}}, values=[1.0], user_attrs={{"schedule": "x"}})
        trial.number = n
        runs.close(trial, "s", parent)
    print(runs.process.pid, flush=True)
    {ending}
"""


def test_queued_runs_are_written_when_the_study_exits_on_an_error(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    script = Path(workdir) / "exits.py"
    script.write_text(_script(uri, "raise SystemExit(3)  # a loop left by an error: no finish()"))
    done = subprocess.run([sys.executable, str(script)], timeout=120, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert sorted(_runs(uri)) == [0, 1, 2, 3]


def test_the_writer_stops_when_the_study_process_is_killed(workdir):
    uri = f"sqlite:///{workdir}/mlflow.db"
    script = Path(workdir) / "killed.py"
    script.write_text(_script(uri, "time.sleep(60)"))
    study = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    writer = int(study.stdout.readline())
    study.send_signal(signal.SIGKILL)
    study.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(writer, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(writer, signal.SIGKILL)
        pytest.fail("the writer process outlived the killed study process")


def test_a_dead_writer_stops_the_study_at_the_next_trial(workdir):
    runs = TrialRuns(None)
    runs.process.kill()
    runs.process.join()
    with pytest.raises(UserError, match=r"the writer process of the trials ended \(exit code -9\) before trial 3 was written"):
        runs.close(_trial(3), "s", "parent")
