"""What a study holds, read back: its Pareto set, a status summary, the list of studies.

    >>> rows = pareto_rows(open_study(config, create=False))
    >>> study_status(config)["finished"]
    >>> list_studies()                                  # every studies/*.db

Reading never changes a study (held-out scores are cached by heldout.py, not here).
"""

from __future__ import annotations

from typing import Any

from .config import StudyConfig
from .storage import finished_count, open_study, storage_for, stored_config

__all__ = ["list_studies", "pareto_rows", "study_status", "tracking_uri_of"]


def pareto_rows(study) -> list[dict[str, Any]]:
    """The Pareto set across the study's objectives: schedule, scores, intervals, changes, noise."""
    names = study.user_attrs.get("objectives") or [f"objective{k}" for k in range(len(study.directions))]
    heldout = study.user_attrs.get("heldout") or {}
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        scores = trial.user_attrs.get("scores", {})
        row: dict[str, Any] = {"trial": trial.number, "schedule": trial.user_attrs.get("schedule", ""),
                               "added_layers": trial.user_attrs.get("added_layers", 0)}
        real_gain = False
        for name, value in zip(names, trial.values):
            row[name] = value
            s = scores.get(name)
            if s:
                row[f"{name}_interval"] = s["interval"]
                row[f"{name}_change"] = s["change"]
                row[f"{name}_change_interval"] = s["change_interval"]
                real_gain |= s["change_interval"][0] > 0
        row["within_noise"] = not real_gain
        if row["schedule"] in heldout:
            row["heldout"] = heldout[row["schedule"]]
        rows.append(row)
    return rows


def tracking_uri_of(study, config: StudyConfig) -> str | None:
    """Where the study's trials are in MLflow: the config's tracking URI if it names one, else the recorded one."""
    return config.tracking_uri or study.user_attrs.get("tracking_uri")


def list_studies(storage: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    """Every study (or the one called name) in storage, or in each studies/*.db when no storage is named."""
    import optuna
    from pathlib import Path

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    urls = [storage] if storage else [f"sqlite:///{p.resolve()}" for p in sorted(Path("studies").glob("*.db"))]
    rows = []
    for url in urls:
        for summary in optuna.get_all_study_summaries(storage_for(url), include_best_trial=False):
            if name is not None and summary.study_name != name:
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=storage_for(url))
            rows.append({"study": summary.study_name, "trials": summary.n_trials, "finished": finished_count(study),
                         "started": summary.datetime_start, "storage": url})
    return rows


def study_status(config: StudyConfig) -> dict[str, Any]:
    from collections import Counter

    from ..tracking import ui_command

    study = open_study(config, create=False)
    stored = stored_config(study)
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    names = study.user_attrs.get("objectives", [])
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    best = {}
    for k, (name, direction) in enumerate(zip(names, study.directions)):
        if complete:
            pick = (max if direction.name == "MAXIMIZE" else min)(complete, key=lambda t: t.values[k])
            best[name] = {"value": pick.values[k], "trial": pick.number, "schedule": pick.user_attrs.get("schedule")}
    rows = pareto_rows(study) if complete else []
    uri = tracking_uri_of(study, config)
    return {
        "study": study.study_name, "storage": config.storage_url(), "model": stored.model, "sampler": stored.sampler,
        "objectives": names, "finished": finished_count(study), "target": stored.trials, "states": dict(states),
        "best": best, "pareto_size": len(rows), "real_gains": sum(not r["within_noise"] for r in rows),
        "mlflow_parent_run": study.user_attrs.get("mlflow_parent_run"), "mlflow_ui": ui_command(uri) if uri else None,
    }
