"""A study as plain data, for the report: config, unmodified scores, Pareto members, checks.

    >>> data = study_summary(study)          # dicts, lists, numbers and strings only
    >>> html = render_report(data, figures)  # rys_search/report.py

Everything later stages add is read defensively, so a study without them reports without them:
a trial's `user_attrs["confirmed"]` (objective -> {"score", "interval", "change",
"change_interval", optional "parse_rate", optional "broken_output"}) and `user_attrs["verdict"]`
("gain", "unconfirmed", "does not hold", ...), held-out scores (`study.user_attrs["heldout"]`),
benchmark validation (`study.user_attrs["bench"]`: schedule -> benchmark -> {"score", "change",
"change_interval", "parse_rate"}) and the calibration table (calibration_rows below).
"""

from __future__ import annotations

from typing import Any

from .space import UNMODIFIED

__all__ = ["calibration_rows", "study_summary"]


def calibration_rows(study: Any) -> list[dict[str, Any]]:
    """How well each objective predicts a real benchmark: rows of objective, benchmark, spearman,
    interval, sign_agreement, n. Read from the study's "calibration" attribute for now: the one
    place to wire the real source.
    """
    rows = study.user_attrs.get("calibration") or []
    keep = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("objective") and row.get("benchmark"):
            keep.append({k: row.get(k) for k in ("objective", "benchmark", "spearman", "interval", "sign_agreement", "n")})
    return keep


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def study_summary(study: Any) -> dict[str, Any]:
    from collections import Counter

    from .reports import pareto_rows
    from .storage import finished_count

    trials = study.get_trials(deepcopy=False)
    config = _dict(study.user_attrs.get("config"))
    objectives = list(study.user_attrs.get("objectives") or [])
    unmodified = next((t for t in trials if t.state.name == "COMPLETE"
                       and (t.user_attrs.get(UNMODIFIED) or t.user_attrs.get("added_layers") == 0)), None)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    rows = pareto_rows(study) if complete else []
    by_number = {t.number: t for t in trials}
    for row in rows:
        trial = by_number[row["trial"]]
        confirmed = _dict(trial.user_attrs.get("confirmed"))
        if confirmed:
            row["confirmed"] = {k: v for k, v in confirmed.items() if isinstance(v, dict)}
        if trial.user_attrs.get("verdict"):
            row["verdict"] = str(trial.user_attrs["verdict"])
        row["scores"] = _dict(trial.user_attrs.get("scores"))
    bench = {s: b for s, b in _dict(study.user_attrs.get("bench")).items() if isinstance(b, dict) and b}
    n_layers = None
    if unmodified is not None and unmodified.user_attrs.get("schedule"):
        from ..schedule import LayerSchedule

        n_layers = len(LayerSchedule.parse(unmodified.user_attrs["schedule"]))
    return {
        "study": study.study_name,
        "config": config,
        "objectives": objectives,
        "directions": [d.name.lower() for d in study.directions],
        "states": dict(Counter(t.state.name for t in trials)),
        "finished": finished_count(study),
        "n_layers": n_layers,
        "unmodified": {"trial": unmodified.number, "schedule": unmodified.user_attrs.get("schedule"),
                       "scores": _dict(unmodified.user_attrs.get("scores")),
                       "fixed_point": _dict(unmodified.user_attrs.get("fixed_point"))} if unmodified else None,
        "heldout_baseline": {k: {"score": v.get("score"), "interval": v.get("interval")}
                             for k, v in _dict(study.user_attrs.get("heldout_baseline")).items() if isinstance(v, dict)},
        "pareto": rows,
        "bench": bench,
        "calibration": calibration_rows(study),
        "tracking_uri": study.user_attrs.get("tracking_uri"),
    }
