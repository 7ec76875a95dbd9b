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


def racing(tracker, monkeypatch, tag_first: bool):
    """set_tag refused as a server refuses the second of two workers' inserts; tag_first: the other
    worker's tag is in the store (the race), or not (a real failure)."""
    from mlflow.exceptions import MlflowException

    real = tracker.client.set_tag

    def set_tag(run_id, key, value):
        if tag_first:
            real(run_id, key, value)
        raise MlflowException('duplicate key value violates unique constraint "tag_pk"')

    monkeypatch.setattr(tracker.client, "set_tag", set_tag)


def test_two_workers_tagging_the_same_pareto_member_at_once_is_not_an_error(tracker, monkeypatch):
    parent = tracker.study_run("s", {"a": 1})
    runs = [tracker.open_trial_run(parent, "s", n, schedule=f"0-{n},x") for n in range(3)]
    racing(tracker, monkeypatch, tag_first=True)
    assert tracker.mark_pareto("s", {0, 2}) == 2
    tags = {r: tracker.client.get_run(r).data.tags.get("rys.pareto") for r in runs}
    assert tags == {runs[0]: "true", runs[1]: None, runs[2]: "true"}


def test_two_workers_saving_the_study_views_at_once_is_not_an_error(tracker, monkeypatch):
    """Both last workers publish the views; a server refuses the second insert of the same experiment
    tag (PostgreSQL's unique key), and the refused write goes through as an update. A store that
    refuses again is an error."""
    from mlflow.exceptions import MlflowException

    parent = tracker.study_run("s", {"a": 1})
    tracker.open_trial_run(parent, "s", 0, schedule="0-1,x")
    real = tracker.client.set_experiment_tag
    refused = []

    def set_experiment_tag(experiment_id, key, value):
        if key not in refused:  # the other worker's insert lands first, and ours is refused
            refused.append(key)
            real(experiment_id, key, "the other worker's")
            raise MlflowException('duplicate key value violates unique constraint "experiment_tag_pk"')
        real(experiment_id, key, value)

    monkeypatch.setattr(tracker.client, "set_experiment_tag", set_experiment_tag)
    tags = tracker.save_views("s", ["math@1"])
    stored = tracker.client.get_experiment(tracker.experiment_id).tags
    assert refused and all(stored[k] == v for k, v in tags.items())

    def never(experiment_id, key, value):
        raise MlflowException("the store is read-only")

    monkeypatch.setattr(tracker.client, "set_experiment_tag", never)
    with pytest.raises(MlflowException):
        tracker.save_views("s", ["math@1"])


def test_a_pareto_tag_the_store_refuses_for_another_reason_is_an_error(tracker, monkeypatch):
    from mlflow.exceptions import MlflowException

    parent = tracker.study_run("s", {"a": 1})
    tracker.open_trial_run(parent, "s", 0, schedule="0-1,x")
    racing(tracker, monkeypatch, tag_first=False)
    with pytest.raises(MlflowException):
        tracker.mark_pareto("s", {0})
