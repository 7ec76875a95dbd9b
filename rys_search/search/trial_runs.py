"""Finished trials' MLflow runs written on a thread of their own, while later trials evaluate.

    >>> runs = TrialRuns(tracker)
    >>> runs.close(trial, study, parent, items=items, params=params)   # queued: written in order
    >>> with runs.beside():                                           # a trial's evaluation: write now
    ...     scores = evaluate(...)
    >>> runs.wait()                                                   # every queued run written
    >>> runs.finish()                                                 # and the writer thread ended

Closing a trial's run (its params, metrics and tags in one log_batch, its items file, its end)
takes MLflow's SQL store some 25 ms of Python per trial, which the study loop used to pay
between trials. On a GPU a trial's evaluation mostly waits for the device with Python's lock
released, so the writer thread writes then: it starts a write only inside `beside()`. Writing
at any moment instead made the loop slower, not faster: the writer then ran beside the sampler,
and the two took turns at Python's lock (benchmarks/study_loop.py --eval-seconds).

Runs are written one at a time, in the order queued. A write that fails is raised again in the
study's thread at the next close, `beside()` or wait, so an unreachable tracking server stops the
study as it did when the loop wrote itself. A process killed with writes still queued loses only
those: the next run's reconcile (tracking.py) gives every finished trial its run, as after any
crash. At a normal exit, Ctrl-C included, the queued runs are written before Python exits.
"""

from __future__ import annotations

import atexit
import functools
import queue
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["TrialRuns"]


class TrialRuns:
    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.writing = threading.Event()  # set: the writer may start a write
        self.errors: list[BaseException] = []
        self.seconds = 0.0  # the writer's seconds of writing
        threading.Thread(target=self._write, name="rys-mlflow", daemon=True).start()
        self._at_exit = functools.partial(_drain, self.writing, self.queue)
        atexit.register(self._at_exit)  # before Python stops its daemon threads

    def _write(self) -> None:
        while True:
            write = self.queue.get()
            if write is None:  # finish()
                self.queue.task_done()
                return
            self.writing.wait()
            start = time.perf_counter()
            try:
                write()
            except BaseException as exc:  # raised again in the study's thread
                self.errors.append(exc)
            finally:
                self.seconds += time.perf_counter() - start
                self.queue.task_done()

    def close(self, trial: Any, study: str, parent: str, items: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> None:
        """Queue Tracker.close_trial_run for a finished (frozen) trial."""
        self._raise_failed()
        self.queue.put(lambda: self.tracker.close_trial_run(trial, study, parent, items=items, params=params))

    @contextmanager
    def beside(self) -> Iterator[None]:
        """While the block runs, queued runs are written."""
        self._raise_failed()
        self.writing.set()
        try:
            yield
        finally:
            self.writing.clear()

    def wait(self) -> None:
        """Write every queued run now; raise the first write that failed."""
        self.writing.set()
        self.queue.join()
        self._raise_failed()

    def finish(self) -> None:
        """wait(), then end the writer thread."""
        try:
            self.wait()
        finally:
            self.queue.put(None)
            atexit.unregister(self._at_exit)

    def _raise_failed(self) -> None:
        if self.errors:
            raise self.errors.pop(0)


def _drain(writing: threading.Event, pending: queue.Queue) -> None:
    """At exit (a loop left by an exception, Ctrl-C): write what is queued."""
    writing.set()
    pending.join()
