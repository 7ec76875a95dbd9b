"""Crash recovery: what killed workers left behind, set right before and after a run.

    >>> fail_dead(study)                        # trials of dead workers: RUNNING -> FAIL
    >>> enqueue_unmodified(study, grid=None)    # the unmodified model runs first, or again

A trial's worker on this host is checked directly (is its process alive?); elsewhere the
storage's heartbeat decides. The MLflow side of the same repair is Tracker.reconcile.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime

from .parallel import WORKER, owner_may_still_close, pid_alive
from .storage import GRACE

__all__ = ["enqueue_unmodified", "fail_dead", "fail_stale", "owner_may_still_log"]

log = logging.getLogger(__name__)


def owner_may_still_log(trial) -> bool:
    """Whether a finished trial's own live worker (not this one) may still be logging it to MLflow."""
    return owner_may_still_close(trial, WORKER)


def enqueue_unmodified(study, grid: list[str] | None) -> None:
    """The unmodified model runs first; again if a killed run lost it before it finished."""
    from .space import GRID_PARAM, UNMODIFIED

    def is_unmodified(t) -> bool:
        return bool(t.user_attrs.get(UNMODIFIED)) or t.user_attrs.get("added_layers") == 0

    if any(is_unmodified(t) and t.state.name in ("COMPLETE", "RUNNING", "WAITING") for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial({GRID_PARAM: "none"} if grid is not None else {}, user_attrs={UNMODIFIED: True})


def fail_dead(study, wait: bool = False) -> None:
    """Fail the trials a killed process left RUNNING.

    On this host a trial's worker process is checked directly; a trial that never got as far
    as naming its worker (killed within milliseconds of starting) is dead once it is GRACE
    old; elsewhere the storage's heartbeat decides (Optuna also checks it before each trial).
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    fail_stale(study)
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


def fail_stale(study) -> None:
    """Mark as failed the trials of workers whose heartbeat stopped (a killed process)."""
    import optuna

    try:
        optuna.storages.fail_stale_trials(study)  # a no-op for storages without a heartbeat
    except Exception as exc:
        log.debug("fail_stale_trials: %s", exc)
