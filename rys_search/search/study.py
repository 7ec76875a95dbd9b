"""A study: Optuna proposes schedules, objectives score them, MLflow records every trial.

    >>> summary = run_study(config)            # config from load_config(...); resumes if stored
    >>> rows = pareto_rows(open_study(config, create=False))

Each trial: suggest a schedule (define-by-run), refuse a duplicate, run the fixed-point screen
(a schedule that fails it is pruned with its reason, without paying for the probes), score the
probes, and record scores, intervals and paired changes against the unmodified model as trial
attributes; a callback then logs the finished trial to MLflow and updates the progress line.
`trials` counts finished trials (complete or pruned) in all, so running the same command again
resumes and stops at the same total.

Several workers (processes, machines) may run the same study on one storage: the first to
arrive creates it, with its MLflow parent run and the unmodified trial; the others join it.
parallel.py holds the rules that keep them apart (exactly `trials` finished trials, one
evaluation per schedule).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UserError
from ..schedule import LayerSchedule
from .config import ConfigError, StudyConfig, config_from_dict
from .parallel import Surplus, admitted, has_room, is_server_storage, original_of, owner_may_still_close, pid_alive

__all__ = ["StudyRunner", "open_study", "pareto_rows", "run_study", "storage_for"]

log = logging.getLogger(__name__)
MAX_CONSECUTIVE_FAILURES = 3
OOM_RETRIES = 2
HEARTBEAT, GRACE = 5, 10  # seconds: a trial whose worker is silent this long is failed
CREATION_WAIT = 30  # seconds a joining worker waits for the creator to finish setting up a study
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _out_of_memory(exc: Exception) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def storage_for(url: str):
    """An Optuna storage for url; RDB storages get a heartbeat so a killed worker's trials fail over.

    Workers starting together on a new database may race to create its tables: a creation
    that collides with another is retried. An unreachable database is a UserError at once.
    """
    import random
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        shown = url
        if url.startswith(("postgresql://", "postgres://")):  # the driver we install, whatever SQLAlchemy's default
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        engine: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite:"):  # several local workers may share one file: wait for its lock
            engine = {"connect_args": {"timeout": 60}}
        elif url.startswith("postgresql"):
            engine["connect_args"] = {"connect_timeout": 10}
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT,
                                                  grace_period=GRACE)
            except (IntegrityError, ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.2 + random.random())  # another worker is creating the same tables
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"cannot open storage {shown}: {first}") from None
    return url


def make_sampler(config: StudyConfig, grid: list[str] | None = None, seed: int | None | str = "config"):
    """The config's sampler; seed "config" means config.seed, None fresh randomness."""
    import optuna

    import warnings

    seed, name = (config.seed if seed == "config" else seed), config.sampler
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        from .space import GRID_PARAM

        return optuna.samplers.GridSampler({GRID_PARAM: grid}, seed=seed)
    raise ConfigError(f"unknown sampler {name!r}")


def open_study(config: StudyConfig, create: bool = True, grid: list[str] | None = None,
               on_create: Callable[[Any], None] | None = None, seed: int | None | str = "config"):
    """The stored study of this name, or a new one; a stored one must measure the same things.

    When several workers start at once, one create_study wins; it runs on_create(study) (the
    MLflow parent run, the unmodified trial) and stores the config last. The others wait for
    that config, so they never work on a half-made study.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_for(config.storage_url())
    sampler = make_sampler(config, grid, seed) if create else None
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)} if create else None
    try:
        if create and config.name not in names:
            try:
                study = optuna.create_study(study_name=config.name, storage=storage, sampler=sampler,
                                            directions=config.directions())
            except optuna.exceptions.DuplicatedStudyError:
                study = None  # another worker created it a moment ago: join it below
            if study is not None:
                study.set_user_attr("objectives", config.objective_names())
                study.set_metric_names(config.objective_names())  # optuna-dashboard's axis titles
                if on_create is not None:
                    on_create(study)
                study.set_user_attr("config", config.to_dict())
                return study
        study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    except KeyError:
        raise UserError(f"no study named {config.name!r} in {config.storage_url()}") from None
    if create:
        deadline = time.monotonic() + CREATION_WAIT
        while "config" not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)  # its creator is still setting it up
            study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    stored = study.user_attrs.get("config")
    if create and stored:
        differences = [k for k in StudyConfig.SEARCH_DEFINING if stored.get(k) != config.to_dict().get(k)]
        if differences:
            raise ConfigError(
                f"study {config.name!r} was created with other settings for {', '.join(differences)}; "
                "run it with those, or start a new study with --study NAME"
            )
    return study


def stored_config(study) -> StudyConfig:
    data = study.user_attrs.get("config")
    if not data:
        raise UserError(f"study {study.study_name!r} has no stored rys-search config")
    return config_from_dict(data, where=f"study {study.study_name!r}")


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


@dataclass
class Timings:
    load: float = 0.0
    evaluation: float = 0.0  # objectives, inside trials
    tracking: float = 0.0  # MLflow, all of it
    trial_tracking: float = 0.0  # MLflow, inside the optimisation loop
    optimize: float = 0.0  # the whole loop

    def sampler(self) -> float:
        """Loop time that is neither evaluation nor tracking: Optuna's sampler and storage."""
        return max(0.0, self.optimize - self.evaluation - self.trial_tracking)


@dataclass
class StudyRunner:
    config: StudyConfig
    loaded: Any
    study: Any
    tracker: Any = None
    parent_run: str | None = None
    progress: Any = None
    timings: Timings = field(default_factory=Timings)

    def __post_init__(self) -> None:
        from ..scoring import get_objective

        self.n_layers = self.loaded.n_layers
        self.period = self.loaded.family.repeat_period
        self.limit = self.config.item_limit()
        self.probes = {n: get_objective(n, mode=self.config.mode, suites=list(self.config.suites)) for n in self.config.objectives}
        self.fixed_point = get_objective("fixed_point")
        self.baseline: dict[str, Any] = {}
        self.items: dict[int, dict[str, Any]] = {}
        self.consecutive_failures = 0
        self.stopped_reason: str | None = None
        self.trials_run = 0  # trials this worker took, surplus ones included
        self.surplus = 0
        self.grid = None
        if self.config.sampler == "grid":
            from .space import grid_pairs

            self.grid = grid_pairs(self.n_layers, self.config.space, self.period)

    # ---- one trial ---------------------------------------------------------------------

    def suggest(self, trial) -> LayerSchedule:
        from .space import suggest_grid, suggest_schedule

        if self.grid is not None:
            return suggest_grid(trial, self.n_layers, self.grid)
        return suggest_schedule(trial, self.n_layers, self.config.space, self.period)

    def _baseline(self, name: str):
        if name not in self.baseline:
            objective = self.probes[name]
            self.baseline[name] = objective.evaluate(
                self.loaded, LayerSchedule.identity(self.n_layers), split=self.config.split, limit=self.limit
            )
        return self.baseline[name]

    def __call__(self, trial) -> list[float]:
        import optuna

        trial.set_user_attr("worker", WORKER)  # first: a dead worker's trial can be told from a live one
        self.trials_run += 1
        schedule = self.suggest(trial)
        key = str(schedule)
        blocks = schedule.blocks(self.n_layers) or ()
        trial.set_user_attr("schedule", key)  # published before the checks below read the others'
        trial.set_user_attr("blocks", ",".join(str(b) for b in blocks) or "none")
        trial.set_user_attr("added_layers", schedule.added_layers(self.n_layers))
        if not admitted(self.study, trial, self.config.trials):
            reason = f"surplus: the study had {self.config.trials} trials finished or running when it started"
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("fail_reason", reason)
            raise Surplus(reason)
        if self.tracker is not None:  # the trial's run is open while it runs: a crash leaves it RUNNING
            t0 = time.perf_counter()
            run = self.tracker.open_trial_run(self.parent_run, self.config.name, trial.number, {
                "schedule": key, "blocks": trial.user_attrs["blocks"], "added_layers": schedule.added_layers(self.n_layers),
                "sampler": self.config.sampler, **{f"optuna.{k}": v for k, v in trial.params.items()}})
            trial.set_user_attr("mlflow_run", run)
            self.timings.tracking += time.perf_counter() - t0
            self.timings.trial_tracking += time.perf_counter() - t0
        first = original_of(self.study, trial, key, fail_dead=_fail_dead)
        if first != trial.number:  # scored (or being scored) by a lower trial: never twice
            trial.set_user_attr("duplicate_of", first)
            trial.set_user_attr("pruned_reason", f"duplicate of trial {first}")
            raise optuna.TrialPruned(f"duplicate of trial {first}")
        start = time.perf_counter()
        items: dict[str, Any] = {}
        trial.set_user_attr("tokens", 0)
        try:
            for attempt in range(OOM_RETRIES + 1):
                try:
                    return self._evaluate(trial, schedule, items)
                except Exception as exc:
                    if not _out_of_memory(exc) or attempt == OOM_RETRIES:
                        raise
                    self._shrink_batches(exc)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            trial.set_user_attr("fail_reason", reason[:500])
            raise
        finally:
            seconds = time.perf_counter() - start
            self.timings.evaluation += seconds
            trial.set_user_attr("seconds", seconds)
            self.items[trial.number] = items

    def _shrink_batches(self, exc: Exception) -> None:
        """After an out-of-memory error: free the cache and halve the tokens per batch."""
        import torch

        from ..scoring.engine import default_token_budget

        budget = self.loaded.token_budget or default_token_budget(self.loaded.device)
        self.loaded.token_budget = max(256, budget // 2)
        if getattr(self.loaded.runtime, "prefix_cache", None) is not None:  # the new batches have new keys
            self.loaded.runtime.prefix_cache.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory (%s); retrying the trial with %d tokens per batch", exc, self.loaded.token_budget)

    def _evaluate(self, trial, schedule: LayerSchedule, items: dict[str, Any]) -> list[float]:
        import math

        import optuna

        from ..scoring import evaluate_probes, paired_change

        tokens = 0
        fp = None
        if self.config.screen.enabled or "fixed_point" in self.config.extra_objectives:
            fp = self.fixed_point.evaluate(self.loaded, schedule)
            tokens += fp.tokens
            items["fixed_point"] = fp.items
            trial.set_user_attr("fixed_point", {"score": fp.score, "interval": list(fp.interval), **fp.metrics})
            reason = self._screen(fp)
            if reason:
                trial.set_user_attr("pruned_reason", reason)
                trial.set_user_attr("tokens", tokens)
                raise optuna.TrialPruned(reason)
        values = []
        scores = {}
        # the probes share one engine pass: fuller batches, fewer forward calls
        together = evaluate_probes(list(self.probes.values()), self.loaded, schedule, split=self.config.split,
                                   limit=self.limit)
        for name, result in zip(self.probes, together):
            if not math.isfinite(result.score):
                raise FloatingPointError(f"the {name} score is {result.score} (non-finite model output?)")
            if schedule.is_identity(self.n_layers):
                self.baseline.setdefault(name, result)
            change, lo, hi = paired_change(result, self._baseline(name))
            tokens += result.tokens
            items[name] = result.items
            scores[name] = {"score": result.score, "interval": list(result.interval), "noise": result.noise,
                            "change": change, "change_interval": [lo, hi], "seconds": result.seconds}
            values.append(result.score)
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("tokens", tokens)
        if "fixed_point" in self.config.extra_objectives:
            values.append(fp.score)
        if "added_layers" in self.config.extra_objectives:
            values.append(float(schedule.added_layers(self.n_layers)))
        return values

    def _screen(self, fp) -> str | None:
        screen = self.config.screen
        if fp.metrics.get("kl", 0.0) > screen.max_kl:
            return f"fixed-point screen: next-token KL {fp.metrics['kl']:.3f} > {screen.max_kl}"
        for key, value in fp.metrics.items():
            if key.endswith("_contraction") and value > screen.max_contraction:
                return f"fixed-point screen: {key.split('_')[0]} contraction {value:.2f} > {screen.max_contraction}"
        return None

    # ---- after each trial ---------------------------------------------------------------

    def on_finished(self, study, trial) -> None:
        from optuna.trial import TrialState

        if trial.user_attrs.get("surplus"):
            self.surplus += 1  # not a failure of the model: the study was full
        elif trial.state == TrialState.FAIL:
            self.consecutive_failures += 1
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                self.stopped_reason = (f"{self.consecutive_failures} trials failed in a row; the last: "
                                       f"{trial.user_attrs.get('fail_reason', 'unknown error')}")
                study.stop()
        else:
            self.consecutive_failures = 0
        start = time.perf_counter()
        if self.tracker is not None:
            self.tracker.close_trial_run(trial, self.config.name, self.parent_run, items=self.items.pop(trial.number, None))
        self.timings.tracking += time.perf_counter() - start
        self.timings.trial_tracking += time.perf_counter() - start
        if self.progress is not None:
            self.progress.update(study, trial, self)


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


def load_study_model(config: StudyConfig):
    """The study's model on its device and dtype ("auto": the loader's choice)."""
    from ..loading import load_model

    device = None if config.device == "auto" else config.device
    dtype = None if config.dtype == "auto" else config.dtype
    return load_model(config.model, device=device, dtype=dtype)


def run_study(config: StudyConfig, loaded: Any = None, progress: bool = True, out: Any = None,
              worker_index: int | None = None) -> dict[str, Any]:
    """Run (or resume, or join) the study until it has config.trials finished trials; return a summary.

    worker_index: this process's place among the workers `rys-search run --workers` started
    (None: a process of its own). It only offsets the sampler's seed; on a server storage every
    worker draws fresh randomness, since workers on other machines may hold the same index.
    """
    from ..tracking import Tracker, ui_command
    from .progress import Progress

    started = time.perf_counter()
    timings = Timings()
    if loaded is None:
        t0 = time.perf_counter()
        loaded = load_study_model(config)
        timings.load = time.perf_counter() - t0
    config = config.resolve(loaded.device.type == "cuda")
    from .space import grid_pairs

    grid = grid_pairs(loaded.n_layers, config.space, loaded.family.repeat_period) if config.sampler == "grid" else None
    t0 = time.perf_counter()
    tracker = Tracker(config.tracking_location())

    def on_create(study) -> None:  # only in the worker that created the study
        study.set_user_attr("mlflow_parent_run", tracker.study_run(config.name, config.to_dict()))
        study.set_user_attr("tracking_uri", config.tracking_location())
        _enqueue_unmodified(study, grid)

    seed: int | None = None if is_server_storage(config.storage_url()) else config.seed + (worker_index or 0)
    study = open_study(config, grid=grid, on_create=on_create, seed=seed)
    parent = tracker.study_run(config.name, config.to_dict(), study.user_attrs.get("mlflow_parent_run"))
    if parent != study.user_attrs.get("mlflow_parent_run"):
        study.set_user_attr("mlflow_parent_run", parent)
        study.set_user_attr("tracking_uri", config.tracking_location())
    _fail_dead(study)
    tracker.reconcile(study, config.name, parent, skip=_owner_may_still_close)  # what a killed run left
    timings.tracking += time.perf_counter() - t0
    _enqueue_unmodified(study, grid)
    runner = StudyRunner(config, loaded, study, tracker, parent, timings=timings)
    done = finished_count(study)
    if progress:
        prefix = f"[worker {worker_index}] " if worker_index is not None else ""
        runner.progress = Progress(config, done, out=out, prefix=prefix)
    status = "already complete"
    _quiet_surplus()
    t0 = time.perf_counter()
    while has_room(study, config.trials, fail_dead=_fail_dead):  # exactly config.trials in all workers
        status = "complete"
        study.optimize(runner, n_trials=1, callbacks=[runner.on_finished], catch=(Exception,), gc_after_trial=False)
        if runner.stopped_reason:
            status = "stopped"
            break
    timings.optimize = time.perf_counter() - t0
    if runner.progress is not None:
        runner.progress.close()
    t0 = time.perf_counter()
    _fail_dead(study, wait=True)
    tracker.reconcile(study, config.name, parent, skip=_owner_may_still_close)
    rows = pareto_rows(study)
    if not study.get_trials(deepcopy=False, states=_running()):  # the last worker out closes the parent
        from .plots import study_figures

        from .publish import name_objectives, publish_front

        figures = study_figures(study, config, loaded.n_layers)
        tracker.close_study(parent, rows, figures, {"finished_trials": finished_count(study), "pareto_size": len(rows)},
                            objectives=config.objective_names())
        name_objectives(study)  # a study made before objectives were named
        publish_front(tracker, study)
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)
    timings.tracking += time.perf_counter() - t0
    return {
        "study": config.name,
        "status": status,
        "stopped_reason": runner.stopped_reason,
        "finished_trials": finished_count(study),
        "trials_target": config.trials,
        "worker": WORKER,
        "worker_trials": runner.trials_run,
        "surplus_trials": runner.surplus,
        "pareto": rows,
        "storage": config.storage_url(),
        "tracking_uri": config.tracking_location(),
        "mlflow_ui": ui_command(config.tracking_location()),
        "seconds": {"load": timings.load, "evaluation": timings.evaluation, "sampler": timings.sampler(),
                    "tracking": timings.tracking, "total": time.perf_counter() - started},
        "config": config.to_dict(),
    }


class _NoSurplusTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Surplus(" not in record.getMessage()


def _quiet_surplus() -> None:
    """A surplus trial is bookkeeping, not an error: keep Optuna from printing its traceback."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _NoSurplusTracebacks) for f in logger.filters):
        logger.addFilter(_NoSurplusTracebacks())


def _running() -> tuple:
    from optuna.trial import TrialState

    return (TrialState.RUNNING,)


def _owner_may_still_close(trial) -> bool:
    return owner_may_still_close(trial, WORKER)


def _enqueue_unmodified(study, grid: list[str] | None) -> None:
    """The unmodified model runs first; again if a killed run lost it before it finished."""
    from .space import GRID_PARAM, UNMODIFIED

    def is_unmodified(t) -> bool:
        return bool(t.user_attrs.get(UNMODIFIED)) or t.user_attrs.get("added_layers") == 0

    if any(is_unmodified(t) and t.state.name in ("COMPLETE", "RUNNING", "WAITING") for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial({GRID_PARAM: "none"} if grid is not None else {}, user_attrs={UNMODIFIED: True})


def _fail_dead(study, wait: bool = False) -> None:
    """Fail the trials a killed process left RUNNING.

    On this host a trial's worker process is checked directly; a trial that never got as far
    as naming its worker (killed within milliseconds of starting) is dead once it is GRACE
    old; elsewhere the storage's heartbeat decides (Optuna also checks it before each trial).
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    _fail_stale(study)
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    unnamed = [t for t in running if "worker" not in t.user_attrs and t.datetime_start is not None]
    if wait and unnamed:  # let a nameless orphan grow GRACE old rather than leave it RUNNING
        youngest = min((datetime.now() - t.datetime_start).total_seconds() for t in unnamed)
        if youngest < GRACE:
            time.sleep(GRACE - youngest + 0.5)
            # read again: another live worker's trial is nameless only for its first milliseconds
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    now = datetime.now()
    for trial in running:
        worker = trial.user_attrs.get("worker")
        if worker:
            where, _, pid = worker.rpartition(":")
            dead = where == host and pid.isdigit() and not pid_alive(int(pid))
        else:
            dead = trial.datetime_start is not None and (now - trial.datetime_start).total_seconds() > GRACE
        if dead:
            try:
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass


def _fail_stale(study) -> None:
    """Mark as failed the trials of workers whose heartbeat stopped (a killed process)."""
    import optuna

    try:
        optuna.storages.fail_stale_trials(study)  # a no-op for storages without a heartbeat
    except Exception as exc:
        log.debug("fail_stale_trials: %s", exc)


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """Every study in storage, or in each studies/*.db when no storage is named."""
    import optuna
    from pathlib import Path

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    urls = [storage] if storage else [f"sqlite:///{p.resolve()}" for p in sorted(Path("studies").glob("*.db"))]
    rows = []
    for url in urls:
        for summary in optuna.get_all_study_summaries(storage_for(url), include_best_trial=False):
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
    uri = study.user_attrs.get("tracking_uri")
    return {
        "study": study.study_name, "storage": config.storage_url(), "model": stored.model, "sampler": stored.sampler,
        "objectives": names, "finished": finished_count(study), "target": stored.trials, "states": dict(states),
        "best": best, "pareto_size": len(rows), "real_gains": sum(not r["within_noise"] for r in rows),
        "mlflow_parent_run": study.user_attrs.get("mlflow_parent_run"), "mlflow_ui": ui_command(uri) if uri else None,
    }
