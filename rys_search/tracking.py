"""MLflow tracking: one parent run per study, one nested run per trial. The only module importing mlflow.

    >>> tracker = Tracker(config.tracking_location())
    >>> parent = tracker.study_run("default", resolved_config, existing=None)
    >>> tracker.trial_run(parent, trial_number=3, state="COMPLETE", params=..., metrics=..., tags=..., items=...)
    >>> tracker.close_study(parent, pareto_table, figures)

With the default SQLite backend (mlruns/mlflow.db) the artifacts are kept in mlruns/artifacts.
With a tracking server (`--tracking-uri http://HOST:PORT`, started as `mlflow server` on a SQL
backend) several workers log to one experiment; the server keeps the artifacts.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

__all__ = ["EXPERIMENT", "Tracker", "trial_metrics", "trial_params", "ui_command"]

EXPERIMENT = "rys-search"
log = logging.getLogger(__name__)


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        root = db.parent / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve().as_uri()
    return None  # a tracking server decides where artifacts go


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (the MLflow tracking server)"
    return f"mlflow ui --backend-store-uri {uri}"


def _check_server(uri: str) -> None:
    """A one-line error for a tracking server that does not answer (MLflow itself retries for minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as reply:
            reply.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach the MLflow tracking server {uri}: {reason}") from None


class Tracker:
    def __init__(self, uri: str):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a server would print each run's link
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from a search loop
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # mlflow sets its own level on import: quiet it after
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        if uri.startswith(("http://", "https://")):
            _check_server(uri)
        self.client = MlflowClient(tracking_uri=uri)
        if uri.startswith("sqlite:"):  # WAL, commits without an fsync each (see fastsqlite.py)
            from .fastsqlite import fast_commits

            fast_commits(getattr(getattr(getattr(self.client, "_tracking_client", None), "store", None), "engine", None))
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            try:
                self.client.create_experiment(EXPERIMENT, artifact_location=_artifact_root(uri))
            except Exception:  # another worker created it a moment ago
                pass
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise UserError(f"cannot create the MLflow experiment {EXPERIMENT!r} at {uri}")
        self.experiment_id = experiment.experiment_id

    # ---- study ------------------------------------------------------------------------

    def study_run(self, study: str, config: dict[str, Any], existing: str | None = None) -> str:
        """The study's parent run: the stored one when resuming, else a new one."""
        if existing:
            try:
                run = self.client.get_run(existing)
                if run.info.status != "RUNNING":
                    self.client.update_run(existing, status="RUNNING")
                return existing
            except Exception:
                log.warning("parent run %s of study %s is gone; starting a new one", existing, study)
        run = self.client.create_run(self.experiment_id, run_name=study, tags={"rys.study": study, "rys.kind": "study"})
        run_id = run.info.run_id
        flat = _flatten(config)
        self._batch(run_id, params={k: v for k, v in flat.items()})
        self.client.log_dict(run_id, config, "config.json")
        return run_id

    def close_study(self, run_id: str, pareto: list[dict[str, Any]], figures: dict[str, Any], metrics: dict[str, float]) -> None:
        self.client.log_dict(run_id, {"pareto": pareto}, "pareto.json")
        self.client.log_text(run_id, _markdown_table(pareto), "pareto.md")
        for name, figure in figures.items():
            self.client.log_figure(run_id, figure, name)
        self._batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status="FINISHED")

    # ---- trials -----------------------------------------------------------------------

    def open_trial_run(self, parent: str, study: str, trial_number: int, params: dict[str, Any] | None = None) -> str:
        """A RUNNING run for a trial that starts now; close_trial_run finishes it (and logs its params)."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{study} trial {trial_number}",
            tags={"mlflow.parentRunId": parent, "rys.study": study, "rys.trial": str(trial_number),
                  "rys.state": "RUNNING", "rys.kind": "trial"},
        )
        if params:
            self._batch(run.info.run_id, params=params)
        return run.info.run_id

    def close_trial_run(self, trial: Any, study: str, parent: str, items: dict[str, Any] | None = None,
                        params: dict[str, Any] | None = None) -> str:
        """Log a finished trial's params, metrics and tags in one batch, its items, and end its run in the trial's state.

        params: default trial_params(trial).
        """
        run_id = trial.user_attrs.get("mlflow_run")
        if run_id is None:  # a trial that never opened a run (pruned or failed before): open one now
            run_id = self.open_trial_run(parent, study, trial.number)
        state = trial.state.name
        reason = trial.user_attrs.get("pruned_reason") or trial.user_attrs.get("fail_reason") or ""
        self._batch(run_id, params=params if params is not None else trial_params(trial), metrics=trial_metrics(trial),
                    tags={"rys.state": state, "rys.reason": reason[:5000]})
        if items:  # compact JSON, by the C encoder (log_dict indents, through the pure-Python one)
            import json

            self.client.log_text(run_id, json.dumps(items, default=str), "items.json")
        self.client.set_terminated(run_id, status="FAILED" if state == "FAIL" else "FINISHED")
        return run_id

    def reconcile(self, study: Any, name: str, parent: str, skip: Callable[[Any], bool] | None = None) -> dict[str, int]:
        """Make MLflow agree with Optuna after a crash: one run per finished trial, in its state.

        A run left RUNNING for a trial that has since finished (failed, by its stopped heartbeat)
        is closed in that state; a finished trial without a run gets one; a second run for the
        same trial is deleted. Runs of trials still running (another worker's) are left alone, and
        so are finished trials for which skip(trial) says their own live worker is logging them.
        """
        runs: dict[int, list[Any]] = {}
        for run in self.trial_runs(name):
            runs.setdefault(int(run.data.tags.get("rys.trial", -1)), []).append(run)
        fixed = {"closed": 0, "created": 0, "deleted": 0}
        for trial in study.get_trials(deepcopy=False):
            if not trial.state.is_finished() or (skip is not None and skip(trial)):
                continue
            want = "FAILED" if trial.state.name == "FAIL" else "FINISHED"
            mine = runs.get(trial.number, [])
            keep = next((r for r in mine if r.info.run_id == trial.user_attrs.get("mlflow_run")), None) or (mine[0] if mine else None)
            if keep is None or keep.info.status != want or keep.data.tags.get("rys.state") != trial.state.name:
                if keep is None:
                    fixed["created"] += 1
                else:
                    fixed["closed"] += 1
                    trial = _with_run(trial, keep.info.run_id)
                self.close_trial_run(trial, name, parent)
            for run in mine:
                if keep is not None and run.info.run_id != keep.info.run_id:
                    self.client.delete_run(run.info.run_id)
                    fixed["deleted"] += 1
        if any(fixed.values()):
            log.warning("MLflow brought in line with the study after an interruption: %s", fixed)
        return fixed

    def trial_runs(self, study: str) -> list[Any]:
        """Every trial run of a study (any status)."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`rys.study` = '{study}' and tags.`rys.kind` = 'trial'",
                max_results=1000, page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def log_export(self, run_id: str, result: dict[str, Any]) -> None:
        """Record an export of the trial's schedule in the trial's run: a tag per format and the details."""
        name = Path(result["path"]).name
        self.client.set_tag(run_id, f"rys.export.{result['format']}", result["path"])
        self.client.log_dict(run_id, result, f"exports/{name}.json")

    def _batch(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
               tags: dict[str, str] | None = None) -> None:
        """One request per 100 entries (a tracking server is a round trip per call)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None and math.isfinite(float(v))]
        ts = [RunTag(k, v) for k, v in (tags or {}).items()]
        for at in range(0, max(len(ps), len(ms), len(ts)), 100):  # the store takes at most 100 params per call
            self.client.log_batch(run_id, metrics=ms[at : at + 100], params=ps[at : at + 100], tags=ts[at : at + 100])


def trial_params(trial) -> dict[str, Any]:
    """A trial's MLflow params: its schedule, blocks, added layers and the sampler's parameters."""
    attrs = trial.user_attrs
    return {"schedule": attrs.get("schedule", ""), "blocks": attrs.get("blocks", ""),
            "added_layers": attrs.get("added_layers", ""), **{f"optuna.{k}": v for k, v in trial.params.items()}}


def trial_metrics(trial) -> dict[str, float]:
    attrs = trial.user_attrs
    metrics: dict[str, float] = {"seconds": attrs.get("seconds", 0.0)}
    if attrs.get("seconds"):
        metrics["tokens_per_second"] = attrs.get("tokens", 0) / attrs["seconds"]
    for name, s in attrs.get("scores", {}).items():
        metrics[name] = s["score"]
        metrics[f"{name}_lo"], metrics[f"{name}_hi"] = s["interval"]
        metrics[f"{name}_noise"] = s["noise"]
        metrics[f"{name}_change"] = s["change"]
        metrics[f"{name}_change_lo"], metrics[f"{name}_change_hi"] = s["change_interval"]
    for key, value in attrs.get("fixed_point", {}).items():
        if isinstance(value, (int, float)):
            metrics[f"fixed_point_{key}"] = float(value)
    return metrics


def _with_run(trial: Any, run_id: str) -> Any:
    """The frozen trial with its user attrs naming run_id (finished trials cannot be updated)."""
    import copy

    clone = copy.copy(trial)
    clone._user_attrs = {**trial.user_attrs, "mlflow_run": run_id}
    return clone


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(empty Pareto front)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"
