"""A study: Optuna proposes schedules, objectives score them, MLflow records every trial.

    >>> summary = run_study(config)            # config from load_config(...); resumes if stored
    >>> rows = pareto_rows(open_study(config, create=False))

The study's path through this package: storage.py opens it (storage, sampler, stored
config), runner.py runs one trial (suggest, screen, score, record), recovery.py sets right
what a killed worker left, reports.py reads the result back (Pareto set, status). This module
ties them into the loop. `trials` counts finished trials (complete or pruned) in all, so
running the same command again resumes and stops at the same total. When the last trial is in,
front members that the paced confirmation budget left unconfirmed are confirmed with what is
left of it (confirm.py Confirmer.confirm_rest).

Several workers (processes, machines) may run the same study on one storage: the first to
arrive creates it, with its MLflow parent run and the unmodified trial; the others join it.
parallel.py holds the rules that keep them apart (exactly `trials` finished trials, one
evaluation per schedule).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .alone import claim_study, in_memory, waiting_trials
from .config import StudyConfig
from .parallel import WORKER, has_room, is_server_storage
from .recovery import enqueue_unmodified, fail_dead, owner_may_still_log
from .reports import pareto_rows
from .runner import StudyRunner, Timings
from .storage import finished_count, open_study

__all__ = ["load_study_model", "run_study"]



def load_study_model(config: StudyConfig):
    """The study's model on its device and dtype ("auto": the loader's choice)."""
    from ..loading import load_model

    device = None if config.device == "auto" else config.device
    dtype = None if config.dtype == "auto" else config.dtype
    return load_model(config.model, device=device, dtype=dtype)


def run_study(config: StudyConfig, loaded: Any = None, progress: bool = True, out: Any = None,
              worker_index: int | None = None, tracker: Any = None) -> dict[str, Any]:
    """Run (or resume, or join) the study until it has config.trials finished trials; return a summary.

    worker_index: this process's place among the workers `rys-search run --workers` started
    (None: a process of its own). It only offsets the sampler's seed; on a server storage every
    worker draws fresh randomness, since workers on other machines may hold the same index.
    tracker: a Tracker of config's tracking location made already (`rys-search run` makes one to
    check the store before the model loads); None: one is made here.
    """
    from ..tracking import Tracker

    started = time.perf_counter()
    timings = Timings()
    if loaded is None:
        t0 = time.perf_counter()
        loaded = load_study_model(config)
        timings.load = time.perf_counter() - t0
    config = config.resolve(loaded.device.type == "cuda").pinned()  # objectives by name@version
    from .space import grid_pairs

    grid = grid_pairs(loaded.n_layers, config.space, loaded.family.repeat_period) if config.sampler == "grid" else None
    t0 = time.perf_counter()
    if tracker is None or tracker.uri != config.tracking_location():
        tracker = Tracker(config.tracking_location())
    alone = not is_server_storage(config.storage_url()) and worker_index is None
    claim = claim_study(config.storage_url(), config.name, alone=alone)  # exclusive: the loop on a copy (alone.py)
    try:
        return _run(config, loaded, claim, tracker, grid, timings, started, progress, out, worker_index, t0)
    finally:
        claim.release()


def _run(config: StudyConfig, loaded: Any, claim: Any, tracker: Any, grid: list[str] | None, timings: Timings,
         started: float, progress: bool, out: Any, worker_index: int | None, t0: float) -> dict[str, Any]:
    from .progress import Progress
    from .trial_runs import TrialRuns

    def on_create(study) -> None:  # only in the worker that created the study
        study.set_user_attr("mlflow_parent_run", tracker.study_run(config.name, config.to_dict()))
        study.set_user_attr("tracking_uri", config.tracking_location())
        enqueue_unmodified(study, grid)

    server = is_server_storage(config.storage_url())
    seed: int | None = None if server else config.seed + (worker_index or 0)
    study = open_study(config, grid=grid, on_create=on_create, seed=seed, shared=not claim.exclusive)
    parent = tracker.study_run(config.name, config.to_dict(), study.user_attrs.get("mlflow_parent_run"))
    if parent != study.user_attrs.get("mlflow_parent_run"):
        study.set_user_attr("mlflow_parent_run", parent)
        study.set_user_attr("tracking_uri", config.tracking_location())
    fail_dead(study)
    tracker.reconcile(study, config.name, parent, skip=owner_may_still_log)  # what a killed run left
    timings.tracking += time.perf_counter() - t0
    enqueue_unmodified(study, grid)
    t0 = time.perf_counter()
    loop_study, store = study, None
    if claim.exclusive:  # alone: the loop on an in-memory copy, each finished trial stored by the writer
        loop_study = in_memory(study)
        store = (config.storage_url(), config.name, waiting_trials(study))
    runs = TrialRuns(tracker.uri, store=store, lock_fd=claim.fd if claim.exclusive else None)
    runner = StudyRunner(config, loaded, loop_study, tracker, parent, timings=timings, runs=runs)
    done = finished_count(loop_study)
    if progress:
        prefix = f"[worker {worker_index}] " if worker_index is not None else ""
        runner.progress = Progress(config, done, out=out, prefix=prefix)
    status = "already complete"
    _quiet_surplus()
    try:
        while has_room(loop_study, config.trials, fail_dead=fail_dead):  # exactly config.trials in all workers
            if grid is not None and loop_study.sampler.left(loop_study, grid) == 0:  # every pair scored or being scored
                status = "grid exhausted"
                break
            status = "complete"
            loop_study.optimize(runner, n_trials=1, callbacks=[runner.on_finished], catch=(Exception,),
                                gc_after_trial=False)
            if runner.stopped_reason:
                status = "stopped"
                break
    except BaseException:  # Ctrl-C: what the loop finished is stored (a failed write only logged) before it goes on
        runner.wait_for_tracking(study if claim.exclusive else None, quiet=True)
        raise
    ended = False
    try:
        summary = _end(config, loaded, study, claim, tracker, runner, parent, grid, status, timings, t0)
        ended = True
    finally:
        runner.finish_tracking(quiet=not ended)  # the writer's last requests (the study's end) written
    summary["seconds"] = {"load": timings.load, "evaluation": timings.evaluation, "sampler": timings.sampler(),
                          "tracking": timings.tracking, "tracking_beside": timings.tracking_beside,
                          "storing_beside": timings.storing_beside, "total": time.perf_counter() - started}
    return summary


def _end(config: StudyConfig, loaded: Any, study: Any, claim: Any, tracker: Any, runner: StudyRunner, parent: str,
         grid: list[str] | None, status: str, timings: Timings, t0: float) -> dict[str, Any]:
    """After the loop: the confirmations the budget held back, the study's end written (the figures and
    the parent run by the writer process; MLflow's trial runs reconciled and the front's tags here, at
    the same time); the summary but its seconds."""
    from ..tracking import ui_command

    runner.wait_for_tracking(study if claim.exclusive else None, finish=False)  # every trial stored and its run written
    timings.optimize = time.perf_counter() - t0
    if runner.progress is not None:
        runner.progress.close()
    if runner.confirmer is not None:
        runner.confirmer.study = study  # the stored study from here on (the confirmations after the loop)
    t0 = time.perf_counter()
    fail_dead(study, wait=True)
    last_out = not study.get_trials(deepcopy=False, states=_running())
    timings.tracking += time.perf_counter() - t0
    confirmed_at_end = 0
    # alone, and no confirmation after the loop: the loop's trials are the stored ones, handed to the writer
    held = runner.study.get_trials(deepcopy=False) if claim.exclusive else None
    if last_out and status == "complete" and runner.confirmer is not None:  # what the paced budget held back
        t0 = time.perf_counter()
        confirmed_at_end = runner.confirmer.confirm_rest(pareto_rows(study))
        timings.after_loop = time.perf_counter() - t0
        timings.evaluation += timings.after_loop
        held = None  # the confirmations are on the stored trials
    t0 = time.perf_counter()
    rows = pareto_rows(study)
    if last_out:  # the last worker out closes the parent; its figures are drawn beside what follows
        runner.runs.close_study(config, loaded.n_layers, parent, rows,
                                {"finished_trials": finished_count(study), "pareto_size": len(rows)}, trials=held)
    from .publish import settle_runs

    settle_runs(tracker, study, parent, skip=owner_may_still_log, publish=last_out)  # the figures read no trial run
    timings.tracking += time.perf_counter() - t0
    if status == "grid exhausted":
        status = (f"grid exhausted: each of its {len(grid)} schedules has had its trial, so the study stopped at "
                  f"{finished_count(study)} of {config.trials} trials")
    return {
        "study": config.name,
        "status": status,
        "stopped_reason": runner.stopped_reason,
        "confirmed_at_end": confirmed_at_end,
        "finished_trials": finished_count(study),
        "trials_target": config.trials,
        "worker": WORKER,
        "worker_trials": runner.trials_run,
        "surplus_trials": runner.surplus,
        "pareto": rows,
        "storage": config.storage_url(),
        "tracking_uri": config.tracking_location(),
        "mlflow_ui": ui_command(config.tracking_location()),
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
