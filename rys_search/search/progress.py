"""A live progress line: trials done and left, ETA, best value per objective, Pareto size.

On a terminal the line redraws in place; otherwise (a log file, CI) one line per trial.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .storage import finished_count

__all__ = ["Progress"]


class Progress:
    def __init__(self, config: Any, already: int, out: Any = None, prefix: str = ""):
        self.config = config
        self.out = out or sys.stderr
        self.start = time.perf_counter()
        self.already = already
        self.prefix = prefix  # one of several workers: lines, each marked, never redrawn in place
        self.tty = hasattr(self.out, "isatty") and self.out.isatty() and not prefix
        self.names = config.objective_names()

    def update(self, study: Any, trial: Any, runner: Any) -> None:
        done = finished_count(study)
        target = self.config.trials
        new = max(1, done - self.already)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / new * max(0, target - done)
        best = []
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
        for k, (name, direction) in enumerate(zip(self.names, study.directions)):
            values = [t.values[k] for t in complete]
            if values:
                pick = max(values) if direction.name == "MAXIMIZE" else min(values)
                best.append(f"{name} {pick:.2f}")
        pareto = len(study.best_trials) if complete else 0
        state = trial.state.name.lower()
        reason = trial.user_attrs.get("pruned_reason")
        schedule = trial.user_attrs.get("schedule", "?")
        bar_width = 20
        filled = int(bar_width * min(done, target) / max(target, 1))
        bar = "#" * filled + "-" * (bar_width - filled)
        line = (f"{self.prefix}[{bar}] {done}/{target} trials, {max(0, target - done)} left, ETA {_clock(eta)} | "
                f"best {', '.join(best) or '-'} | Pareto {pareto} | #{trial.number} {schedule} {state}"
                + (f" ({reason})" if reason else ""))
        if self.tty:
            self.out.write("\r\033[K" + line[: 200])
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
