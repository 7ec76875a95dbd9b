"""Search efficiency: trials each sampler needs to reach 95% of the exhaustive grid's hypervolume.

    python benchmarks/search_efficiency.py --model .stage/qwen.gguf --cache scores-qwen.json
    python benchmarks/search_efficiency.py --samplers tpe,nsga2,gp,random --seeds 0,1,2 --max-trials 150
    python benchmarks/search_efficiency.py --model default --limit 16 --max-trials 40 --samplers tpe,random --seeds 0
    python benchmarks/search_efficiency.py --samplers tpe,tpe-eager,tpe-independent,tpe-startup20 ...   # TPE settings

First the exhaustive contiguous (i, j) grid of the RYS literature (one block of width 1-8 run
twice, inside layers 1..n-2) is scored; its Pareto front over math / EQ / reasoning gives the
target hypervolume (reference point: the worst grid score of each objective). Then each
sampler searches the default study's space (up to two blocks, one or two extra passes, at most
16 added layers) from each seed, in the encoding a study gives it (space.encoding "auto":
define-by-run for tpe and random, fixed for nsga2, nsga3 and gp; --encoding forces one), and
the script prints the first trial whose front reaches 95% of the grid's hypervolume and the
share reached after 50, 100 and --max-trials trials. As in a study, a trial whose schedule
was scored before is a pruned duplicate (it counts as a trial; the sampler learns nothing
from it); the fixed-point screen is not applied.

Every schedule is scored once per run, whichever sampler or seed proposes it (the model is
deterministic; the three probes share one engine pass), and --cache FILE keeps the scores
across runs: the file records the model, the item limit and the objectives, and a file made
with other settings is refused. With the cache of an earlier run, a rerun of all samplers and
seeds costs only the sampler time and the schedules not yet scored.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

OBJECTIVES = ("math", "eq", "reasoning")
TARGET = 0.95
TPE_VARIANTS = {  # --samplers names for TPE settings other than the study's (search/tpe.py)
    "tpe-eager": dict(multivariate=True, group=True),  # Optuna's own: every group sampled at a trial's start
    "tpe-independent": dict(constant_liar=True),
    "tpe-startup20": dict(multivariate=True, group=True, constant_liar=True, n_startup_trials=20),
}


def pareto(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """The points no other point dominates (maximised), duplicates once."""
    unique = sorted(set(points), reverse=True)
    front: list[tuple[float, ...]] = []
    for p in unique:  # sorted descending: a dominating point comes before what it dominates
        if not any(all(q[k] >= p[k] for k in range(len(p))) for q in front):
            front.append(p)
    return front


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume dominated by points (maximised) above ref, exactly, for 2 or 3 objectives."""
    pts = [tuple(max(p[k], ref[k]) for k in range(len(ref))) for p in points]
    pts = [p for p in pts if all(p[k] > ref[k] for k in range(len(ref)))]
    if not pts:
        return 0.0
    pts = pareto(pts)
    if len(ref) == 2:
        xs = sorted(pts, key=lambda p: -p[0])
        total = 0.0
        best_y = ref[1]
        for k, (x, y) in enumerate(xs):
            best_y = max(best_y, y)
            next_x = xs[k + 1][0] if k + 1 < len(xs) else ref[0]
            total += (x - next_x) * (best_y - ref[1])
        return total
    xs = sorted(pts, key=lambda p: -p[0])
    total = 0.0
    for k in range(len(xs)):
        next_x = xs[k + 1][0] if k + 1 < len(xs) else ref[0]
        width = xs[k][0] - next_x
        if width > 0:
            total += width * hypervolume([p[1:] for p in xs[: k + 1]], ref[1:])
    return total


class ScoreCache:
    """Scores by schedule, for one model, item limit and objective set; optionally kept in a file."""

    def __init__(self, path: str | None, facts: dict):
        self.path = Path(path) if path else None
        self.facts = facts
        self.scores: dict[str, list[float]] = {}
        if self.path and self.path.is_file():
            data = json.loads(self.path.read_text())
            stored = {k: data.get(k) for k in facts}
            if "scores" not in data or stored != facts:
                raise SystemExit(f"{self.path} holds scores of other settings ({stored}); this run: {facts}. "
                                 "Name another --cache file.")
            self.scores = data["scores"]
        self.loaded = len(self.scores)

    def save(self) -> None:
        if self.path:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(json.dumps({**self.facts, "scores": self.scores}))
            tmp.replace(self.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--limit", type=int, default=64, help="items per objective (0: all)")
    parser.add_argument("--samplers", default="tpe,nsga2,gp,random")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-trials", type=int, default=150)
    parser.add_argument("--encoding", default="auto", choices=["auto", "define-by-run", "fixed"])
    parser.add_argument("--cache", default=None, help="JSON file of scores by schedule, read and written")
    args = parser.parse_args()

    import optuna
    from transformers.utils import logging

    from rys_search.loading import load_model
    from rys_search.schedule import LayerSchedule
    from rys_search.scoring import evaluate_probes, get_objective
    from rys_search.search.config import SearchSpace, load_config
    from rys_search.search.encoding import suggest_fixed
    from rys_search.search.space import UNMODIFIED, grid_pairs, suggest_schedule
    from rys_search.search.storage import make_sampler

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    loaded = load_model(args.model, device=args.device)
    load_seconds = time.perf_counter() - started
    n = loaded.n_layers
    period = loaded.family.repeat_period
    limit = args.limit or None
    objectives = [get_objective(name) for name in OBJECTIVES]
    cache = ScoreCache(args.cache, {"model": str(loaded.source.location), "limit": args.limit, "objectives": list(OBJECTIVES)})
    spent = {"evaluations": 0, "seconds": 0.0}

    def score(schedule: LayerSchedule) -> list[float]:
        key = str(schedule)
        if key not in cache.scores:
            start = time.perf_counter()
            cache.scores[key] = [r.score for r in evaluate_probes(objectives, loaded, schedule, limit=limit)]
            spent["seconds"] += time.perf_counter() - start
            spent["evaluations"] += 1
            if spent["evaluations"] % 50 == 0:
                cache.save()
        return cache.scores[key]

    grid_space = SearchSpace(max_blocks=1, width=(1, 8), extra_passes=(1, 1), max_added_layers=8, region=(1, -2))
    pairs = grid_pairs(n, grid_space, period)
    grid_points = []
    for pair in pairs:
        schedule = LayerSchedule.identity(n) if pair == "none" else LayerSchedule.rys(n, *map(int, pair.split(",")))
        grid_points.append(tuple(score(schedule)))
    cache.save()
    ref = tuple(min(p[k] for p in grid_points) - 1e-9 for k in range(3))
    target = hypervolume(grid_points, ref)
    base = score(LayerSchedule.identity(n))
    print(f"model {loaded.source.name} ({n} layers, loaded in {load_seconds:.1f} s), "
          f"{args.limit or 'all'} items per objective, logprob mode; cache: {cache.loaded} schedules read")
    print(f"grid: {len(pairs)} schedules (unmodified + every (i, j) of width 1-8 in layers 1..{n - 2})")
    print(f"  unmodified math {base[0]:.2f}, eq {base[1]:.2f}, reasoning {base[2]:.2f}; "
          f"grid hypervolume {target:.4g} over reference {tuple(round(r, 2) for r in ref)}")

    config = load_config()
    if args.encoding != "auto":
        config = replace(config, space=replace(config.space, encoding=args.encoding))
    marks = sorted({m for m in (50, 100) if m < args.max_trials} | {args.max_trials})
    results: dict[tuple[str, int], dict] = {}
    samplers = args.samplers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for sampler_name in samplers:
        chosen = replace(config, sampler="tpe" if sampler_name in TPE_VARIANTS else sampler_name)
        encoding = chosen.encoding()
        suggest = suggest_fixed if encoding == "fixed" else suggest_schedule
        for seed in seeds:
            sampler_seconds = 0.0
            sampler = make_sampler(replace(chosen, seed=seed))
            if sampler_name in TPE_VARIANTS:  # TPE with other settings than the study's
                sampler = optuna.samplers.TPESampler(seed=seed, **TPE_VARIANTS[sampler_name])
            study = optuna.create_study(directions=["maximize"] * 3, sampler=sampler)
            study.enqueue_trial({}, user_attrs={UNMODIFIED: True})
            points, seen, reached, shares, duplicates = [], set(), None, {}, 0
            front_hv = 0.0
            for number in range(1, args.max_trials + 1):
                t0 = time.perf_counter()
                trial = study.ask()
                schedule = suggest(trial, n, config.space, period)
                sampler_seconds += time.perf_counter() - t0
                key = str(schedule)
                if key in seen:  # the study prunes a duplicate: a trial spent, nothing learned
                    duplicates += 1
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    seen.add(key)
                    values = score(schedule)
                    t0 = time.perf_counter()
                    study.tell(trial, values)
                    sampler_seconds += time.perf_counter() - t0
                    points.append(tuple(values))
                    front_hv = hypervolume(points, ref)
                if reached is None and front_hv >= TARGET * target:
                    reached = number
                if number in marks:
                    shares[number] = front_hv / target if target > 0 else float("nan")
            results[(sampler_name, seed)] = {"reached": reached, "shares": shares, "duplicates": duplicates,
                                             "sampler_seconds": sampler_seconds}
            shown = reached if reached is not None else f">{args.max_trials}"
            print(f"  {sampler_name:<7} ({encoding}) seed {seed}: {shown} trials to {TARGET:.0%} of the grid hypervolume; "
                  + ", ".join(f"{shares[m]:.1%} at {m}" for m in marks)
                  + f"; {duplicates} duplicates; sampler {sampler_seconds:.1f} s", flush=True)
        cache.save()
    print(f"summary over seeds {seeds} (the grid took {len(pairs)} trials):")
    for sampler_name in samplers:
        got = [results[(sampler_name, s)] for s in seeds]
        hits = [g["reached"] for g in got if g["reached"] is not None]
        mean = f"{statistics.fmean(hits):.1f}" if hits else "-"
        print(f"  {sampler_name:<7} mean trials to {TARGET:.0%}: {mean} ({len(hits)}/{len(got)} seeds within {args.max_trials}); "
              + ", ".join(f"mean {statistics.fmean(g['shares'][m] for g in got):.1%} at {m}" for m in marks)
              + f"; duplicates {statistics.fmean(g['duplicates'] for g in got):.0f}")
    print(f"evaluations run: {spent['evaluations']} in {spent['seconds']:.1f} s "
          f"({spent['seconds'] / max(1, spent['evaluations']):.2f} s each); schedules cached: {len(cache.scores)}; "
          f"wall {time.perf_counter() - started:.0f} s")
    cache.save()


if __name__ == "__main__":
    main()
