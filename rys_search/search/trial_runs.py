"""Finished trials written by a process of their own while later trials run: their MLflow runs,
and, for a study run alone on a SQLite file, the trials themselves (alone.py).

    >>> runs = TrialRuns("sqlite:///mlruns/mlflow.db")
    >>> runs = TrialRuns(uri, store=(storage_url, study, waiting), lock_fd=claim.fd)   # a study run alone
    >>> runs.open(number, study, parent, schedule="0-9,4-6,10-27")   # a study run alone: its run opened here
    >>> runs.close(trial, study, parent, items=items, params=params)   # queued: written in order
    >>> runs.drain()                                                  # every run written, the writer still there
    >>> runs.close_study(config, n_layers, parent, rows, metrics)     # the study's figures and parent run, here
    >>> runs.finish()                                                 # all of it written, the writer gone

Closing a trial's run (its params, metrics and tags in one log_batch, its items file, its end)
costs MLflow's SQL store tens of milliseconds of Python per trial, which the study loop paid
between trials (a 500-trial study on the H100: about 20 s of tracking). A thread could not take
it off the loop: the writer and the evaluation took turns at Python's lock, and in a 500-trial
study of Qwen2.5-Coder-1.5B on the H100 the trials' evaluation grew by 16 s while the loop saved
12.5 s (on a 2-core CPU, `benchmarks/study_loop.py --trials 300 --eval-seconds 0.3`: 94.6 s
without the thread, 93.7 s with it). A process has its own lock: the loop only queues the trial
(pickled by the queue's feeder thread) and goes on.

A study run alone also has its trials' runs opened here: the loop queues the opening when a
trial's schedule is known (creating a run cost the loop 5-17 ms of SQL a trial), the writer
creates the run at once, RUNNING as before, and stores its id with the finished trial
("mlflow_run"), which it stores itself. Workers sharing a study open their runs in the loop: the
id must be on the trial before it finishes, and only the loop can set it there.

The study's end is written here too (close_study): its figures drawn from the stored trials and
logged with the Pareto front to the parent run, which is closed, while the study's process tags
the front's runs (publish.py): on the H100 the figures and the parent's close took 3.6 s of a
500-trial study, the tags 1.6 s, one after the other. While it waits for requests the writer
imports what drawing them needs (matplotlib, Optuna's importances: about 2 s on a CPU).

Trials are written one at a time, in the order queued: stored first, then their run closed. A
write that fails is raised in the study's process at the next close or at finish, as a
UserError naming the failure, so an unreachable tracking server stops the study as it did when
the loop wrote itself. The writer ignores Ctrl-C: the study's process asks it to finish, so the
queued trials are written even then. A study process killed outright loses only what its queue
had not yet handed over (the writer writes what it has, sees its parent gone and stops): the
next run's reconcile (tracking.py) gives every stored trial its run, as after any crash. A
writer that dies stops the study at the next trial it would have written.
"""

from __future__ import annotations

import atexit
import os
import queue
import time
from typing import Any

from ..errors import UserError, first_line

__all__ = ["TrialRuns"]

EXIT_WAIT = 120  # seconds the study's process waits at exit for the queued runs


class TrialRuns:
    """The writer process. tracking_uri None: no MLflow runs; store (storage URL, study name, waiting
    trials): also store each finished trial in that study (a study run alone, alone.py); lock_fd: the
    study's lock, held by the writer too until its last trial is stored."""

    def __init__(self, tracking_uri: str | None, store: tuple[str, str, dict[int, int]] | None = None,
                 lock_fd: int | None = None):
        import multiprocessing
        from multiprocessing.reduction import DupFd

        context = multiprocessing.get_context("spawn")  # never fork a process that holds CUDA and SQL connections
        self.opens = store is not None and tracking_uri is not None  # runs opened here (see the module's doc)
        self.tracking_uri = tracking_uri
        self.requests = context.Queue()
        self.errors = context.Queue()  # what failed, one line each; None: the answer to a drain
        self.failed: list[str] = []  # read from errors, not yet raised
        self._seconds = context.Value("d", 0.0)
        self._stored = context.Value("d", 0.0)
        lock = DupFd(lock_fd) if lock_fd is not None else None  # the same open lock, passed to the child
        self.process = context.Process(target=_serve, name="rys-writer", daemon=True,
                                       args=(tracking_uri, store, lock, self.requests, self.errors, self._seconds,
                                             self._stored, os.getpid()))
        self.process.start()
        atexit.register(self._at_exit)  # runs before multiprocessing's own exit handler stops the writer

    @property
    def seconds(self) -> float:
        """The writer's seconds of writing MLflow runs so far."""
        return self._seconds.value

    @property
    def stored_seconds(self) -> float:
        """The writer's seconds of storing trials in the study's storage so far."""
        return self._stored.value

    def open(self, number: int, study: str, parent: str, schedule: str = "", unmodified: bool = False) -> None:
        """Queue the opening of trial `number`'s run (Tracker.open_trial_run); its id goes into the trial's
        "mlflow_run" when the trial is stored. Only where this writer stores the trials (self.opens)."""
        if not self.opens:
            raise RuntimeError("a trial's run is opened by the writer only where the writer stores the trials")
        self._put(number, ("open", number, study, parent, schedule, unmodified))

    def close(self, trial: Any, study: str, parent: str, items: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> None:
        """Queue a finished (frozen) trial: stored in the study (when storing), then Tracker.close_trial_run."""
        self._put(trial.number, ("close", trial, study, parent, items, params))

    def _put(self, number: int, request: tuple) -> None:
        """Queue a request. A writer that has died (killed, out of memory) stops the study here, at the
        first trial it would lose: for a study run alone, the trials it has not stored exist only in
        this process."""
        self._raise_failed()
        if not self.process.is_alive():
            raise UserError(f"the writer process of the trials ended (exit code {self.process.exitcode}) before "
                            f"trial {number} was written; run the study again to go on from what it stored")
        self.requests.put(request)

    def close_study(self, config: Any, n_layers: int, parent: str, rows: list[dict[str, Any]],
                    metrics: dict[str, float], trials: list[Any] | None = None) -> None:
        """Queue the study's end: its figures (plots.study_figures of the study as stored, or of trials: every
        trial of the study, where the caller holds them) and Pareto rows logged to the parent run, which is
        closed (Tracker.close_study). Once every trial is stored."""
        if self.tracking_uri is None:
            raise RuntimeError("a writer without MLflow has no study run to close")
        self._put(-1, ("study", config.storage_url(), config.name, config, n_layers, parent, rows, metrics, trials))

    def drain(self) -> None:
        """Return once every queued request is done, the writer still running; raise the first that failed."""
        if self.process.is_alive():
            self.requests.put(("drain",))
            while True:  # the writer's errors come before its answer, on the same queue
                try:
                    message = self.errors.get(timeout=1.0)
                except queue.Empty:
                    if not self.process.is_alive():
                        break
                    continue
                if message is None:
                    break
                self.failed.append(message)
        self._raise_failed()

    def finish(self) -> None:
        """Return once every queued request is done and the writer has ended; raise the first that failed."""
        atexit.unregister(self._at_exit)
        self._stop(None)
        self._raise_failed()
        if self.process.exitcode not in (0, None):
            raise UserError(f"the writer process of the trials ended with exit code {self.process.exitcode}")

    def _raise_failed(self) -> None:
        while True:
            try:
                message = self.errors.get_nowait()
            except queue.Empty:
                break
            if message is not None:
                self.failed.append(message)
        if self.failed:
            raise UserError(self.failed.pop(0))

    def _at_exit(self) -> None:
        self._stop(EXIT_WAIT)

    def _stop(self, timeout: float | None) -> None:
        """Ask the writer to end once the queued runs are written; wait up to timeout (None: until it has)."""
        if self.process.is_alive():
            self.requests.put(None)
            self.process.join(timeout)


def _serve(tracking_uri: str | None, store: tuple[str, str, dict[int, int]] | None, lock: Any, requests: Any,
           errors: Any, seconds: Any, stored: Any, parent: int) -> None:
    """The writer process: store and close the queued trials until told to stop or its parent is gone;
    then end at once. Everything it wrote is committed, and an interpreter's exit with MLflow,
    matplotlib and scikit-learn loaded took about 0.5 s more on a CPU, which the study waited for."""
    import sys

    _serve_requests(tracking_uri, store, lock, requests, errors, seconds, stored, parent)
    errors.close()
    errors.join_thread()  # what failed has reached the study's process
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve_requests(tracking_uri: str | None, store: tuple[str, str, dict[int, int]] | None, lock: Any,
                    requests: Any, errors: Any, seconds: Any, stored: Any, parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the study finishes us
    if lock is not None:
        lock.detach()  # held open until this process ends
    tracker = None
    if tracking_uri is not None:
        from ..tracking import Tracker

        tracker = Tracker(tracking_uri)
    storage = study_id = None
    opened: dict[int, str] = {}  # trial number -> the run opened for it, until the trial is stored
    warm = tracker is None

    def store_trial(trial: Any) -> None:
        nonlocal storage, study_id
        from .alone import store as store_in

        if storage is None:
            from .storage import storage_for

            storage = storage_for(store[0])
            study_id = storage.get_study_id_from_name(store[1])
        store_in(storage, study_id, trial, store[2])

    while True:
        try:
            request = requests.get(timeout=0.5 if not warm else 1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the study's process was killed: nobody will ask us to stop
                return
            if not warm:  # idle: import what drawing the study's figures needs, before it is needed
                _warm_imports()
                warm = True
            continue
        if request is None:
            return
        kind = request[0]
        if kind == "drain":
            errors.put(None)
        elif kind == "study":
            _attempt(seconds, errors, "cannot write the study's MLflow run",
                     lambda: _close_study(tracker, storage, *request[1:]))
        elif kind == "open":  # a run that cannot be opened here is opened when its trial's run is closed
            _, number, study, run_parent, schedule, unmodified = request
            run = _attempt(seconds, errors, f"cannot open a trial's MLflow run: trial {number}",
                           lambda: tracker.open_trial_run(run_parent, study, number, schedule=schedule,
                                                          unmodified=unmodified))
            if run is not None:
                opened[number] = run
        else:
            _, trial, study, run_parent, items, params = request
            if trial.number in opened:
                trial.user_attrs["mlflow_run"] = opened.pop(trial.number)  # stored with the trial, closed below
            if store is not None:
                _attempt(stored, errors, f"cannot store trial {trial.number} in the study's storage",
                         lambda: store_trial(trial))
            if tracker is not None:
                _attempt(seconds, errors, f"cannot write a trial's MLflow run: trial {trial.number}",
                         lambda: tracker.close_trial_run(trial, study, run_parent, items=items, params=params))


def _attempt(clock: Any, errors: Any, failure: str, call: Any) -> Any:
    """call()'s result, its seconds added to clock; what it raises goes to errors as one line, `failure:
    reason` (raised in the study's process), and None is returned."""
    start = time.perf_counter()
    try:
        return call()
    except Exception as exc:
        errors.put(f"{failure}: {_line(exc)}")
        return None
    finally:
        with clock.get_lock():
            clock.value += time.perf_counter() - start


def _warm_imports() -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import optuna.importance  # noqa: F401  (imports scikit-learn where it is installed)
    except ImportError:  # drawing the figures will say what is missing
        pass


def _close_study(tracker: Any, storage: Any, url: str, name: str, config: Any, n_layers: int, parent: str,
                 rows: list[dict[str, Any]], metrics: dict[str, float], trials: list[Any] | None) -> None:
    """The study's figures from its trials (None: the stored ones), logged with its Pareto rows to the
    parent run, closed."""
    import optuna

    from .plots import study_figures
    from .storage import storage_for

    study = optuna.load_study(study_name=name, storage=storage if storage is not None else storage_for(url))
    figures = study_figures(study, config, n_layers, trials)
    try:
        tracker.close_study(parent, rows, figures, metrics, objectives=config.objective_names())
    finally:
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)


def _line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {first_line(exc, '')}"
