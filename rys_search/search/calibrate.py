"""Calibration: do the search objectives rank schedules the way real benchmarks do?

    rys-search calibrate --model qwen.gguf --bench gsm8k=gsm8k/test.jsonl --bench bbh=bbh/ \
                         --bench eqbench=eq_bench_v2.json --schedules 60

A spread of schedules (a thinned grid of single contiguous blocks plus random multi-block
schedules from the study space, or the trials of a study) is scored on every search
objective — each probe suite version in each mode it supports, and the fixed-point figures —
and on every named benchmark, each against the unmodified model with a paired interval. Then,
for each objective x benchmark pair: Spearman's rank correlation of their changes across the
schedules with a bootstrap 95% interval (resampling schedules), and how often the signs agree
among the schedules whose benchmark change lies outside its noise (its paired interval
excludes 0). A probe that ranks schedules unlike the benchmark cannot tell a real gain.

The state is a JSON file written after every schedule, so a stopped calibration resumes where it
stopped (same settings, same file), and it grows: the same file asked for objectives or
benchmarks it lacks (same schedules, limits and answer reading) scores only those, on the same
schedules, so a new suite version is compared with the old ones without scoring the benchmarks
again. Its summary table and a scatter plot per benchmark go beside it and into an MLflow run.
`rys-search run` prints the calibration of its model's objectives.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, TextIO

from ..errors import UserError
from ..schedule import LayerSchedule
from ..scoring.memory import retry_out_of_memory
from ..scoring.stage import Spec, Stage

__all__ = ["bench_specs", "calibration_for", "calibration_path", "describe_for_run", "figures", "format_table",
           "model_key", "probe_specs", "run_calibration", "sample_schedules", "summarize", "versions"]

KIND = "rys-search calibration"
FORMAT = 1


def probe_specs(suites: list[str] | None = None, wanted: Iterable[str] | None = None) -> list[Spec]:
    """Every suite version in every mode it supports (or the keys in wanted: 'math@1:logprob', 'eq@2')."""
    from ..scoring.suites import load_suites

    found = load_suites(suites)
    every = [Spec.probe(s.key, m) for key, s in sorted(found.items()) if "@" in key for m in s.modes]
    if wanted is None:
        return every
    chosen = []
    for text in wanted:
        pinned = _pinned(text, found)
        matches = [s for s in every if pinned in (s.key, s.name)]
        if not matches:
            known = ", ".join(s.key for s in every)
            raise UserError(f"calibrate: no objective {text!r}; known: {known}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _pinned(text: str, found: dict[str, Any]) -> str:
    """'math:logprob' -> 'math@1:logprob', 'math' -> 'math@1' (the bare name's default version)."""
    name, _, mode = text.partition(":")
    suite = found.get(name)
    if suite is None:
        return text
    return f"{suite.key}:{mode}" if mode else suite.key


def bench_specs(args: list[str], limit: int | None = None) -> list[Spec]:
    """--bench NAME=PATH (in the benchmark's own mode) or NAME:MODE=PATH, each checked now."""
    from ..scoring.benchmarks import parse_bench

    specs = []
    for text in args:
        name, mode, path = parse_bench(text)
        spec = Spec.bench(name, mode, path, limit)
        if spec.key in {s.key for s in specs}:
            raise UserError(f"--bench names {spec.key} twice")
        specs.append(spec)
    return specs


# ---- schedules ------------------------------------------------------------------------


class _RandomTrial:
    """Just enough of an Optuna trial for suggest_schedule: suggest_int from a seeded generator."""

    user_attrs: dict[str, Any] = {}

    def __init__(self, rng: random.Random):
        self.rng = rng

    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int:
        return low + step * self.rng.randrange((high - low) // step + 1)


def sample_schedules(n_layers: int, space: Any, period: int, count: int, seed: int = 0) -> list[LayerSchedule]:
    """count distinct schedules: about half a thinned grid of single blocks run twice (every width
    the space allows, starts spread evenly), the rest random schedules from the space (several
    blocks, several passes), in a seeded order."""
    from .space import grid_pairs, suggest_schedule

    if count < 1:
        raise UserError("--schedules must be at least 1")
    rng = random.Random(seed)
    grid = [p for p in grid_pairs(n_layers, space, period) if p != "none"]
    take = min(len(grid), (count + 1) // 2)
    step = len(grid) / max(take, 1)
    chosen: dict[str, LayerSchedule] = {}
    for k in range(take):
        i, j = (int(x) for x in grid[int(k * step)].split(","))
        schedule = LayerSchedule.rys(n_layers, i, j)
        chosen[str(schedule)] = schedule
    attempts = 0
    while len(chosen) < count and attempts < 50 * count:
        attempts += 1
        schedule = suggest_schedule(_RandomTrial(rng), n_layers, space, period)
        if not schedule.is_identity(n_layers):
            chosen.setdefault(str(schedule), schedule)
    schedules = list(chosen.values())
    rng.shuffle(schedules)  # a stopped calibration still covers grid and random schedules alike
    return schedules


def study_schedules(study: Any, n_layers: int) -> list[LayerSchedule]:
    """The distinct schedules of a study's complete trials (the unmodified model left out)."""
    seen: dict[str, LayerSchedule] = {}
    for trial in study.get_trials(deepcopy=False):
        text = trial.user_attrs.get("schedule")
        if trial.state.name == "COMPLETE" and text:
            schedule = LayerSchedule.parse(text, n_layers=n_layers)
            if not schedule.is_identity(n_layers):
                seen.setdefault(str(schedule), schedule)
    return list(seen.values())


# ---- where calibrations live ------------------------------------------------------------


def model_key(spec: str) -> str:
    """What identifies a model's calibration: its file name and size (GGUF), else its folder or id."""
    from ..loading import resolve_model

    source = resolve_model(spec)
    if source.kind == "gguf":
        return f"{Path(source.location).name}:{os.path.getsize(source.location)}"
    return Path(source.location).name if Path(source.location).is_dir() else source.location


def calibration_path(name: str, folder: str | os.PathLike = "studies") -> Path:
    return Path(folder) / f"{name}.calibration.json"


def calibration_for(key: str, folder: str | os.PathLike = "studies") -> dict[str, Any] | None:
    """The newest finished calibration of the model with this key in folder, or None."""
    best = None
    for path in sorted(Path(folder).glob("*.calibration.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # another tool's file or a half-written one: not a calibration we can use
        if state.get("kind") == KIND and state.get("model_key") == key and state.get("table"):
            if best is None or state.get("finished", "") > best.get("finished", ""):
                best = {**state, "path": str(path)}
    return best


# ---- scoring ----------------------------------------------------------------------------


def run_calibration(loaded: Any, schedules: list[LayerSchedule], specs: list[Spec], path: Path, *,
                    model: str, key: str, settings: dict[str, Any], suites: list[str] | None = None,
                    out: TextIO | None = None, study: str | None = None) -> dict[str, Any]:
    """Score the unmodified model and every schedule on every spec, saving after each; resume from path.

    settings (what was asked: objectives, benchmarks, limits, schedules) must equal a stored
    file's, else the file belongs to another calibration and is refused.
    """
    out = out or sys.stderr
    state = _open_state(path, settings, model=model, key=key, n_layers=loaded.n_layers, study=study)
    stages: dict[tuple[str, ...], Stage] = {}

    def stage_for(missing: list[Spec]) -> Stage:  # one Stage per set of specs a row lacks
        return stages.setdefault(tuple(s.key for s in missing), Stage(missing, suites))

    unscored = [s for s in specs if s.kind != "figure" and s.key not in state["baseline"]]
    if unscored:
        start = time.perf_counter()
        state["baseline"].update(retry_out_of_memory(loaded, lambda: stage_for(unscored).baseline(loaded)))
        seconds = time.perf_counter() - start
        state["baseline_seconds"] = state.get("baseline_seconds", 0.0) + seconds
        _save(path, state)
        print(f"calibrate: unmodified model scored in {seconds:.1f} s", file=out)
    todo = [(s, _lacking(state["schedules"].get(str(s), {}), specs)) for s in schedules]
    todo = [(s, missing) for s, missing in todo if missing]
    done = len(schedules) - len(todo)
    for schedule, missing in todo:
        start = time.perf_counter()
        row = retry_out_of_memory(loaded, lambda: stage_for(missing).measure(loaded, schedule, state["baseline"]))
        seconds = time.perf_counter() - start
        old = state["schedules"].get(str(schedule), {})
        state["schedules"][str(schedule)] = {**old, **row, "_seconds": old.get("_seconds", 0.0) + seconds}
        _save(path, state)
        done += 1
        print(f"calibrate: [{done}/{len(schedules)}] {schedule}  {seconds:.1f} s", file=out)
    state["table"] = summarize(state)
    state["versions"] = versions(state)
    state["seconds_per_schedule"] = _seconds(state)
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _save(path, state)
    return state


def _open_state(path: Path, settings: dict[str, Any], **facts: Any) -> dict[str, Any]:
    if path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not a readable calibration file ({exc.msg}); move it away") from None
        if state.get("kind") != KIND:
            raise UserError(f"{path} is not a rys-search calibration file; choose another --out")
        grown = _grown(state.get("settings") or {}, settings)
        if grown is None or state.get("model_key") != facts["key"]:
            raise UserError(f"{path} holds a calibration with other settings or another model; "
                            "use --out FILE for a new one (or remove it)")
        if grown != state["settings"]:
            state["settings"] = grown
            state.pop("finished", None)  # finished again once its new entries are scored
        return state
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"kind": KIND, "format": FORMAT, "model": facts["model"], "model_key": facts["key"],
            "n_layers": facts["n_layers"], "study": facts["study"], "settings": settings,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "baseline": {}, "schedules": {}}


def _grown(stored: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any] | None:
    """The settings of a stored calibration grown by what is asked (more objectives or benchmarks),
    or None when they differ otherwise: other schedules, limits, answer reading, or a benchmark name
    on another path. Objectives and benchmarks stored but not asked stay."""
    same = ("objectives", "benchmarks")
    if {k: v for k, v in stored.items() if k not in same} != {k: v for k, v in asked.items() if k not in same}:
        return None
    benchmarks = stored.get("benchmarks", {})
    if any(benchmarks.get(name, path) != path for name, path in asked["benchmarks"].items()):
        return None
    objectives = list(stored.get("objectives", []))
    return {**stored, "objectives": objectives + [k for k in asked["objectives"] if k not in objectives],
            "benchmarks": {**benchmarks, **asked["benchmarks"]}}


def _lacking(row: dict[str, Any], specs: list[Spec]) -> list[Spec]:
    """The specs a schedule's row has no entry for (all of them for a schedule not yet scored)."""
    return [s for s in specs if s.key not in row]


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary name and rename: a kill mid-write leaves the last whole state."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _seconds(state: dict[str, Any]) -> dict[str, float]:
    """Mean seconds per schedule of each scored entry (logprob probes: their share of the joint pass),
    the fixed-point figures' as what is left of each schedule's time, and all of it."""
    out = {}
    rows = list(state["schedules"].values())
    for key in _keys(state):
        values = [r[key]["seconds"] for r in rows if "seconds" in r.get(key, {})]
        if values:
            out[key] = sum(values) / len(values)
    fixed = [r["_seconds"] - sum(v.get("seconds", 0.0) for k, v in r.items() if isinstance(v, dict)) for r in rows]
    if fixed and any("fixed_point" in r for r in rows):
        out["fixed_point"] = max(0.0, sum(fixed) / len(fixed))
    if rows:
        out["all"] = sum(r["_seconds"] for r in rows) / len(rows)
    return out


# ---- the table ----------------------------------------------------------------------------


def summarize(state: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per objective x benchmark: Spearman of the changes with its interval, sign agreement."""
    from ..scoring.stats import spearman, spearman_interval

    keys = _keys(state)
    objectives = [k for k in keys if not _is_bench(state, k)]
    benches = [k for k in keys if _is_bench(state, k)]
    rows = []
    for bench in benches:
        for objective in objectives:
            pairs = []
            for entry in state["schedules"].values():
                a, b = entry.get(objective), entry.get(bench)
                if a is None or b is None or a.get("change") is None:
                    continue
                pairs.append((a["change"], b["change"], b.get("change_interval")))
            x = [p[0] for p in pairs]
            y = [p[1] for p in pairs]
            rho = spearman(x, y) if len(pairs) >= 3 else float("nan")
            lo, hi = spearman_interval(x, y) if len(pairs) >= 3 else (float("nan"), float("nan"))
            row = {"objective": objective, "benchmark": bench, "n": len(pairs), "spearman": _finite(rho),
                   "interval": [_finite(lo), _finite(hi)]}
            outside = [(a, b) for a, b, ci in pairs if ci and (ci[0] > 0 or ci[1] < 0)]
            row["outside_noise"] = len(outside)
            if not objective.startswith("fixed_point"):  # figures are levels, not changes with a sign
                agree = [(a > 0) == (b > 0) for a, b in outside if a != 0]
                row["sign_agreement"] = sum(agree) / len(agree) if agree else None
                row["sign_n"] = len(agree)
            rows.append(row)
    return rows


def versions(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each newer version of a suite against each older one in the same mode, per benchmark: the
    difference of their Spearman correlations with the benchmark, with a bootstrap interval that
    resamples schedules (both versions were scored on the same ones). An interval above 0 says the
    newer version ranks schedules more like the benchmark; one holding 0 says neither is better."""
    import re

    from ..scoring.stats import spearman_difference

    keys = _keys(state)
    parsed = [(k, m.group(1), int(m.group(2)), m.group(3)) for k in keys if not _is_bench(state, k)
              for m in [re.fullmatch(r"(.+)@(\d+):(\w+)", k)] if m]
    rows = []
    for bench in (k for k in keys if _is_bench(state, k)):
        for newer, name, version, mode in parsed:
            for older in [k for k, n, v, m in parsed if (n, m) == (name, mode) and v < version]:
                triples = [(e[newer]["change"], e[older]["change"], e[bench]["change"]) for e in state["schedules"].values()
                           if all(e.get(k, {}).get("change") is not None for k in (newer, older, bench))]
                if not triples:
                    continue
                value, lo, hi = spearman_difference(*zip(*triples))
                rows.append({"benchmark": bench, "newer": newer, "older": older, "n": len(triples),
                             "difference": _finite(value), "interval": [_finite(lo), _finite(hi)]})
    return rows


def _keys(state: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for entry in state["schedules"].values():
        keys += [k for k in entry if not k.startswith("_") and k not in keys]
    return keys


def _is_bench(state: dict[str, Any], key: str) -> bool:
    return key in state["settings"]["benchmarks"]


def _finite(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


# ---- pictures and words -----------------------------------------------------------------


def figures(state: dict[str, Any]) -> dict[str, Any]:
    """One figure per benchmark: a scatter of each objective's change against the benchmark's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = state.get("table") or summarize(state)
    out = {}
    for bench in dict.fromkeys(r["benchmark"] for r in table):
        rows = [r for r in table if r["benchmark"] == bench]
        cols = min(4, len(rows))
        lines = -(-len(rows) // cols)
        fig, axes = plt.subplots(lines, cols, figsize=(4 * cols, 3.4 * lines), squeeze=False)
        for ax in axes.flat[len(rows):]:
            ax.axis("off")
        for ax, row in zip(axes.flat, rows):
            xs, ys, outside = [], [], []
            for entry in state["schedules"].values():
                a, b = entry.get(row["objective"]), entry.get(bench)
                if a is None or b is None or a.get("change") is None:
                    continue
                ci = b.get("change_interval") or [0, 0]
                xs.append(a["change"])
                ys.append(b["change"])
                outside.append(ci[0] > 0 or ci[1] < 0)
            ax.scatter(xs, ys, s=14, c=["tab:red" if o else "tab:gray" for o in outside], alpha=0.8)
            ax.axhline(0, c="black", lw=0.6)
            ax.axvline(0, c="black", lw=0.6)
            rho = row["spearman"]
            lo, hi = row["interval"]
            label = "n/a" if rho is None else f"{rho:+.2f}" + ("" if lo is None else f" [{lo:+.2f}, {hi:+.2f}]")
            ax.set_title(f"{row['objective']}\nSpearman {label}", fontsize=9)
            ax.set_xlabel("objective change" if not row["objective"].startswith("fixed_point") else "figure",
                          fontsize=8)
            ax.set_ylabel(f"{bench} change", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"{state['model']}: objectives against {bench} over {len(state['schedules'])} schedules "
                     "(red: benchmark change outside its noise)", fontsize=10)
        fig.tight_layout()
        out[f"calibration-{bench.replace(':', '-')}.png"] = fig
    return out


def format_table(state: dict[str, Any]) -> list[str]:
    """The summary as aligned text lines, one block per benchmark."""
    table = state.get("table") or []
    lines = [f"calibration of {state['model']}: {len(state['schedules'])} schedules against the unmodified model"]
    for bench in dict.fromkeys(r["benchmark"] for r in table):
        lines.append(f"  vs {bench}")
        for r in (r for r in table if r["benchmark"] == bench):
            rho, (lo, hi) = r["spearman"], r["interval"]
            text = "   n/a" if rho is None else f"{rho:+.2f}"
            ci = "" if lo is None else f" [{lo:+.2f}, {hi:+.2f}]"
            sign = r.get("sign_agreement")
            agree = "" if sign is None else f"  signs agree {100 * sign:.0f}% of {r['sign_n']} outside noise"
            lines.append(f"    {r['objective']:<26} Spearman {text}{ci:<17}{agree}")
        for r in (r for r in state.get("versions") or [] if r["benchmark"] == bench):
            d, (lo, hi) = r["difference"], r["interval"]
            text = "n/a" if d is None else f"{d:+.2f}" + ("" if lo is None else f" [{lo:+.2f}, {hi:+.2f}]")
            lines.append(f"    {r['newer']} against {r['older']}: Spearman difference {text}")
    seconds = state.get("seconds_per_schedule") or {}
    if seconds:
        lines.append("  seconds per schedule: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    return lines


def describe_for_run(state: dict[str, Any] | None, keys: list[str], mode: str) -> list[str]:
    """What `rys-search run` prints about its objectives' calibration (or that there is none)."""
    if state is None:
        return ["no calibration for this model: whether its objectives' changes track real benchmarks is "
                "unmeasured (rys-search calibrate --bench gsm8k=FILE --bench bbh=DIR --bench eqbench=FILE)"]
    lines = [f"calibration ({state['path']}, {len(state['schedules'])} schedules):"]
    for key in keys:
        rows = [r for r in state["table"] if r["objective"] in (f"{key}:{mode}", key)]
        if not rows:
            lines.append(f"  {key} ({mode}): not in this calibration")
            continue
        parts = []
        for r in rows:
            rho, (lo, hi) = r["spearman"], r["interval"]
            parts.append(f"{r['benchmark']} " + ("n/a" if rho is None else f"{rho:+.2f}")
                         + ("" if lo is None else f" [{lo:+.2f}, {hi:+.2f}]"))
        lines.append(f"  {key} ({mode}) Spearman vs " + ", ".join(parts))
    return lines
