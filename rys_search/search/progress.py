"""A live progress line: trials done and left, ETA, best cheap value per objective, Pareto size,
confirmed gains so far, and the last trial's state (with its verdict when it was confirmed).

On a terminal the line redraws in place; otherwise (a log file, CI) one line per trial.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .confirm import counts_against_budget

__all__ = ["FrontView", "Progress"]


class FrontView:
    """Finished trials, best value per objective and the Pareto front, kept up to date in memory.

    Each read takes only the trials it has not seen finished (finished trials never change), so
    a progress line costs the same at trial 500 as at trial 5; `study.best_trials` would
    deep-copy every trial each time. The front follows Optuna's rule: a trial is on it unless
    another complete trial is at least as good in every objective and better in one.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.finished = 0
        self.best: list[float | None] = []
        self.front: dict[int, tuple[float, ...]] = {}  # trial number -> values, signs turned to maximise
        self.signs: list[float] = []
        self.gains = 0  # trials whose confirmation found a gain
        self.confirmed = 0  # trials confirmed, the unmodified model's not counted (the budget's count)

    def read(self, study: Any) -> None:
        from optuna.trial import TrialState

        if not self.signs:
            self.signs = [1.0 if d.name == "MAXIMIZE" else -1.0 for d in study.directions]
            self.best = [None] * len(self.signs)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number in self.seen:
                continue
            self.seen.add(t.number)
            self.finished += 1
            self.gains += t.user_attrs.get("verdict") == "gain"
            self.confirmed += counts_against_budget(t)
            if t.state == TrialState.COMPLETE and t.values:
                self.add(t.number, t.values)

    def add(self, number: int, values: list[float]) -> None:
        point = tuple(s * v for s, v in zip(self.signs, values))
        for k, v in enumerate(values):
            if self.best[k] is None or self.signs[k] * v > self.signs[k] * self.best[k]:
                self.best[k] = v
        if any(_dominates(other, point) for other in self.front.values()):
            return
        self.front = {n: p for n, p in self.front.items() if not _dominates(point, p)}
        self.front[number] = point


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


class Progress:
    def __init__(self, config: Any, already: int, out: Any = None, prefix: str = ""):
        self.config = config
        self.out = out or sys.stderr
        self.start = time.perf_counter()
        self.already = already
        self.prefix = prefix  # one of several workers: lines, each marked, never redrawn in place
        self.tty = hasattr(self.out, "isatty") and self.out.isatty() and not prefix
        self.names = config.objective_names()
        self.view = FrontView()
        self.first: float | None = None  # when this process's first trial finished
        self.after_first = [0, 0, 0.0]  # since then: trials, confirmations, their seconds
        self.first_confirmation = 0.0  # the first trial's confirmation seconds (the unmodified model's)

    def update(self, study: Any, trial: Any, runner: Any) -> None:
        self.view.read(study)
        done = self.view.finished
        target = self.config.trials
        now = time.perf_counter()
        left_confirmations = 0
        if getattr(runner, "confirmer", None) is not None:
            left_confirmations = max(0, int(self.config.confirm.max_confirmed) - self.view.confirmed)
        eta = self._eta(now, trial, max(0, target - done), left_confirmations)
        best = [f"{name} {value:.2f}" for name, value in zip(self.names, self.view.best) if value is not None]
        pareto = len(self.view.front)
        gains = self.view.gains
        state = trial.state.name.lower()
        confirmed = trial.user_attrs.get("verdict") if trial.user_attrs.get("confirmed") else None
        if confirmed:
            state += f", confirmed: {confirmed}"
        reason = trial.user_attrs.get("pruned_reason")
        schedule = trial.user_attrs.get("schedule", "?")
        bar_width = 20
        filled = int(bar_width * min(done, target) / max(target, 1))
        bar = "#" * filled + "-" * (bar_width - filled)
        line = (f"{self.prefix}[{bar}] {done}/{target} trials, {max(0, target - done)} left, ETA {_clock(eta)} | "
                f"best (cheap) {', '.join(best) or '-'} | Pareto {pareto}, confirmed gains {gains} | "
                f"#{trial.number} {schedule} {state}"
                + (f" ({reason})" if reason else ""))
        if self.tty:
            self.out.write("\r\033[K" + line[: 200])
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def _eta(self, now: float, trial: Any, left: int, left_confirmations: int) -> float:
        """Trials left at the cheap stage's pace, plus the confirmations the budget has left at theirs.

        Paces are taken after this process's first trial, which carries one-off costs (the
        unmodified model's confirmation baseline, warm-up); until a second trial is in, the first
        one's time is all there is, and its confirmation (the baseline's) stands for one until another
        is seen.
        """
        if self.first is None:
            self.first = now
            self.first_confirmation = float(trial.user_attrs.get("confirm_seconds") or 0.0)
            return (now - self.start) * left
        counts = self.after_first
        counts[0] += 1
        seconds = float(trial.user_attrs.get("confirm_seconds") or 0.0)
        if seconds:
            counts[1] += 1
            counts[2] += seconds
        cheap = max(0.0, now - self.first - counts[2]) / counts[0]
        per_confirmation = counts[2] / counts[1] if counts[1] else self.first_confirmation
        return cheap * left + per_confirmation * left_confirmations

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
