"""A study run alone: its loop on an in-memory copy stores what a loop on the SQLite file stores, and holds the study."""

import time

import optuna
import pytest

from rys_search.errors import UserError
from rys_search.search import alone
from rys_search.search.config import load_config
from rys_search.search.study import open_study, run_study
from rys_search.search.trial_runs import TrialRuns

# what a trial records about its own run (process, clock, MLflow run id) differs between any two runs
OWN = {"worker", "utc_offset", "seconds", "mlflow_run"}


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")


def _config(tiny_folder, name, **overrides):
    return load_config(overrides={"model": tiny_folder, "limit": 2, "trials": 9, "name": name, "sampler": "tpe",
                                  "seed": 5, "confirm": {"enabled": False}, **overrides})


def _stored(cfg):
    def attrs(t):
        kept = {k: v for k, v in t.user_attrs.items() if k not in OWN}
        for score in (kept.get("scores") or {}).values():
            score.pop("seconds", None)  # timing
        return kept

    return [(t.number, t.state.name, t.params, t.values, attrs(t), t.system_attrs)
            for t in open_study(cfg, create=False).trials]


def _run_held(cfg):
    held = alone.claim_study(cfg.storage_url(), cfg.name, alone=False)  # a worker holds it: the loop on the file
    try:
        return run_study(cfg, progress=False)
    finally:
        held.release()


def test_a_study_run_alone_stores_what_the_loop_on_the_file_stores(tiny_folder, workdir, monkeypatch):
    calls = []
    original = alone.in_memory
    monkeypatch.setattr("rys_search.search.study.in_memory", lambda study: calls.append(1) or original(study))
    alone_cfg = _config(tiny_folder, "alone")
    run_study(alone_cfg, progress=False)
    assert calls == [1]  # the loop ran on the copy
    on_file = _config(tiny_folder, "on-file")
    _run_held(on_file)
    assert calls == [1]
    copied, direct = _stored(alone_cfg), _stored(on_file)
    assert [t[1] for t in direct].count("COMPLETE") >= 2 and len(direct) == 9
    assert copied == direct
    assert copied[0][4].get("unmodified")  # the enqueued trial was stored onto its waiting row, not beside it


def test_a_resumed_study_run_alone_goes_on_as_on_the_file(tiny_folder, workdir):
    for name, run in (("resumed", lambda cfg: run_study(cfg, progress=False)), ("resumed-on-file", _run_held)):
        run(_config(tiny_folder, name, trials=4))
        assert run(_config(tiny_folder, name))["finished_trials"] == 9
    copied = _stored(_config(tiny_folder, "resumed"))
    assert [t[0] for t in copied] == list(range(9))
    assert copied == _stored(_config(tiny_folder, "resumed-on-file"))


def test_a_study_held_alone_by_another_process_is_refused_in_one_line(tiny_folder, workdir, monkeypatch):
    cfg = _config(tiny_folder, "held", trials=2)
    run_study(cfg, progress=False)
    before = _stored(cfg)
    other = alone.claim_study(cfg.storage_url(), cfg.name, alone=True)
    assert other.exclusive
    monkeypatch.setattr(alone, "LOCK_WAIT", 0.5)
    try:
        with pytest.raises(UserError, match=r"study 'held' is being run by another process \(pid \d+\)") as caught:
            run_study(_config(tiny_folder, "held", trials=4), progress=False)
        assert "\n" not in str(caught.value)
    finally:
        other.release()
    assert _stored(cfg) == before
    assert run_study(_config(tiny_folder, "held", trials=4), progress=False)["finished_trials"] == 4


def test_the_writer_holds_the_study_until_its_trials_are_stored(workdir):
    url = f"sqlite:///{workdir}/s.db"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize"])
    study.enqueue_trial({}, user_attrs={"unmodified": True})
    claim = alone.claim_study(url, "s", alone=True)
    copy = alone.in_memory(study)
    runs = TrialRuns(None, store=(url, "s", alone.waiting_trials(study)), lock_fd=claim.fd)
    claim.release()  # the study's process lets go; its writer still holds the lock
    with pytest.raises(UserError, match="being run by another process"):
        alone.claim_study(url, "s", alone=True, wait=0.3)
    for value in (1.0, 2.0, 3.0):
        trial = copy.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        copy.tell(trial, value)
        runs.close(copy.trials[-1], "s", "parent")
    runs.finish()
    assert runs.stored_seconds > 0
    stored = optuna.load_study(study_name="s", storage=url).trials
    assert [(t.number, t.state.name, t.values) for t in stored] == [(0, "COMPLETE", [1.0]), (1, "COMPLETE", [2.0]),
                                                                     (2, "COMPLETE", [3.0])]
    assert stored[0].user_attrs == {"unmodified": True} and stored[1].params == copy.trials[1].params
    assert alone.claim_study(url, "s", alone=True, wait=0).exclusive  # free once the writer is done


def test_the_writer_opens_the_runs_of_a_study_run_alone_and_stores_their_ids(workdir):
    from rys_search.tracking import Tracker

    url, uri = f"sqlite:///{workdir}/s.db", f"sqlite:///{workdir}/mlflow.db"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize"])
    tracker = Tracker(uri)
    parent = tracker.study_run("s", {})
    copy = alone.in_memory(study)
    runs = TrialRuns(uri, store=(url, "s", {}))
    assert runs.opens and not TrialRuns(uri).opens  # workers sharing a study open their runs in the loop
    for value in (1.0, 2.0):
        trial = copy.ask()
        runs.open(trial.number, "s", parent, schedule=f"0-{trial.number}")
        deadline = time.monotonic() + 60
        while not [r for r in tracker.trial_runs("s") if r.data.tags["rys.trial"] == str(trial.number)]:
            assert time.monotonic() < deadline, "the run was not opened while its trial ran"
            time.sleep(0.05)
        copy.tell(trial, value)
        runs.close(copy.trials[-1], "s", parent)
    runs.finish()
    written = {int(r.data.tags["rys.trial"]): r for r in tracker.trial_runs("s")}
    stored = optuna.load_study(study_name="s", storage=url).trials
    assert sorted(written) == [0, 1]  # one run a trial: the one opened is the one closed
    assert [t.user_attrs["mlflow_run"] for t in stored] == [written[0].info.run_id, written[1].info.run_id]
    assert all(r.info.status == "FINISHED" and r.data.tags["rys.state"] == "COMPLETE" for r in written.values())
    assert "mlflow_run" not in copy.trials[0].user_attrs  # the loop's copy never waited for it


def test_a_trial_stored_under_another_number_stops_the_study(workdir):
    url = f"sqlite:///{workdir}/s.db"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize"])
    copy = alone.in_memory(study)
    study.tell(study.ask(), 9.0)  # another process wrote trial 0 after the copy was made
    runs = TrialRuns(None, store=(url, "s", {}))
    trial = copy.ask()
    copy.tell(trial, 1.0)
    runs.close(copy.trials[0], "s", "parent")
    with pytest.raises(UserError, match=r"cannot store trial 0 in the study's storage: RuntimeError: it was stored as "
                                        r"trial 1: another process is writing to the study"):
        runs.finish()


def test_lock_files_are_per_study_and_only_for_sqlite_files():
    assert alone.lock_path("sqlite:////data/studies/a.db", "my study") == alone.Path("/data/studies/.a.db.my_study.lock")
    assert alone.lock_path("sqlite:///:memory:", "x") is None
    assert alone.lock_path("postgresql://u@h/db", "x") is None
