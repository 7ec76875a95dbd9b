"""A study as users meet it in MLflow and optuna-dashboard: names, tags, saved views, report."""

import json
import math

import pytest

from rys_search.cli import main
from rys_search.search.config import load_config
from rys_search.search.storage import open_study
from rys_search.tracking import Tracker
from rys_search.views import VIEW_TAG_PREFIX, metric_name


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")


def test_a_study_opens_named_and_tagged_in_mlflow(tiny_folder, workdir, capsys):
    assert main(["run", "--model", tiny_folder, "--limit", "3", "--trials", "5", "--study", "named", "--seed", "2",
                 "--no-confirm"]) == 0
    capsys.readouterr()
    cfg = load_config(overrides={"name": "named", "model": tiny_folder})
    study = open_study(cfg, create=False)
    assert study.metric_names == study.user_attrs["objectives"] == ["math@1", "eq@1", "reasoning@1"]  # dashboard axis titles
    score, change = (metric_name(g, study.user_attrs["objectives"][0]) for g in ("1_score", "2_change"))

    tracker = Tracker(cfg.tracking_location())
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    views = {k: json.loads(v) for k, v in experiment.tags.items() if k.startswith(VIEW_TAG_PREFIX)}
    assert set(views) == {VIEW_TAG_PREFIX + "rys-named-pareto", VIEW_TAG_PREFIX + "rys-named-trials"}

    parent = tracker.client.get_run(study.user_attrs["mlflow_parent_run"])
    assert parent.info.run_name == "study named" and parent.info.status == "FINISHED"  # closed by the writer process
    artifacts = {a.path for a in tracker.client.list_artifacts(parent.info.run_id)}
    assert "layers.png" in artifacts and "ij_heatmap.png" not in artifacts  # a multi-block study
    from pathlib import Path

    table = Path(tracker.client.download_artifacts(parent.info.run_id, "pareto.md", str(workdir))).read_text()
    assert table.startswith("| trial | schedule | +layers |") and "e-" not in table

    members = {t.number for t in study.best_trials}
    by_trial = {int(r.data.tags["rys.trial"]): r for r in tracker.trial_runs("named")}
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished():
            continue
        run = by_trial[t.number]
        assert run.info.run_name.startswith(f"#{t.number} ") and t.user_attrs["schedule"] in run.info.run_name
        assert run.data.tags.get("rys.pareto") == ("true" if t.number in members else None)
        assert run.data.tags.get("rys.reason", "x") != ""  # no empty tags
        assert all(math.isfinite(v) for v in run.data.metrics.values())
        if t.state.name == "COMPLETE":
            assert score in run.data.metrics and change in run.data.metrics
        if t.number == 0:  # the unmodified model: no block figures at all
            assert not any("contraction" in k or "seam" in k for k in run.data.metrics)

    # a run whose tag went stale is brought back by `rys-search pareto`
    some = next(iter(members))
    tracker.client.set_tag(by_trial[some].info.run_id, "rys.pareto", "false")
    assert main(["pareto", "--study", "named", "--no-confirm"]) == 0
    assert tracker.client.get_run(by_trial[some].info.run_id).data.tags["rys.pareto"] == "true"
    other = next((n for n in by_trial if n not in members), None)
    if other is not None:  # a former member loses the tag's "true"
        tracker.client.set_tag(by_trial[other].info.run_id, "rys.pareto", "true")
        assert main(["pareto", "--study", "named", "--no-confirm"]) == 0
        assert tracker.client.get_run(by_trial[other].info.run_id).data.tags["rys.pareto"] == "false"

    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is not None:  # the [ui] extra
        from optuna_dashboard import get_note

        from rys_search.search.publish import dashboard_notes

        assert dashboard_notes(study) == sum(t.state.is_finished() for t in study.trials)
        assert dashboard_notes(study) == 0  # written once
        first = next(t for t in study.trials if t.number in members)
        note = get_note(type("T", (), {"storage": study._storage, "study": study, "_trial_id": first._trial_id})())
        assert note.startswith(f"**#{first.number}** `{first.user_attrs['schedule']}`") and "Pareto member" in note

    out = workdir / "named.html"
    assert main(["report", "--study", "named", "--out", str(out)]) == 0
    page = out.read_text()
    assert "Pareto front" in page and page.count("data:image/png;base64,") >= 3 and "Calibration" not in page
    assert "layers.png" not in page and "Per layer" in page


def test_the_study_end_reads_the_trial_runs_once_unless_the_reconcile_changed_them(tiny_folder, workdir, capsys,
                                                                                     monkeypatch):
    from rys_search.search.publish import settle_runs

    reads = []
    own = Tracker.trial_runs
    monkeypatch.setattr(Tracker, "trial_runs", lambda self, study: reads.append(study) or own(self, study))
    assert main(["run", "--model", tiny_folder, "--limit", "3", "--trials", "5", "--study", "ends", "--seed", "3",
                 "--no-confirm"]) == 0
    capsys.readouterr()
    assert reads == ["ends"]  # a new study has nothing to reconcile at its start; one read at its end for both
    cfg = load_config(overrides={"name": "ends", "model": tiny_folder})
    study = open_study(cfg, create=False)
    tracker, parent = Tracker(cfg.tracking_location()), study.user_attrs["mlflow_parent_run"]
    member = next(t for t in study.best_trials if t.number)

    reads.clear()
    assert settle_runs(tracker, study, parent) == {"closed": 0, "created": 0, "deleted": 0} and len(reads) == 1

    gone = next(r for r in own(tracker, "ends") if r.data.tags["rys.trial"] == str(member.number))
    tracker.client.delete_run(gone.info.run_id)  # a member's run lost: the reconcile makes it again
    reads.clear()
    assert settle_runs(tracker, study, parent)["created"] == 1 and len(reads) == 2  # the front reads the new run
    again = [r for r in own(tracker, "ends") if r.data.tags["rys.trial"] == str(member.number)]
    assert len(again) == 1 and again[0].info.run_id != gone.info.run_id
    assert again[0].data.tags["rys.pareto"] == "true"


def test_ui_refuses_bad_input(tiny_folder, workdir, capsys):
    assert main(["ui", "--study", "nothing-here"]) == 2
    assert "no study named" in capsys.readouterr().err
    assert main(["ui", "--study", "x", "--compare", "best"]) == 2
    assert "--compare takes" in capsys.readouterr().err
