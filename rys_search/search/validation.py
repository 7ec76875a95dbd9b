"""A study's Pareto front checked where it counts: confirmation after the fact, and benchmark files.

    rys-search pareto --study S --bench gsm8k=test.jsonl --bench bbh=bbh/ --bench eqbench=eq.json

`pareto` confirms every front member the study left unconfirmed (its budget ran out, or it was
stopped), then scores every member on each named benchmark file — the unmodified model once —
with paired intervals and parse rates. Results are cached in the study, one key per benchmark
file and member (`bench:<name>:<mode>:<digest>:<schedule>`, the digest covering the file's bytes
and the item limit), so a second call pays nothing and two concurrent calls never overwrite each
other's entries. A member holds when some benchmark improves outside its noise (family-wise over the
benchmarks checked, as confirm.verdict judges gains) without a parse shift (its
parse rate risen beyond the unmodified model's: more answers in the asked format, not better
answers), none gets worse outside its noise, and no benchmark's answers stopped parsing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..schedule import LayerSchedule

__all__ = ["above_baseline", "bench_entries", "cache_key", "holds", "validate_front"]


def _digest(spec: Any) -> str:
    """The bytes of a benchmark file (every file of a BBH folder, by name), the item limit and how
    results are read (benchmarks.reading())."""
    from ..scoring.benchmarks import reading

    h = hashlib.sha256(repr((spec.limit, reading())).encode())
    path = Path(spec.path)
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()[:12]


def cache_key(spec: Any, digest: str, schedule: str) -> str:
    return f"bench:{spec.key}:{digest}:{schedule}"


def bench_entries(attrs: dict[str, Any], schedule: str) -> dict[str, Any]:
    """Every cached benchmark result of one schedule: {"gsm8k:generate": entry, ...}. When one benchmark
    was checked against several files (other digests), the last one stored wins."""
    found: dict[str, Any] = {}
    for key, value in attrs.items():
        if key.startswith("bench:") and key.endswith(f":{schedule}") and key.count(":") >= 4:
            _, name, mode, digest, _ = key.split(":", 4)
            if "parse_shift" not in value and value.get("parse_rate") is not None:  # cached before the check existed
                value = {**value, "parse_shift": above_baseline(attrs.get(f"bench:{name}:{mode}:{digest}:baseline"),
                                                               value["parse_rate"])}
            found[f"{name}:{mode}"] = value
    return found


def above_baseline(baseline: dict[str, Any] | None, rate: float) -> bool:
    """Whether a parse rate lies above the 95% interval of the unmodified model's (from its stored items)."""
    from ..scoring.stats import bootstrap_interval

    flags = [float(i["parsed"]) for i in (baseline or {}).get("items", []) if "parsed" in i]
    return bool(flags) and rate > bootstrap_interval(flags)[1]


def holds(entries: dict[str, Any]) -> bool | None:
    """Whether a member's change holds on the benchmarks (None: no benchmark result)."""
    if not entries:
        return None
    if any(e.get("broken_output") for e in entries.values()):
        return False
    if any(e["change_interval"][1] < 0 for e in entries.values()):
        return False
    from ..scoring.stage import above_zero

    return any(above_zero(e, len(entries)) and not e.get("parse_shift") for e in entries.values())


def validate_front(study: Any, rows: list[dict[str, Any]], specs: list[Any], load: Any,
                   suites: list[str] | None = None) -> int:
    """Score each row's schedule on each benchmark spec that is not cached yet; return how many were
    scored. load() gives the loaded model; it is called only when something is missing."""
    from ..scoring.memory import retry_out_of_memory
    from ..scoring.stage import Stage

    attrs = study.user_attrs
    digests = {spec.key: _digest(spec) for spec in specs}
    missing = [(spec, row["schedule"]) for spec in specs for row in rows
               if cache_key(spec, digests[spec.key], row["schedule"]) not in attrs]
    if not missing:
        return 0
    loaded = load()
    stage = Stage(specs, suites)
    base_key = {spec.key: f"bench:{spec.key}:{digests[spec.key]}:baseline" for spec in specs}
    baseline = {k: attrs[base_key[k]] for k in base_key if base_key[k] in attrs}
    if len(baseline) < len(specs):
        computed = retry_out_of_memory(loaded, lambda: stage.baseline(loaded))
        for key, value in computed.items():
            if key not in baseline:
                baseline[key] = value
                study.set_user_attr(base_key[key], value)
    scored = 0
    for schedule_text in dict.fromkeys(s for _, s in missing):
        schedule = LayerSchedule.parse(schedule_text, n_layers=loaded.n_layers)
        wanted = [spec for spec, s in missing if s == schedule_text]
        if schedule.is_identity(loaded.n_layers):
            row = {spec.key: {"score": baseline[spec.key]["score"], "change": 0.0, "change_interval": [0.0, 0.0],
                              **({"parse_rate": baseline[spec.key]["parse_rate"]}
                                 if baseline[spec.key].get("parse_rate") is not None else {})} for spec in wanted}
        else:
            row = retry_out_of_memory(loaded, lambda: Stage(wanted, suites).measure(
                loaded, schedule, {s.key: baseline[s.key] for s in wanted}))
        for spec in wanted:
            entry = {k: v for k, v in row[spec.key].items() if k != "seconds"}
            study.set_user_attr(cache_key(spec, digests[spec.key], schedule_text), entry)
            scored += 1
    return scored
