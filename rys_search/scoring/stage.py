"""A measurement stage: probe suites, benchmarks and fixed-point figures scored together under a
schedule, each against the unmodified model with a paired interval and, in generate mode, a
parse check.

    >>> stage = Stage([Spec("math@2:generate", "probe", "math@2", "generate", split="heldout"),
    ...                Spec("gsm8k:generate", "bench", "gsm8k", "generate", path="test.jsonl", limit=200)])
    >>> baseline = stage.baseline(loaded)                  # plain data: store it, reuse it
    >>> row = stage.measure(loaded, schedule, baseline)    # {key: {"score", "change", "change_interval", ...}}

Calibration (search/calibrate.py), the confirmation stage of a study (search/confirm.py) and the
benchmark check of a Pareto front (`rys-search pareto --bench`) are all stages. Logprob-mode
probes share one engine pass, and so do logprob-mode benchmarks; the rest are scored one by one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "Spec", "Stage", "above_zero", "gain_interval", "warn_cut"]

FIGURES = ("fixed_point", "fixed_point.kl", "fixed_point.contraction", "fixed_point.seam")

log = logging.getLogger(__name__)
# a baseline with this share of answers cut off at the new-token limit is warned about
CUT_WARNING = 0.05


@dataclass(frozen=True)
class Spec:
    """One thing a stage scores: a probe suite or a benchmark in one mode, or a fixed-point figure."""

    key: str  # "math@1:logprob", "gsm8k:generate", "fixed_point.kl"
    kind: str  # "probe", "bench" or "figure"
    name: str = ""  # suite name@version or benchmark name
    mode: str = "logprob"
    path: str = ""  # benchmarks: the file or folder
    split: str = "search"  # probes: the split scored
    limit: int | None = None  # probes: items; benchmarks: items (per BBH task)

    @classmethod
    def probe(cls, name: str, mode: str, split: str = "search", limit: int | None = None) -> "Spec":
        return cls(f"{name}:{mode}", "probe", name, mode, split=split, limit=limit)

    @classmethod
    def bench(cls, name: str, mode: str, path: str, limit: int | None = None) -> "Spec":
        return cls(f"{name}:{mode}", "bench", name, mode, path=str(Path(path).expanduser().resolve()), limit=limit)

    @classmethod
    def figures(cls) -> list["Spec"]:
        return [cls(key, "figure", "fixed_point") for key in FIGURES]


class Stage:
    def __init__(self, specs: list[Spec], suites: list[str] | None = None):
        from .benchmarks import read_benchmark
        from .registry import get_objective

        self.specs = list(specs)
        self.objectives: dict[str, Any] = {}
        for spec in self.specs:
            if spec.kind == "probe":
                self.objectives[spec.key] = get_objective(spec.name, mode=spec.mode, suites=suites)
            elif spec.kind == "bench":
                self.objectives[spec.key] = read_benchmark(spec.name, spec.path, mode=spec.mode,
                                                           limit_per_task=spec.limit)
        self.fixed_point = get_objective("fixed_point") if any(s.kind == "figure" for s in specs) else None

    def evaluate(self, loaded: Any, schedule: Any) -> dict[str, Any]:
        """Every spec's ObjectiveResult under schedule (the figures' under 'fixed_point')."""
        from .probes import ProbeObjective, evaluate_probes

        results: dict[str, Any] = {}
        scored = [s for s in self.specs if s.kind != "figure"]
        shared = [s for s in scored if s.mode == "logprob" and isinstance(self.objectives[s.key], ProbeObjective)]
        groups: dict[tuple[str, int | None], list[Spec]] = {}
        for spec in shared:  # one engine pass per (split, limit): probes together, benchmarks together
            split, limit = (spec.split, spec.limit) if spec.kind == "probe" else ("all", None)
            groups.setdefault((split, limit), []).append(spec)
        for (split, limit), group in groups.items():
            together = evaluate_probes([self.objectives[s.key] for s in group], loaded, schedule, split=split,
                                       limit=limit)
            results.update({s.key: r for s, r in zip(group, together)})
        for spec in scored:
            if spec.key not in results:
                split, limit = (spec.split, spec.limit) if spec.kind == "probe" else ("all", None)
                results[spec.key] = self.objectives[spec.key].evaluate(loaded, schedule, split=split, limit=limit)
        if self.fixed_point is not None:
            results["fixed_point"] = self.fixed_point.evaluate(loaded, schedule)
        return results

    def baseline(self, loaded: Any) -> dict[str, Any]:
        """The unmodified model's per-item scores (and parse flags) for every scored spec, as plain data."""
        from ..schedule import LayerSchedule

        results = self.evaluate(loaded, LayerSchedule.identity(loaded.n_layers))
        out = {k: _baseline_entry(r) for k, r in results.items() if k != "fixed_point"}
        for key, stored in out.items():
            warn_cut(key, stored.get("cut_rate"))
        return out

    def measure(self, loaded: Any, schedule: Any, baseline: dict[str, Any]) -> dict[str, Any]:
        """Each spec's score under schedule, its paired change against baseline and, where parsed, its
        parse rate and broken-output flag; figures as their value (0 for the unmodified model)."""
        results = self.evaluate(loaded, schedule)
        row = {k: entry(r, as_result(baseline[k])) for k, r in results.items() if k != "fixed_point"}
        if "fixed_point" in results:
            row.update({k: {"score": v, "change": v} for k, v in figures(results["fixed_point"]).items()})
        return row


def warn_cut(key: str, cut_rate: float | None) -> None:
    """Warn when CUT_WARNING or more of the unmodified model's answers were cut off at the new-token limit."""
    if (cut_rate or 0.0) >= CUT_WARNING:
        log.warning("%s: %.0f%% of the unmodified model's answers ran out of new tokens before an answer could be "
                    "read, so its changes partly measure answer length (its max_new_tokens is short for this model)",
                    key, 100 * cut_rate)


def figures(result: Any) -> dict[str, float | None]:
    """The fixed-point figures of one schedule: score, KL, the largest contraction, the mean seam."""
    metrics = result.metrics
    contraction = [v for k, v in metrics.items() if k.endswith("_contraction") and v > 0]
    seam = [v for k, v in metrics.items() if k.endswith("_seam")]
    return {
        "fixed_point": float(result.score),
        "fixed_point.kl": float(metrics.get("kl", 0.0)),
        "fixed_point.contraction": max(contraction) if contraction else None,
        "fixed_point.seam": float(sum(seam) / len(seam)) if seam else None,
    }


def _baseline_entry(result: Any) -> dict[str, Any]:
    return {"score": result.score, "interval": list(result.interval), "version": result.version,
            "items": [{k: i[k] for k in ("id", "score", "parsed") if k in i} for i in result.items],
            "parse_rate": result.metrics.get("parsed"), "cut_rate": result.metrics.get("cut"), "seconds": result.seconds}


def as_result(stored: dict[str, Any]) -> Any:
    """A stored baseline entry as the ObjectiveResult that paired_change and parse_check read."""
    from .objective import ObjectiveResult

    return ObjectiveResult(objective="", version=stored.get("version", 0), direction="maximize", mode="", split="",
                           schedule="", score=stored["score"], interval=tuple(stored["interval"]),
                           items=stored["items"])


def entry(result: Any, baseline: Any) -> dict[str, Any]:
    """A result against its baseline: score, interval, paired change and interval, parse check, seconds."""
    from .objective import paired_change, paired_diffs, parse_check

    change, lo, hi = paired_change(result, baseline)
    out = {"score": result.score, "interval": list(result.interval), "change": change, "change_interval": [lo, hi],
           "diffs": [round(d, 6) for d in paired_diffs(result, baseline)], "seconds": result.seconds}
    parse = parse_check(result, baseline)
    if parse is not None:
        out["parse_rate"] = parse["parse_rate"]
        out["cut_rate"] = result.metrics.get("cut")
        out["broken_output"] = parse["broken_output"]
        out["parse_shift"] = parse["parse_shift"]
        out["parse_change_interval"] = parse["parse_change_interval"]
    return out


def gain_interval(stored: dict[str, Any], k: int) -> list[float]:
    """The interval a change must clear to count as a gain when k changes are judged together: its
    paired interval at the family-wise level (stats.family_level, Bonferroni), from the per-item
    differences the entry keeps. With one change, or an entry stored before the differences were
    kept, it is the entry's own 95% interval."""
    from .stats import bootstrap_interval, family_level

    diffs = stored.get("diffs")
    if k <= 1 or not diffs:
        return list(stored["change_interval"])
    return list(bootstrap_interval(diffs, level=family_level(k)))


def above_zero(stored: dict[str, Any], k: int) -> bool:
    """Whether a change clears 0 as one of k judged together. The family-wise interval is the wider
    (the same resamples, further percentiles), so a 95% interval reaching 0 settles it unresampled."""
    return stored["change_interval"][0] > 0 and gain_interval(stored, k)[0] > 0
