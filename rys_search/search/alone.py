"""A study that one process runs alone on a SQLite file: its loop works on an in-memory copy.

    >>> claim = claim_study(config.storage_url(), config.name, alone=True)   # before the study opens
    >>> loop_study = in_memory(study) if claim.exclusive else study
    >>> store(storage, study_id, finished_trial, waiting)                   # in the writer process

Optuna's SQLite storage pays for every step of a trial in SQL: ask, each suggested parameter
and tell are about 30 statements, each user attribute is a transaction of its own, and each read
of the trials (which the loop's checks, the progress line and the sampler make five times a
trial) is seven statements. When one process has the study to itself, nobody else needs to see
a trial before it ends, so the loop runs on a copy of the study in Optuna's in-memory storage
and the writer process (trial_runs.py) stores each finished trial back into the file, in order,
in one transaction, beside the next trial. The copy holds every trial the file had, so the
sampler, the checks and the trial numbers are the same as on the file (tests/search/
test_alone.py compares the two). A 500-trial study of Qwen2.5-Coder-1.5B on the H100: sampler
31.9 s -> 7.3 s, 165.0 s -> 133.5 s in all, the same 500 schedules proposed.

Who runs a study is settled by a lock file beside the SQLite file, one per study: a process
started alone takes it exclusively (its writer process holds it too, so the lock outlives a
killed study until its queued trials are stored); workers of `run --workers` (or a process
that finds them at work) share it and write to the file as before. A process that finds the
study taken exclusively waits up to LOCK_WAIT seconds (a killed study's writer finishing) and
then stops with one line. Readers (`status`, `export`, the dashboard) take no lock: they see
trials as they are stored, a moment after each ends, and not the trial under way. A study run
alone and killed outright loses the trial under way (its MLflow run is left RUNNING until the
study's next run reconciles it); a Ctrl-C stores it as failed, as Optuna's storage would.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["Claim", "LOCK_WAIT", "claim_study", "copy_study_attrs", "in_memory", "lock_path", "store"]

LOCK_WAIT = 30.0  # seconds a process waits for a study another process holds alone
POLL = 0.2


@dataclass
class Claim:
    """This process's hold on a study: exclusive (it runs alone) or shared; fd None: no lock (not SQLite)."""

    fd: int | None = None
    exclusive: bool = False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_path(url: str, study: str) -> Path | None:
    """The lock file of a study in a SQLite file (hidden, beside it); None for other storages."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    db = Path(database)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study)
    return db.parent / f".{db.name}.{safe}.lock"


def claim_study(url: str, study: str, alone: bool, wait: float | None = None) -> Claim:
    """Hold the study: exclusively when alone and nobody else holds it, else shared with its workers.

    A study held exclusively by another process is waited for up to `wait` seconds (default
    LOCK_WAIT), then a UserError.
    """
    path = lock_path(url, study)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): every process writes to the file, as workers do
        return Claim()
    if path is None or not path.parent.is_dir():  # no folder: opening the storage fails with its own message
        return Claim()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
    while True:
        if alone and _try(fd, fcntl.LOCK_EX):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return Claim(fd, exclusive=True)
        if _try(fd, fcntl.LOCK_SH):
            return Claim(fd, exclusive=False)
        if time.monotonic() >= deadline:
            os.close(fd)
            holder = path.read_text().strip() or "unknown"
            raise UserError(f"study {study!r} is being run by another process (pid {holder}); a study runs in one "
                            "process unless started with `rys-search run --workers N`: let it finish, or stop it")
        time.sleep(POLL)


def _try(fd: int, how: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def in_memory(study: Any) -> Any:
    """A copy of the study (its attributes and every trial, numbered the same) in Optuna's in-memory
    storage, with the study's sampler."""
    import optuna

    copy = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=study.sampler,
                               study_name=study.study_name, directions=study.directions)
    storage, study_id = copy._storage, copy._study_id
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():  # metric names
        storage.set_study_system_attr(study_id, key, value)
    copy_study_attrs(study, copy)
    for trial in study.get_trials(deepcopy=False):
        storage.create_new_trial(study_id, template_trial=trial)
    return copy


def copy_study_attrs(source: Any, target: Any) -> None:
    """The study user attributes that source has and target lacks or holds otherwise, set on target."""
    have = target.user_attrs
    for key, value in source.user_attrs.items():
        if key not in have or have[key] != value:
            target.set_user_attr(key, value)


def waiting_trials(study: Any) -> dict[int, int]:
    """The study's waiting (enqueued) trials: number -> trial id in its storage."""
    from optuna.trial import TrialState

    return {t.number: t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}


def store(storage: Any, study_id: int, trial: Any, waiting: dict[int, int]) -> None:
    """Store a finished trial of the in-memory copy in the study's storage, numbered as in the copy:
    onto its waiting row when it was enqueued before the copy was made (waiting: number -> trial
    id, its entry taken), else as a new trial in one transaction."""
    from optuna.trial import TrialState

    trial_id = waiting.pop(trial.number, None)
    if trial_id is None:
        trial_id = storage.create_new_trial(study_id, template_trial=trial)
        number = storage.get_trial_number_from_id(trial_id)
        if number != trial.number:
            raise RuntimeError(f"it was stored as trial {number}: another process is writing to the study")
        return
    storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    for name, distribution in trial.distributions.items():
        storage.set_trial_param(trial_id, name, distribution.to_internal_repr(trial.params[name]), distribution)
    for key, value in trial.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in trial.system_attrs.items():
        storage.set_trial_system_attr(trial_id, key, value)
    for step, value in trial.intermediate_values.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    storage.set_trial_state_values(trial_id, trial.state, trial.values)
