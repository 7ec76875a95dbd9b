"""Several workers, one study: the rules that keep them apart, read from the shared storage.

    >>> while has_room(study, target):             # before asking Optuna for a trial
    ...     study.optimize(runner, n_trials=1)     # the runner calls admitted() and original_of()

Nothing here coordinates workers directly: every decision is a read of the Optuna storage
(PostgreSQL, or SQLite on one host), whose trial numbers are unique and handed out in order
(RDBStorage locks the study row while it numbers a new trial). Two rules follow from them.

- Exactly `trials` finished trials. A worker asks for a trial only while finished + running
  trials are fewer than the target (it waits while the study is full but a running trial may
  still fail). Two workers can pass that check at the same moment, so a new trial also checks
  its rank: it runs only if fewer than `target` trials with lower numbers are finished, running
  or waiting; otherwise it is surplus and is failed at once, unscored. Whatever the timing, the
  T+1-th finished trial would have seen T lower trials alive when it started, so it cannot exist.
- One evaluation per schedule. A trial publishes its schedule before scoring it; the lowest
  numbered trial with that schedule that is running or finished (and not itself a duplicate or
  a failure) is the original, and every other one is pruned as its duplicate. A trial waits
  for lower trials that have not named their schedule yet (milliseconds after their start).
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

__all__ = ["WORKER", "Surplus", "admitted", "has_room", "is_local", "is_server_storage", "live_trials", "original_of",
           "owner_may_still_close", "pid_alive", "utc_offset"]

POLL = 0.5  # seconds between reads of the storage while waiting
OWNER_GRACE = 60.0  # seconds a finished trial of another host is left to its own worker to log
LIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def _place() -> str:
    """Where process ids mean the same thing: host name, boot and PID namespace.

    Containers that share a host name (and a kernel, so a boot id) have PID namespaces of
    their own; without /proc a random id keeps this process from judging anyone else's pids.
    """
    import hashlib
    import uuid

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        token = hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:12]
    except OSError:
        token = uuid.uuid4().hex[:12]
    return f"{socket.gethostname()}:{token}"


PLACE = _place()
WORKER = f"{PLACE}:{os.getpid()}"  # this process, as its trials name their worker


def is_local(worker: str) -> bool:
    """Whether a worker id names a process whose pid this process can check (same host, boot, PID namespace)."""
    where, _, pid = worker.rpartition(":")
    return where == PLACE and pid.isdigit()


def utc_offset() -> float:
    """This host's local time minus UTC, in seconds: Optuna's trial times are naive local times."""
    return datetime.now().astimezone().utcoffset().total_seconds()


class Surplus(Exception):
    """A trial started when the study already had its trials finished or under way."""


def is_server_storage(url: str) -> bool:
    """A storage that workers on several machines can share (not a SQLite file)."""
    return not url.startswith("sqlite:") and "://" in url


def _states(study, names: tuple[str, ...]) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=tuple(TrialState[n] for n in names))


def has_room(study, target: int, fail_dead: Callable[[Any], None] | None = None, poll: float = POLL) -> bool:
    """True when this worker should ask for another trial; False once `target` trials are finished.

    While the study is full (finished + running reach the target) but not done, wait: a running
    trial may still fail and free its place. fail_dead(study) is called while waiting, so trials
    of killed workers do not hold places forever.
    """
    while True:
        trials = _states(study, LIVE)
        finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        if finished >= target:
            return False
        waiting = any(t.state.name == "WAITING" for t in trials)
        running = sum(t.state.name == "RUNNING" for t in trials)
        if waiting or finished + running < target:  # a waiting trial is taken by the next ask
            return True
        if fail_dead is not None:
            fail_dead(study)
        time.sleep(poll)


def live_trials(study) -> list[Any]:
    """One read of the trials that are finished (not failed), running or waiting: for admitted and original_of."""
    return _states(study, LIVE)


def admitted(study, trial, target: int, live: list[Any] | None = None) -> bool:
    """Whether this new trial fits: fewer than `target` lower-numbered trials finished or alive.

    live: a read of live_trials(study) made after this trial started (default: read now).
    """
    ahead = sum(t.number < trial.number for t in (live if live is not None else _states(study, LIVE)))
    return ahead < target


def original_of(study, trial, schedule: str, fail_dead: Callable[[Any], None] | None = None,
                poll: float = 0.05, live: list[Any] | None = None) -> int:
    """The number of the trial that evaluates `schedule`: this trial's own, or a lower one's.

    The trial must have stored its schedule (user attr "schedule") before calling this, and
    live, if given, must have been read after that (admitted and original_of then share one read).
    """
    while True:
        trials = live if live is not None else _states(study, ("COMPLETE", "PRUNED", "RUNNING"))
        live = None  # a second look reads the storage again
        lower = [t for t in trials if t.number < trial.number and t.state.name != "WAITING"]
        same = [t.number for t in lower if t.user_attrs.get("schedule") == schedule and "duplicate_of" not in t.user_attrs]
        if same:
            return min(same)
        if not any(t.state.name == "RUNNING" and "schedule" not in t.user_attrs for t in lower):
            return trial.number
        if fail_dead is not None:  # a lower trial has not named its schedule yet (or its worker died)
            fail_dead(study)
        time.sleep(poll)


def owner_may_still_close(trial, me: str) -> bool:
    """True while a finished trial's own worker may still be logging it to MLflow (leave it be).

    A worker this process can see is asked directly; a worker elsewhere gets OWNER_GRACE seconds
    from the trial's end, read in UTC (the worker recorded its host's offset: time zones differ).
    """
    worker = trial.user_attrs.get("worker")
    if not worker or worker == me:
        return False
    if is_local(worker):
        return pid_alive(int(worker.rpartition(":")[2]))
    done = trial.datetime_complete
    if done is None:
        return False
    offset = trial.user_attrs.get("utc_offset", utc_offset())
    ended = done.replace(tzinfo=timezone.utc) - timedelta(seconds=offset)
    return (datetime.now(timezone.utc) - ended).total_seconds() < OWNER_GRACE


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
