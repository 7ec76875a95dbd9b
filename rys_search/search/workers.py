"""Several workers on one host: one `rys-search run` process per GPU, or N on the CPU.

    rys-search run --gpus 0,1 --storage postgresql://HOST/rys --tracking-uri http://HOST:5000
    rys-search run --workers 3                 # three processes on the default SQLite storage

Each worker is the same `rys-search run` command with --worker-index K and, for --gpus, its
own CUDA_VISIBLE_DEVICES; they meet in the study's storage (see parallel.py), nothing else
connects them. The launcher prepares the storage and the MLflow experiment first, so workers
starting together do not race to create database tables, then waits for all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Sequence

from ..errors import UserError

__all__ = ["launch", "worker_envs"]


def worker_envs(workers: int | None, gpus: str | None) -> list[dict[str, str]]:
    """The environment changes of each worker: CUDA_VISIBLE_DEVICES for --gpus, none for --workers."""
    if gpus is not None:
        if workers is not None:
            raise UserError("give --workers N or --gpus LIST, not both (--gpus 0,0 runs two workers on GPU 0)")
        ids = [g.strip() for g in gpus.split(",")]
        if not ids or not all(g.isdigit() for g in ids):
            raise UserError(f"--gpus takes GPU numbers separated by commas, e.g. 0,1; got {gpus!r}")
        return [{"CUDA_VISIBLE_DEVICES": g} for g in ids]
    if workers is None or workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    return [{} for _ in range(workers)]


def launch(command: Sequence[str], envs: list[dict[str, str]]) -> int:
    """Start one worker per env (command + --worker-index K), wait for all; the worst exit status.

    The host's cores are shared out through OMP_NUM_THREADS (unless it is set already): on a
    2-core CPU, three workers with two threads each ran a tiny-model study 4x slower than with one.
    Ctrl-C reaches the workers through the terminal's process group; a SIGTERM to the launcher
    is passed on to them.
    """
    procs = []
    threads = str(max(1, (os.cpu_count() or 1) // len(envs)))  # N workers each with all cores thrash
    for index, extra in enumerate(envs):
        env = {"OMP_NUM_THREADS": threads, **os.environ, **extra}
        procs.append(subprocess.Popen([*command, "--worker-index", str(index)], env=env))

    def forward(signum, frame):  # pragma: no cover - exercised by hand
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = []
        for p in procs:
            while True:
                try:
                    codes.append(p.wait())
                    break
                except KeyboardInterrupt:  # the workers got it too; wait for them to wind down
                    continue
    finally:
        signal.signal(signal.SIGTERM, previous)
    bad = [c for c in codes if c != 0]
    return max(bad, key=lambda c: (c == 2, c)) if bad else 0


def python_command() -> list[str]:
    return [sys.executable, "-m", "rys_search.cli"]
