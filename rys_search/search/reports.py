"""What a study holds, read back: its Pareto set, a status summary, the list of studies.

    >>> rows = pareto_rows(open_study(config, create=False))
    >>> study_status(config)["finished"]
    >>> list_studies()                                  # every studies/*.db

Reading never changes a study (confirmations after the fact and benchmark checks are stored
by `rys-search pareto`, validation.py, not here).
"""

from __future__ import annotations

from typing import Any

from .config import StudyConfig
from .storage import finished_count, open_study, storage_for, stored_config

__all__ = ["list_studies", "pareto_rows", "study_status", "tracking_uri_of", "trial_facts", "verdict_counts"]


def pareto_rows(study) -> list[dict[str, Any]]:
    """The study's Pareto set, cheap and confirmed values side by side, each member with its verdict.

    The front is computed on confirmed values where they exist (confirm.py confirmed_front); members
    of the cheap front that were never confirmed are listed too, marked "unconfirmed". A member's
    cheap values are the search's (logprob probes, search split); its confirmed values are the
    confirmation stage's; benchmark checks from `pareto --bench` are added by validation.py.
    """
    from .confirm import confirmed_front, confirmed_of

    config = stored_config(study)
    attrs = study.user_attrs
    names = config.objective_names()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    confirmed = {t.number for t in confirmed_front(study, complete, config, attrs)} if config.confirm.enabled else set()
    cheap = {t.number for t in study.best_trials} if complete else set()
    members = [t for t in complete if t.number in confirmed or (t.number in cheap and not confirmed_of(study, t, attrs))]
    rows = []
    for trial in sorted(members, key=lambda t: t.number):
        scores = trial.user_attrs.get("scores", {})
        row: dict[str, Any] = {"trial": trial.number, "schedule": trial.user_attrs.get("schedule", ""),
                               "added_layers": trial.user_attrs.get("added_layers", 0)}
        for name, value in zip(names, trial.values):
            row[name] = value
            s = scores.get(name)
            if s:
                row[f"{name}_interval"] = s["interval"]
                row[f"{name}_change"] = s["change"]
                row[f"{name}_change_interval"] = s["change_interval"]
        facts = trial_facts(study, trial, attrs)
        row["verdict"] = facts["verdict"]
        row["front"] = "confirmed" if trial.number in confirmed else "cheap"
        for key in ("confirmed", "bench"):
            if facts[key]:
                row[key] = facts[key]
        if facts["holds"] is not None:
            row["holds"] = facts["holds"]
        rows.append(row)
    return rows


def trial_facts(study: Any, trial: Any, attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the study knows of one finished trial beyond its cheap scores: confirmed values, verdict,
    benchmark checks and whether they hold."""
    from .confirm import confirmed_of, verdict
    from .validation import bench_entries, holds

    attrs = study.user_attrs if attrs is None else attrs
    confirmed = confirmed_of(study, trial, attrs)
    schedule = trial.user_attrs.get("schedule", "")
    unmodified = bool(trial.user_attrs.get("unmodified")) or trial.user_attrs.get("added_layers") == 0
    bench = bench_entries(attrs, schedule)
    return {"confirmed": confirmed, "verdict": verdict(confirmed, unmodified), "bench": bench,
            "holds": None if unmodified else holds(bench)}


def verdict_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(r["verdict"] for r in rows))


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
        "best": best, "pareto_size": len(rows), "verdicts": verdict_counts(rows),
        "gains": [{"trial": r["trial"], "schedule": r["schedule"]} for r in rows if r["verdict"] == "gain"],
        "mlflow_parent_run": study.user_attrs.get("mlflow_parent_run"), "mlflow_ui": ui_command(uri) if uri else None,
    }
