"""Crash recovery without trusting other machines' clocks or process ids."""

import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from rys_search.search import recovery
from rys_search.search.parallel import WORKER, is_local, owner_may_still_close, utc_offset


def a_dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def study_at(workdir, name="s", sampler=None):
    return optuna.create_study(study_name=name, storage=f"sqlite:///{workdir}/{name}.db", sampler=sampler)


def test_a_worker_of_another_container_with_our_host_name_is_not_judged_by_its_pid(workdir):
    study = study_at(workdir)
    host = WORKER.split(":")[0]
    dead = a_dead_pid()
    for worker in (f"{host}:{dead}", f"{host}:0123456789ab:{dead}"):  # the same host name, other PID namespaces
        assert not is_local(worker)
        study.ask().set_user_attr("worker", worker)
    mine = study.ask()
    mine.set_user_attr("worker", WORKER.rpartition(":")[0] + f":{dead}")  # this container's: its pid is checked
    recovery.fail_dead(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL]  # the others: their heartbeat decides


def test_a_nameless_trial_is_aged_by_this_process_clock_not_by_its_start_time(workdir, monkeypatch):
    study = study_at(workdir)
    orphan = study.ask()  # killed before it named its worker
    with sqlite3.connect(workdir / "s.db") as con:  # written by a host two time zones away: it reads 2 h old
        old = (datetime.now() - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.%f")
        con.execute("update trials set datetime_start = ? where number = ?", (old, orphan.number))
    recovery.fail_dead(study)
    assert study.trials[orphan.number].state == TrialState.RUNNING  # maybe a live trial of that host: wait
    monkeypatch.setattr(recovery, "GRACE", 0.3)
    time.sleep(0.4)
    recovery.fail_dead(study)
    assert study.trials[orphan.number].state == TrialState.FAIL  # nameless for GRACE seconds seen from here


def test_failing_a_dead_trial_of_a_grid_study_does_not_stop_it_outside_optimize(workdir):
    study = study_at(workdir, "grid", sampler=optuna.samplers.GridSampler({"x": [0]}))
    trial = study.ask()
    trial.suggest_categorical("x", [0])  # the last grid point, taken
    trial.set_user_attr("worker", WORKER.rpartition(":")[0] + f":{a_dead_pid()}")
    recovery.fail_dead(study)  # Study.tell with the grid sampler's hook would raise: stop() outside optimize
    assert study.trials[0].state == TrialState.FAIL


def test_another_hosts_finished_trial_is_timed_in_utc():
    elsewhere = utc_offset() + 3 * 3600  # a host three hours east of this one
    just_now_there = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=elsewhere)
    trial = SimpleNamespace(user_attrs={"worker": "far:0123456789ab:77", "utc_offset": elsewhere},
                            datetime_complete=just_now_there)
    assert owner_may_still_close(trial, WORKER)  # it finished a moment ago: its worker may still be logging
    trial.datetime_complete = just_now_there - timedelta(minutes=5)
    assert not owner_may_still_close(trial, WORKER)
