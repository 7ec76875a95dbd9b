"""Keep what the MLflow UI shows of a study current: Pareto tags on trial runs, saved views.

    >>> publish_front(tracker, study)        # after the study closes, and after `rys-search pareto`

Each trial run of the study carries `rys.pareto` = "true" or "false"; the experiment carries the
study's saved views (runs table of the Pareto members, and of all trials). Optuna's own view of
the study gets the objective names (`study.set_metric_names`), so optuna-dashboard labels its
axes with them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["name_objectives", "publish_front", "study_facts"]


def name_objectives(study: Any) -> None:
    """Give the study's objectives their names (once; optuna-dashboard shows them)."""
    names = study.user_attrs.get("objectives")
    if names and len(names) == len(study.directions) and study.metric_names != list(names):
        study.set_metric_names(list(names))


def publish_front(tracker: Any, study: Any) -> dict[str, Any]:
    """Tag the Pareto members' runs and save the study's views; return the members' numbers."""
    name = study.study_name
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    members = {t.number for t in study.best_trials} if complete else set()
    changed = tracker.mark_pareto(name, members)
    objectives = list(study.user_attrs.get("objectives") or [])
    extra = ["rys.verdict"] if any(t.user_attrs.get("verdict") for t in complete) else []
    tracker.save_views(name, objectives, extra_columns=extra)
    return {"members": sorted(members), "changed": changed}


def study_facts(study: Any) -> dict[str, Any]:
    """What the UIs need to point at a study: ids, tracking URI, Pareto members, trial runs."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    return {
        "study": study.study_name,
        "study_id": study._study_id,  # optuna-dashboard's URLs use the storage's id
        "tracking_uri": study.user_attrs.get("tracking_uri"),
        "parent_run": study.user_attrs.get("mlflow_parent_run"),
        "objectives": list(study.user_attrs.get("objectives") or []),
        "pareto": sorted(t.number for t in study.best_trials) if complete else [],
        "runs": {t.number: t.user_attrs["mlflow_run"] for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("mlflow_run")},
        "complete": sorted(t.number for t in complete),
    }
