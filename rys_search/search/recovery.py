"""Crash recovery: what killed workers left behind, set right before and after a run.

    >>> fail_dead(study)                        # trials of dead workers: RUNNING -> FAIL
    >>> enqueue_unmodified(study, grid=None)    # the unmodified model runs first, or again

A trial's worker that this process can see is checked directly (is its process alive?);
elsewhere the storage's heartbeat decides. The MLflow side of the same repair is Tracker.reconcile.
"""

from __future__ import annotations

import logging
import time

from ..errors import first_line
from .parallel import WORKER, is_local, owner_may_still_close, pid_alive
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

    A trial's worker that this process can see (same host, boot and PID namespace) is checked
    directly; elsewhere the storage's heartbeat decides (Optuna also checks it before each
    trial). A trial that never got as far as naming its worker (killed within milliseconds of
    starting) is dead once this process has seen it nameless for GRACE seconds, by its own
    clock: another host's trial times are its local clock, which may be off or in another zone.
    """
    from optuna.trial import TrialState

    fail_stale(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ages = _nameless_ages(study, running)
    if wait and ages:  # let a nameless orphan grow GRACE old rather than leave it RUNNING
        youngest = min(ages.values())
        if youngest < GRACE:
            time.sleep(GRACE - youngest + 0.5)
            # read again: another live worker's trial is nameless only for its first milliseconds
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            ages = _nameless_ages(study, running)
    for trial in running:
        worker = trial.user_attrs.get("worker")
        if worker:
            dead = is_local(worker) and not pid_alive(int(worker.rpartition(":")[2]))
        else:
            dead = ages[trial.number] >= GRACE
        if dead:
            _fail(study, trial.number)


def _fail(study, number: int) -> None:
    """Fail another process's trial through Study.tell, without the sampler's after-trial hook.

    That hook is for trials the sampler ran: a grid sampler's would call study.stop(), which
    raises outside optimize(). A random sampler's is a no-op.
    """
    import copy

    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    teller = copy.copy(study)
    teller.sampler = optuna.samplers.RandomSampler()
    try:
        teller.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    except UpdateFinishedTrialError:  # it finished between the read and the write
        pass


_NAMELESS_SINCE: dict[tuple[str, int], float] = {}  # (study, trial number) -> first seen nameless (monotonic)


def _nameless_ages(study, running) -> dict[int, float]:
    """Seconds this process has seen each running trial without a worker name (forgetting the others)."""
    now = time.monotonic()
    nameless = {(study.study_name, t.number) for t in running if "worker" not in t.user_attrs}
    for key in [k for k in _NAMELESS_SINCE if k[0] == study.study_name and k not in nameless]:
        del _NAMELESS_SINCE[key]
    for key in nameless:
        _NAMELESS_SINCE.setdefault(key, now)
    return {number: now - _NAMELESS_SINCE[(name, number)] for name, number in nameless}


def fail_stale(study) -> None:
    """Mark as failed the trials of workers whose heartbeat stopped (a killed process)."""
    import optuna
    from sqlalchemy.exc import OperationalError

    try:
        optuna.storages.fail_stale_trials(study)  # a no-op for storages without a heartbeat
    except OperationalError as exc:  # the database busy or away for a moment: the next check catches up
        log.warning("could not check for stale trials now: %s", first_line(exc))
