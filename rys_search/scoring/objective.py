"""The objective interface and its result type; registry.py finds objectives by name.

    >>> objective = get_objective("math", mode="logprob")           # registry.py
    >>> result = objective.evaluate(loaded, LayerSchedule.parse("0-9,10-12x2,13-29"))
    >>> result.score, result.interval, result.noise

An objective has a name, a version and a direction. Changing what it measures means a new
version, never a silent change: a suite's version comes from its file. Objectives are the
probe suites found in objectives/ (and folders the user names) plus `fixed_point`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError
from .stats import bootstrap_interval, half_width, paired_interval

__all__ = ["MODES", "Objective", "ObjectiveResult", "paired_change", "paired_diffs", "parse_check"]

MODES = ("logprob", "generate")


@dataclass
class ObjectiveResult:
    objective: str
    version: int
    direction: str
    mode: str
    split: str
    schedule: str
    score: float
    interval: tuple[float, float]
    items: list[dict[str, Any]]  # per item: id, score and what the scorer saw
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    tokens: int = 0

    @property
    def noise(self) -> float:
        """The noise floor: half the width of the 95% interval."""
        return half_width(self.interval)

    def item_scores(self) -> dict[str, float]:
        return {item["id"]: float(item["score"]) for item in self.items}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["noise"] = self.noise
        out["interval"] = list(self.interval)
        return out


def paired_diffs(result: ObjectiveResult, baseline: ObjectiveResult) -> list[float]:
    """Per item, the result's score minus the baseline's, over the items both scored."""
    a, b = result.item_scores(), baseline.item_scores()
    ids = [i for i in a if i in b]
    if not ids:
        raise ValueError(f"{result.objective}: no items in common with the baseline")
    return [a[i] - b[i] for i in ids]


def paired_change(result: ObjectiveResult, baseline: ObjectiveResult) -> tuple[float, float, float]:
    """Change against the baseline over the items both scored, with its paired 95% interval."""
    diffs = paired_diffs(result, baseline)
    return paired_interval(diffs, [0.0] * len(diffs))


def parse_check(result: ObjectiveResult, baseline: ObjectiveResult) -> dict[str, Any] | None:
    """The parse rate of a generate-mode result against the unmodified model's, and the
    "broken output" flag; None when the results record no parse flags (logprob mode).

    Broken output: the schedule's parse rate lies below the 95% interval of the unmodified
    model's parse rate and the paired change of the parse flags excludes zero. A schedule
    so flagged does not count as a gain whatever its score.

    Parse shift: the same the other way (the parse rate rose beyond the unmodified model's
    interval, paired change above zero). An unparsed answer scores as wrong, so where the
    unmodified model often misses the answer format, a schedule that follows it more often
    gains points without answering better: such a change is not counted as a gain either.
    """
    mine = {i["id"]: float(i["parsed"]) for i in result.items if "parsed" in i}
    base = {i["id"]: float(i["parsed"]) for i in baseline.items if "parsed" in i}
    ids = [i for i in mine if i in base]
    if not ids:
        return None
    rate = sum(mine.values()) / len(mine)
    base_interval = bootstrap_interval(list(base.values()))
    change, lo, hi = paired_interval([mine[i] for i in ids], [base[i] for i in ids])
    return {
        "parse_rate": rate,
        "unmodified_parse_rate": sum(base.values()) / len(base),
        "unmodified_parse_interval": list(base_interval),
        "parse_change": change,
        "parse_change_interval": [lo, hi],
        "broken_output": bool(rate < base_interval[0] and hi < 0),
        "parse_shift": bool(rate > base_interval[1] and lo > 0),
    }


class Objective(ABC):
    """A scored property of a model under a schedule. Subclasses implement `_score`."""

    name: str
    version: int
    direction: str = "maximize"
    mode: str = "logprob"

    def evaluate(self, loaded: Any, schedule: Any = None, *, split: str = "search", limit: int | None = None) -> ObjectiveResult:
        """Score the loaded model under schedule (None: the schedule it has now)."""
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be at least 1, got {limit}")
        runtime = loaded.runtime
        chosen = schedule if schedule is not None else runtime.schedule
        start = time.perf_counter()
        with runtime.using(chosen) as applied:
            items, metrics, tokens = self._score(loaded, split=split, limit=limit)
        return self.result(items, metrics, tokens, time.perf_counter() - start, split, applied)

    def result(self, items, metrics, tokens: int, seconds: float, split: str, schedule: Any) -> ObjectiveResult:
        """The result of scoring items under schedule: mean score, bootstrap interval and the rest."""
        scores = [float(i["score"]) for i in items]
        score = sum(scores) / len(scores) if scores else float("nan")
        return ObjectiveResult(
            objective=self.name,
            version=self.version,
            direction=self.direction,
            mode=self.mode,
            split=split,
            schedule=str(schedule),
            score=score,
            interval=bootstrap_interval(scores),
            items=items,
            metrics=metrics,
            seconds=seconds,
            tokens=tokens,
        )

    @abstractmethod
    def _score(self, loaded: Any, *, split: str, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, float], int]:
        """Per-item results (each with 'id' and 'score'), summary metrics, tokens processed."""
