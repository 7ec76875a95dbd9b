"""Several workers on one host: one `rys-search run` process per GPU, or N on the CPU.

    rys-search run --gpus 0,1 --storage postgresql://HOST/rys --tracking-uri http://HOST:5000
    rys-search run --workers 3                 # three processes on the default SQLite storage

Each worker is the same `rys-search run` command with --worker-index K and, for --gpus, its
own CUDA_VISIBLE_DEVICES; they meet in the study's storage (see parallel.py), nothing else
connects them. The launcher prepares the storage, the MLflow experiment and (for a GGUF model)
the dequantized cache first, so workers starting together neither race to create database
tables nor each convert the same file, then waits for all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import Any, Sequence

from ..errors import UserError

__all__ = ["RUN_FLAGS", "launch", "run_workers", "trial_rate", "worker_command", "worker_envs"]

# `run` options a worker inherits from its launcher: (attribute of the parsed arguments, flag)
RUN_FLAGS = (("config", "--config"), ("study", "--study"), ("model", "--model"), ("trials", "--trials"),
             ("sampler", "--sampler"), ("seed", "--seed"), ("objectives", "--objectives"),
             ("extra_objectives", "--extra-objectives"), ("mode", "--mode"), ("limit", "--limit"),
             ("storage", "--storage"), ("tracking_uri", "--tracking-uri"), ("device", "--device"), ("dtype", "--dtype"))


def worker_envs(workers: int | None, gpus: str | None, device: str = "auto") -> list[dict[str, str]]:
    """The environment changes of each worker: CUDA_VISIBLE_DEVICES for --gpus, none for --workers."""
    if gpus is not None:
        if workers is not None:
            raise UserError("give --workers N or --gpus LIST, not both (--gpus 0,0 runs two workers on GPU 0)")
        ids = [g.strip() for g in gpus.split(",")]
        if not ids or not all(g.isdigit() for g in ids):
            raise UserError(f"--gpus takes GPU numbers separated by commas, e.g. 0,1; got {gpus!r}")
        if device not in ("auto", "cuda", "cuda:0"):
            raise UserError(f"--gpus gives each worker one GPU as cuda:0; --device {device} cannot be used with it")
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


def worker_command(args: Any) -> list[str]:
    """The `rys-search run` line each worker of --workers / --gpus runs (the launcher's, minus those)."""
    command = python_command() + (["--debug"] if args.debug else []) + ["run"]
    for attribute, flag in RUN_FLAGS:
        value = getattr(args, attribute)
        if value is not None:
            command += [flag, str(value)]
    for folder in args.suites or []:
        command += ["--suites", folder]
    if not getattr(args, "confirm", True):
        command.append("--no-confirm")
    return command


def run_workers(config: Any, command: Sequence[str], envs: list[dict[str, str]]) -> tuple[int, dict[str, Any] | None]:
    """Launch the workers and wait; the worst exit status and the study's summary (None: no study).

    The storage's tables and the MLflow experiment must exist already (`rys-search run` makes
    them before it gets here), so that workers starting together do not race to create them;
    a GGUF model is dequantized here, once, before the workers start.
    """
    from .reports import pareto_rows
    from .storage import finished_count, open_study, stored_config

    from ..loading import ensure_cached, resolve_model

    source = resolve_model(config.model)
    if source.kind == "gguf":
        ensure_cached(source)  # once here, not once per worker
    launched = datetime.now()
    started = time.perf_counter()
    code = launch(command, envs)
    wall = time.perf_counter() - started
    try:
        study = open_study(config, create=False)
    except UserError:
        return code, None
    stored = stored_config(study)
    return code, {"study": config.name, "workers": len(envs), "finished_trials": finished_count(study),
                  "trials_target": stored.trials, "seconds": wall, **trial_rate(study, launched),
                  "pareto": pareto_rows(study), "storage": config.storage_url(), "objectives": stored.objectives}


def trial_rate(study: Any, since: datetime) -> dict[str, Any]:
    """Finished trials that started after `since`, and their rate over first start to last end."""
    mine = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")
            and t.datetime_start is not None and t.datetime_start >= since and t.datetime_complete is not None]
    if not mine:
        return {"trials_this_launch": 0, "trials_per_minute": None, "trial_window_s": None}
    window = (max(t.datetime_complete for t in mine) - min(t.datetime_start for t in mine)).total_seconds()
    return {"trials_this_launch": len(mine), "trials_per_minute": 60 * len(mine) / max(window, 1e-9),
            "trial_window_s": window}
