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

from .errors import UserError, first_line
from .views import EXPERIMENT_KIND, pareto_markdown, saved_views, study_run_name, trial_metrics, trial_run_name

__all__ = ["EXPERIMENT", "Tracker", "trial_metrics", "trial_params", "ui_command"]

EXPERIMENT = "rys-search"
READ_TRIES, READ_WAIT = 4, 1.0  # reading the parent run: tries, and the first wait between them (doubling)
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
        from mlflow.exceptions import MlflowException

        if uri.startswith("sqlite:"):  # WAL, commits without an fsync each (see fastsqlite.py)
            from .fastsqlite import fast_commits

            fast_commits(getattr(getattr(getattr(self.client, "_tracking_client", None), "store", None), "engine", None))
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            try:
                self.client.create_experiment(EXPERIMENT, artifact_location=_artifact_root(uri), tags=EXPERIMENT_KIND)
            except MlflowException as exc:  # another worker created it a moment ago (checked below)
                log.debug("create_experiment: %s", exc)
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise UserError(f"cannot create the MLflow experiment {EXPERIMENT!r} at {uri}")
        self.experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_KIND.items():  # an experiment made before: open it on its runs too
            if experiment.tags.get(key) != value:
                self.client.set_experiment_tag(self.experiment_id, key, value)

    # ---- study ------------------------------------------------------------------------

    def study_run(self, study: str, config: dict[str, Any], existing: str | None = None) -> str:
        """The study's parent run: the stored one when resuming, else a new one.

        Only a parent run that the tracking store says does not exist is replaced; one that
        cannot be read (a server that does not answer for a moment) is tried again, and then
        the run stops with a UserError, so a blip never splits a study over two parent runs.
        """
        if existing:
            run = self._read_run(existing)
            if run is not None:
                if run.info.status != "RUNNING":
                    self.client.update_run(existing, status="RUNNING")
                return existing
            log.warning("parent run %s of study %s is gone; starting a new one", existing, study)
        run = self.client.create_run(self.experiment_id, run_name=study_run_name(study),
                                     tags={"rys.study": study, "rys.kind": "study"})
        run_id = run.info.run_id
        flat = _flatten(config)
        self._batch(run_id, params={k: v for k, v in flat.items()})
        self.client.log_dict(run_id, config, "config.json")
        return run_id

    def _read_run(self, run_id: str) -> Any:
        """The run, or None when the store says it does not exist; READ_TRIES tries, then a UserError."""
        from mlflow.exceptions import MlflowException

        for attempt in range(READ_TRIES):
            try:
                return self.client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                error: Exception = exc
            except OSError as exc:  # the connection itself (requests' errors are OSErrors)
                error = exc
            if attempt < READ_TRIES - 1:
                time.sleep(READ_WAIT * 2**attempt)
        reason = first_line(error)
        raise UserError(f"cannot read the study's MLflow parent run {run_id} at {self.uri} "
                        f"({READ_TRIES} tries): {reason}")

    def close_study(self, run_id: str, pareto: list[dict[str, Any]], figures: dict[str, Any], metrics: dict[str, float],
                    objectives: list[str] | None = None) -> None:
        self.client.log_dict(run_id, {"pareto": pareto}, "pareto.json")
        self.client.log_text(run_id, pareto_markdown(pareto, objectives), "pareto.md")
        for name, figure in figures.items():
            self.client.log_figure(run_id, figure, name)
        self._batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status="FINISHED")

    # ---- trials -----------------------------------------------------------------------

    def open_trial_run(self, parent: str, study: str, trial_number: int, params: dict[str, Any] | None = None,
                       schedule: str = "", unmodified: bool = False) -> str:
        """A RUNNING run for a trial that starts now, named by its number and schedule; close_trial_run
        finishes it (and logs its params, unless given here)."""
        params = params or {}
        schedule = schedule or str(params.get("schedule", ""))
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_run_name(trial_number, schedule, unmodified or params.get("added_layers") == 0),
            tags={"mlflow.parentRunId": parent, "rys.study": study, "rys.trial": str(trial_number),
                  "rys.state": "RUNNING", "rys.kind": "trial"},
        )
        if params:
            self._batch(run.info.run_id, params=params)
        return run.info.run_id

    def _open_for(self, trial: Any, study: str, parent: str) -> str:
        """A new run for a finished trial (one that never opened a run, pruned or failed before, or whose run is
        gone)."""
        return self.open_trial_run(parent, study, trial.number, schedule=trial.user_attrs.get("schedule", ""),
                                   unmodified=trial.user_attrs.get("added_layers") == 0)

    def close_trial_run(self, trial: Any, study: str, parent: str, items: dict[str, Any] | None = None,
                        run_id: str | None = None, params: dict[str, Any] | None = None) -> str:
        """Log a finished trial's params, metrics and tags in one batch, its items, and end its run (default: the
        trial's) in the trial's state.

        params: default trial_params(trial).
        """
        run_id = run_id or trial.user_attrs.get("mlflow_run") or self._open_for(trial, study, parent)  # none opened
        state = trial.state.name
        tags = {"rys.state": state}
        reason = trial.user_attrs.get("pruned_reason") or trial.user_attrs.get("fail_reason")
        if reason:  # no empty tags: a complete trial has no reason
            tags["rys.reason"] = str(reason)[:5000]
        if trial.user_attrs.get("verdict"):
            tags["rys.verdict"] = str(trial.user_attrs["verdict"])
        self._batch(run_id, params=params if params is not None else trial_params(trial), metrics=trial_metrics(trial),
                    tags=tags)
        if items:  # compact JSON, by the C encoder (log_dict indents, through the pure-Python one)
            import json

            self.client.log_text(run_id, json.dumps(items, default=str), "items.json")
        self.client.set_terminated(run_id, status="FAILED" if state == "FAIL" else "FINISHED")
        return run_id

    def reconcile(self, study: Any, name: str, parent: str, skip: Callable[[Any], bool] | None = None,
                  runs: list[Any] | None = None) -> dict[str, int]:
        """Make MLflow agree with Optuna after a crash: one run per finished trial, in its state.

        A run left RUNNING for a trial that has since finished (failed, by its stopped heartbeat)
        is closed in that state; a finished trial without a run gets one; a second run for the
        same trial is deleted. Runs of trials still running (another worker's) are left alone, and
        so are finished trials for which skip(trial) says their own live worker is logging them.
        runs: the study's trial runs as trial_runs(name) just read them (default: read here, unless no
        trial is there to check, as in a new study). Returns how many runs were closed, created and deleted.
        """
        fixed = {"closed": 0, "created": 0, "deleted": 0}
        trials = [t for t in study.get_trials(deepcopy=False)
                  if t.state.is_finished() and not (skip is not None and skip(t))]
        if not trials:
            return fixed
        by_trial: dict[int, list[Any]] = {}
        for run in self.trial_runs(name) if runs is None else runs:
            by_trial.setdefault(int(run.data.tags.get("rys.trial", -1)), []).append(run)
        for trial in trials:
            want = "FAILED" if trial.state.name == "FAIL" else "FINISHED"
            mine = by_trial.get(trial.number, [])
            keep = next((r for r in mine if r.info.run_id == trial.user_attrs.get("mlflow_run")), None) or (mine[0] if mine else None)
            if keep is None or keep.info.status != want or keep.data.tags.get("rys.state") != trial.state.name:
                fixed["created" if keep is None else "closed"] += 1
                # none left: a new run (the one stored with the trial may have been deleted in MLflow)
                run_id = keep.info.run_id if keep is not None else self._open_for(trial, name, parent)
                self.close_trial_run(trial, name, parent, run_id=run_id)
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

    def mark_pareto(self, study: str, members: set[int], runs: list[Any] | None = None) -> int:
        """Tag the members' runs rys.pareto = true, and false where a run that was a member is one no more.

        Only what changed is written (a call per run on a tracking server); returns how many.
        runs: the study's trial runs as trial_runs(study) just read them (default: read here).
        """
        from mlflow.exceptions import MlflowException

        changed = 0
        for run in self.trial_runs(study) if runs is None else runs:
            now = run.data.tags.get("rys.pareto")
            want = "true" if int(run.data.tags.get("rys.trial", -1)) in members else ("false" if now else None)
            if want is not None and now != want:
                try:
                    self.client.set_tag(run.info.run_id, "rys.pareto", want)
                except MlflowException:  # two workers tag the same run at once: a server may refuse the second
                    if self.client.get_run(run.info.run_id).data.tags.get("rys.pareto") != want:
                        raise
                changed += 1
        return changed

    def save_views(self, study: str, objectives: list[str], extra_columns: list[str] = (),
                   runs: list[Any] | None = None) -> dict[str, str]:
        """The study's saved views of the runs page (Pareto members, all trials) as experiment tags.

        runs: the study's trial runs, as for mark_pareto (their metric names are the views' columns)."""
        keys: list[str] = []
        for run in self.trial_runs(study) if runs is None else runs:
            keys += [k for k in run.data.metrics if k not in keys]
        from mlflow.exceptions import MlflowException

        tags = saved_views(study, objectives, sorted(keys), extra_columns=list(extra_columns))
        for key, value in tags.items():
            try:
                self.client.set_experiment_tag(self.experiment_id, key, value)
            except MlflowException:  # two workers ending at once: a server may refuse the second insert of
                self.client.set_experiment_tag(self.experiment_id, key, value)  # the key; now it is an update
        return tags

    def log_export(self, run_id: str, result: dict[str, Any]) -> None:
        """Record an export of the trial's schedule in the trial's run: a tag per format and the details."""
        name = Path(result["path"]).name
        self.client.set_tag(run_id, f"rys.export.{result['format']}", result["path"])
        self.client.log_dict(run_id, result, f"exports/{name}.json")

    def log_calibration(self, name: str, state: dict[str, Any], figures: dict[str, Any]) -> str:
        """A finished run for a calibration: its settings, one metric per objective x benchmark
        (Spearman and sign agreement), the state file and the scatter plots."""
        run = self.client.create_run(self.experiment_id, run_name=f"calibration {name}",
                                     tags={"rys.kind": "calibration", "rys.model": str(state.get("model")),
                                           "rys.calibration": name})
        run_id = run.info.run_id
        metrics: dict[str, float] = {}
        for row in state.get("table") or []:
            pair = f"{mlflow_key(row['objective'])}/{mlflow_key(row['benchmark'])}"
            if row.get("spearman") is not None:
                metrics[f"spearman/{pair}"] = row["spearman"]
            if row.get("sign_agreement") is not None:
                metrics[f"sign_agreement/{pair}"] = row["sign_agreement"]
        for key, seconds in (state.get("seconds_per_schedule") or {}).items():
            metrics[f"seconds/{mlflow_key(key)}"] = seconds
        params = {"model": state.get("model"), "schedules": len(state.get("schedules", {})),
                  "limit": state["settings"].get("limit"), "bench_limit": state["settings"].get("bench_limit"),
                  "benchmarks": ",".join(state["settings"].get("benchmarks", {}))}
        self._batch(run_id, params=params, metrics=metrics)
        self.client.log_dict(run_id, state, "calibration.json")
        for filename, figure in figures.items():
            self.client.log_figure(run_id, figure, filename)
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def _batch(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
               tags: dict[str, str] | None = None) -> None:
        """Params, metrics and tags in one log_batch (MLflow cuts it into the batches its store takes)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ps = [Param(mlflow_key(k), str(v)[:6000]) for k, v in (params or {}).items()]
        ms = [Metric(mlflow_key(k), float(v), now, 0) for k, v in (metrics or {}).items()
              if v is not None and math.isfinite(float(v))]
        ts = [RunTag(k, v) for k, v in (tags or {}).items()]
        self.client.log_batch(run_id, metrics=ms, params=ps, tags=ts)


def trial_params(trial) -> dict[str, Any]:
    """A trial's MLflow params: its schedule, blocks, added layers and the sampler's parameters."""
    attrs = trial.user_attrs
    return {"schedule": attrs.get("schedule", ""), "blocks": attrs.get("blocks", ""),
            "added_layers": attrs.get("added_layers", ""), **{f"optuna.{k}": v for k, v in trial.params.items()}}


def mlflow_key(key: str) -> str:
    """A name as MLflow takes it in a metric or parameter key: 'math@2:generate' -> 'math_v2:generate'."""
    return key.replace("@", "_v")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
