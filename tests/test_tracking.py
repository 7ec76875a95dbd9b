"""MLflow tracking: a study keeps one parent run through a tracking store's brief failure."""

import pytest

from rys_search import tracking
from rys_search.errors import UserError
from rys_search.tracking import Tracker


def parent_runs(tracker):
    return tracker.client.search_runs([tracker.experiment_id], filter_string="tags.`rys.kind` = 'study'")


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "READ_WAIT", 0.0, raising=False)
    return Tracker(f"sqlite:///{tmp_path}/mlflow.db")


def flaky(tracker, monkeypatch, failures: int):
    real, calls = tracker.client.get_run, {"n": 0}

    def get_run(run_id):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionResetError("connection reset by peer")
        return real(run_id)

    monkeypatch.setattr(tracker.client, "get_run", get_run)
    return calls


def test_a_brief_failure_reading_the_parent_keeps_the_parent(tracker, monkeypatch):
    parent = tracker.study_run("s", {"a": 1})
    calls = flaky(tracker, monkeypatch, failures=2)
    assert tracker.study_run("s", {"a": 1}, existing=parent) == parent
    assert calls["n"] == 3 and len(parent_runs(tracker)) == 1  # no second parent run


def test_a_parent_that_stays_unreadable_stops_the_run_with_one_line(tracker, monkeypatch):
    parent = tracker.study_run("s", {"a": 1})
    flaky(tracker, monkeypatch, failures=10**6)
    with pytest.raises(UserError, match=f"cannot read the study's MLflow parent run {parent} .*connection reset"):
        tracker.study_run("s", {"a": 1}, existing=parent)
    assert len(parent_runs(tracker)) == 1


def test_a_parent_the_store_does_not_have_is_replaced(tracker):
    new = tracker.study_run("s", {"a": 1}, existing="0123456789abcdef0123456789abcdef")
    assert new != "0123456789abcdef0123456789abcdef" and len(parent_runs(tracker)) == 1
