"""What a user sees of a study in the MLflow UI: run names, metric names, saved views, URLs.

    >>> trial_metrics(trial)                       # {"1_score/math": 0.91, "2_change/math": 0.04, ...}
    >>> trial_run_name(3, "0-4,5-9x2,10-11")       # "#3 0-4,5-9x2,10-11"
    >>> tags = saved_views("demo", ["math", "eq", "reasoning"], metric_keys)   # experiment tags
    >>> runs_url("http://127.0.0.1:5000", "1", view_id("demo", "pareto"))

Metric names carry MLflow's own grouping: its chart view makes one section per prefix before
the last "/" and sorts sections and charts by name, and its compare view picks the first
shared metric (in logging order) for the parallel-coordinates plot. So each name starts with
a numbered group, and scores are logged first:

    1_score/OBJ            the objective's score
    2_change/OBJ           paired change against the unmodified model (same items)
    3_interval/OBJ_lo ...  95% bounds of the score and of the change, and the noise
    4_fixed_point/...      fixed-point score, KL, blocks, worst block contraction and seam
    5_cost/...             seconds and tokens per second
    6_confirmed/OBJ ...    the confirmation stage's score and change, where a trial has them

A saved view is an experiment tag `mlflow.sharedViewState.ID` holding MLflow's view-state
envelope (name, createdAt, state); `#/experiments/E/runs?viewStateShareKey=ID` opens it, and the
runs page lists it under "Views". The state is the runs page's own (search filter, sort,
columns, which runs the charts show, chart cards); MLflow 3.17 reads it as written here. The
`workflowType=machine_learning` URL parameter opens the model-training side of the UI whatever
the browser last used (MLflow 3.17 keeps that choice per browser; the experiment's
`mlflow.experimentKind` tag is what older and newer UIs read).

Nothing here imports mlflow: tracking.py writes what these functions return.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import urllib.parse
from typing import Any, Iterable

__all__ = [
    "EXPERIMENT_KIND", "GROUPS", "compare_url", "metric_name", "pareto_markdown", "runs_url", "saved_views",
    "study_run_name", "trial_metrics", "trial_run_name", "view_id",
]

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3: model training, not GenAI
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
GROUPS = ("1_score", "2_change", "3_interval", "4_fixed_point", "5_cost", "6_confirmed")
ML_WORKFLOW = "workflowType=machine_learning"
DECIMALS = 4


def metric_name(group: str, name: str) -> str:
    return f"{group}/{name}"


def trial_run_name(number: int, schedule: str, unmodified: bool = False) -> str:
    """A trial run's name: its number and its schedule, which is what a user looks for."""
    if unmodified:
        return f"#{number} unmodified ({schedule})" if schedule else f"#{number} unmodified"
    return f"#{number} {schedule}" if schedule else f"#{number}"


def study_run_name(study: str) -> str:
    return f"study {study}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def trial_metrics(trial: Any) -> dict[str, float]:
    """A finished trial's MLflow metrics, grouped and ordered for the UI; only finite values.

    trial: anything with a user_attrs dict (an Optuna FrozenTrial).
    """
    attrs = trial.user_attrs
    scores = attrs.get("scores") or {}
    metrics: dict[str, float] = {}
    for name, s in scores.items():
        metrics[metric_name("1_score", name)] = s.get("score")
    for name, s in scores.items():
        metrics[metric_name("2_change", name)] = s.get("change")
    for name, s in scores.items():
        lo, hi = (s.get("interval") or (None, None))[:2]
        clo, chi = (s.get("change_interval") or (None, None))[:2]
        metrics[metric_name("3_interval", f"{name}_lo")] = lo
        metrics[metric_name("3_interval", f"{name}_hi")] = hi
        metrics[metric_name("3_interval", f"{name}_change_lo")] = clo
        metrics[metric_name("3_interval", f"{name}_change_hi")] = chi
        metrics[metric_name("3_interval", f"{name}_noise")] = s.get("noise")
    fixed = attrs.get("fixed_point") or {}
    for key in ("score", "kl", "blocks"):
        metrics[metric_name("4_fixed_point", key)] = fixed.get(key)
    # per-block figures differ in number from trial to trial: the worst block is comparable
    for figure in ("contraction", "seam"):
        values = [v for k, v in fixed.items() if k.startswith("block") and k.endswith(f"_{figure}") and _finite(v)]
        if values:
            metrics[metric_name("4_fixed_point", f"{figure}_max")] = max(values)
    seconds = attrs.get("seconds")
    if _finite(seconds):
        metrics[metric_name("5_cost", "seconds")] = seconds
        if seconds > 0 and _finite(attrs.get("tokens")):
            metrics[metric_name("5_cost", "tokens_per_second")] = attrs["tokens"] / seconds
    confirmed = attrs.get("confirmed") if isinstance(attrs.get("confirmed"), dict) else {}
    for name, c in confirmed.items():  # the confirmation stage's values, once it has run
        if isinstance(c, dict):
            metrics[metric_name("6_confirmed", name)] = c.get("score")
            metrics[metric_name("6_confirmed", f"{name}_change")] = c.get("change")
            lo, hi = (c.get("change_interval") or (None, None))[:2]
            metrics[metric_name("6_confirmed", f"{name}_change_lo")] = lo
            metrics[metric_name("6_confirmed", f"{name}_change_hi")] = hi
            metrics[metric_name("6_confirmed", f"{name}_parse_rate")] = c.get("parse_rate")
    metrics[metric_name("5_cost", "confirm_seconds")] = attrs.get("confirm_seconds")
    # four decimals: the UI prints a metric's every digit, and the exact values stay in Optuna's storage
    return {k: round(float(v), DECIMALS) for k, v in metrics.items() if _finite(v)}


# ---- saved views -------------------------------------------------------------------------

def view_id(study: str, kind: str) -> str:
    """A view's id (URL- and tag-safe) for a study: rys-NAME-KIND, hashed if NAME has odd characters."""
    slug = study if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", study) else hashlib.sha256(study.encode()).hexdigest()[:12]
    return f"rys-{slug}-{kind}"


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _key(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"  # MLflow's canonical column key


def _card(kind: str, section: str, number: int, **fields: Any) -> dict[str, Any]:
    return {"uuid": f"rys-{section}-{number}", "type": kind, "metricSectionId": section, "deleted": False,
            "isGenerated": True, "runsCountToCompare": 500, **fields}


def _view_state(objectives: list[str], metric_keys: list[str], search: str, extra_columns: list[str]) -> dict[str, Any]:
    scores = [metric_name("1_score", o) for o in objectives]
    changes = [metric_name("2_change", o) for o in objectives]
    sections = [{"uuid": "rys-front", "name": "Pareto front: scores against each other", "display": True,
                 "isReordered": True, "deleted": False, "isGenerated": True}]
    # a card is small: added layers and the scores only (changes have their own bars)
    charts: list[dict[str, Any]] = [_card("PARALLEL", "rys-front", 0, selectedParams=["added_layers"],
                                          selectedMetrics=scores, showAllRuns=True)]
    pairs = [(a, b) for i, a in enumerate(scores) for b in scores[i + 1:]]
    for n, (a, b) in enumerate(pairs, start=1):
        charts.append(_card("SCATTER", "rys-front", n, xaxis={"key": a, "type": "METRIC"},
                            yaxis={"key": b, "type": "METRIC"}))
    known = set(metric_keys)
    for group in GROUPS:
        keys = [k for k in metric_keys if k.startswith(group + "/")]
        if group == "1_score":
            keys = [k for k in scores if k in known] + [k for k in keys if k not in scores]
        elif group == "2_change":
            keys = [k for k in changes if k in known] + [k for k in keys if k not in changes]
        if not keys:
            continue
        section = f"rys-{group}"
        sections.append({"uuid": section, "name": group, "display": group in ("1_score", "2_change"),
                         "isReordered": True, "deleted": False, "isGenerated": True})
        charts += [_card("BAR", section, n, metricKey=k) for n, k in enumerate(keys)]
    for name in ("Model metrics", "System metrics"):  # MLflow's own, kept last and closed
        sections.append({"uuid": f"rys-{name.split()[0].lower()}", "name": name, "display": False,
                         "isReordered": False, "deleted": False, "isGenerated": True})
    columns = [_key("params", "schedule"), _key("params", "added_layers")]
    columns += [_key("metrics", k) for k in scores + changes if k in known]
    columns += [_key("metrics", metric_name("4_fixed_point", "kl"))] if metric_name("4_fixed_point", "kl") in known else []
    columns += [_key("tags", t) for t in extra_columns]
    return {
        "searchFilter": search,
        "orderByKey": _key("metrics", scores[0]) if scores else "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default charts only the first 10 runs
        "compareRunCharts": charts,
        "compareRunSections": sections,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
    }


def saved_views(study: str, objectives: list[str], metric_keys: Iterable[str],
                extra_columns: list[str] = ()) -> dict[str, str]:
    """Experiment tags for the study's two saved views: its Pareto members, and all its trials.

    extra_columns: run tags shown as columns too (e.g. rys.verdict, where trials have one).
    """
    keys = list(dict.fromkeys(metric_keys))
    where = f"tags.`rys.study` = '{_quote(study)}' and tags.`rys.kind` = 'trial'"
    views = {
        "pareto": (f"{study}: Pareto front", where + " and tags.`rys.pareto` = 'true'"),
        "trials": (f"{study}: all trials", where),
    }
    now = int(time.time() * 1000)
    tags = {}
    for kind, (name, search) in views.items():
        state = json.dumps(_view_state(objectives, keys, search, list(extra_columns)), separators=(",", ":"))
        envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": state}
        tags[VIEW_TAG_PREFIX + view_id(study, kind)] = json.dumps(envelope, separators=(",", ":"))
    return tags


# ---- URLs --------------------------------------------------------------------------------

def runs_url(base: str, experiment_id: str, view: str | None = None, charts: bool = False) -> str:
    """The experiment's runs page (model-training side), opened on a saved view when named."""
    query = [ML_WORKFLOW]
    if view:
        query.append(f"viewStateShareKey={urllib.parse.quote(view)}")
    if charts:
        query.append("compareRunsMode=CHART")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?" + "&".join(query)


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare page for these runs (parameters, metrics, parallel coordinates, scatter)."""
    runs = urllib.parse.quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = urllib.parse.quote(json.dumps([experiment_id]))
    return f"{base.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}&{ML_WORKFLOW}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{ML_WORKFLOW}"


# ---- the Pareto table as text ------------------------------------------------------------

def _num(value: Any, signed: bool = False) -> str:
    if not _finite(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def pareto_markdown(rows: list[dict[str, Any]], objectives: list[str] | None = None) -> str:
    """The Pareto table for pareto.md: one row per member, two decimals, intervals in brackets."""
    if not rows:
        return "(empty Pareto front)\n"
    if objectives is None:
        objectives = [k for k in rows[0] if f"{k}_change" in rows[0]]
    head = ["trial", "schedule", "+layers"] + [f"{o} cheap (change [95%])" for o in objectives] + ["verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", ":---", "---:"] + ["---"] * len(objectives) + [":---"]) + "|"]
    for row in rows:
        cells = [str(row.get("trial", "")), f"`{row.get('schedule', '')}`", str(row.get("added_layers", ""))]
        for o in objectives:
            value = row.get(o)
            change, (lo, hi) = row.get(f"{o}_change"), (row.get(f"{o}_change_interval") or (None, None))[:2]
            cells.append(f"{_num(value)} ({_num(change, True)} [{_num(lo, True)}, {_num(hi, True)}])"
                         if change is not None else _num(value))
        note = row.get("verdict") or ("within noise" if row.get("within_noise") else "")
        if row.get("confirmed"):  # the confirmation stage beside the cheap changes
            note += "; confirmed: " + ", ".join(
                f"{n} {_num(c.get('change'), True)}" for n, c in row["confirmed"].items() if "change_interval" in c)
        if "holds" in row:
            note += "; holds on the benchmarks" if row["holds"] else "; does not hold on the benchmarks"
        cells.append(note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
