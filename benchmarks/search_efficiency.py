"""Search efficiency: trials each sampler needs to reach 95% of the exhaustive grid's hypervolume.

    python benchmarks/search_efficiency.py --model default --limit 64
    python benchmarks/search_efficiency.py --samplers tpe,nsga2,random --seeds 0,1,2 --max-trials 150

First the exhaustive contiguous (i, j) grid of the RYS literature (one block of width 1-8 run
twice, inside layers 1..n-2) is scored once; its Pareto front over math / EQ / reasoning gives
the target hypervolume (reference point: the worst grid score of each objective). Then each
sampler searches the default study's space (up to two blocks, one or two extra passes, at most
16 added layers) from each seed, and the script prints the first trial whose front reaches 95%
of the grid's hypervolume. Scores are memoised by schedule (the model is deterministic), and
--cache FILE keeps them across runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OBJECTIVES = ("math", "eq", "reasoning")


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume dominated by points (maximised) above ref, exactly, for 2 or 3 objectives."""
    pts = [tuple(max(p[k], ref[k]) for k in range(len(ref))) for p in points]
    pts = [p for p in pts if all(p[k] > ref[k] for k in range(len(ref)))]
    if not pts:
        return 0.0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--limit", type=int, default=64, help="items per objective")
    parser.add_argument("--samplers", default="tpe,nsga2,random")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-trials", type=int, default=150)
    parser.add_argument("--cache", default=None, help="JSON file of scores by schedule, read and written")
    args = parser.parse_args()

    import optuna
    from transformers.utils import logging

    from rys_search.loading import load_model
    from rys_search.schedule import LayerSchedule
    from rys_search.scoring import get_objective
    from rys_search.search.config import SearchSpace, StudyConfig, load_config
    from rys_search.search.space import UNMODIFIED, grid_pairs, suggest_schedule
    from rys_search.search.storage import make_sampler

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_model(args.model, device=args.device)
    n = loaded.n_layers
    objectives = [get_objective(name) for name in OBJECTIVES]
    cache_path = Path(args.cache) if args.cache else None
    memo: dict[str, list[float]] = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    spent = {"evaluations": 0, "seconds": 0.0}

    def score(schedule: LayerSchedule) -> list[float]:
        key = str(schedule)
        if key not in memo:
            start = time.perf_counter()
            memo[key] = [o.evaluate(loaded, schedule, limit=args.limit).score for o in objectives]
            spent["seconds"] += time.perf_counter() - start
            spent["evaluations"] += 1
            if cache_path and spent["evaluations"] % 25 == 0:
                cache_path.write_text(json.dumps(memo))
        return memo[key]

    grid_space = SearchSpace(max_blocks=1, width=(1, 8), extra_passes=(1, 1), max_added_layers=8, region=(1, -2))
    pairs = grid_pairs(n, grid_space)
    grid_points = []
    for pair in pairs:
        schedule = LayerSchedule.identity(n) if pair == "none" else LayerSchedule.rys(n, *map(int, pair.split(",")))
        grid_points.append(tuple(score(schedule)))
    ref = tuple(min(p[k] for p in grid_points) - 1e-9 for k in range(3))
    target = hypervolume(grid_points, ref)
    base = score(LayerSchedule.identity(n))
    print(f"model {loaded.source.name} ({n} layers), {args.limit} items per objective, logprob mode")
    print(f"grid: {len(pairs)} schedules (unmodified + every (i, j) of width 1-8 in layers 1..{n - 2})")
    print(f"  unmodified math {base[0]:.2f}, eq {base[1]:.2f}, reasoning {base[2]:.2f}; "
          f"grid hypervolume {target:.4g} over reference {tuple(round(r, 2) for r in ref)}")

    space = load_config().space
    config = StudyConfig()
    results = {}
    for sampler_name in args.samplers.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            from dataclasses import replace

            sampler = make_sampler(replace(config, sampler=sampler_name, seed=seed))
            study = optuna.create_study(directions=["maximize"] * 3, sampler=sampler)
            study.enqueue_trial({}, user_attrs={UNMODIFIED: True})
            points, reached = [], None
            for number in range(args.max_trials):
                trial = study.ask()
                schedule = suggest_schedule(trial, n, space)
                values = score(schedule)
                study.tell(trial, values)
                points.append(tuple(values))
                if reached is None and hypervolume(points, ref) >= 0.95 * target:
                    reached = number + 1
                    break
            final = hypervolume(points, ref) / target if target > 0 else float("nan")
            results[(sampler_name, seed)] = reached
            shown = reached if reached is not None else f">{args.max_trials}"
            print(f"  {sampler_name:<7} seed {seed}: {shown} trials to 95% of the grid hypervolume "
                  f"(reached {final:.1%})")
    for sampler_name in args.samplers.split(","):
        got = [v for (s, _), v in results.items() if s == sampler_name]
        hits = [v for v in got if v is not None]
        mean = f"{sum(hits) / len(hits):.1f}" if hits else "-"
        print(f"{sampler_name:<7} mean trials to 95%: {mean} ({len(hits)}/{len(got)} seeds reached it within {args.max_trials}); "
              f"the grid took {len(pairs)}")
    print(f"evaluations run: {spent['evaluations']} in {spent['seconds']:.1f} s "
          f"({spent['seconds'] / max(1, spent['evaluations']):.2f} s each); memoised: {len(memo)}")
    if cache_path:
        cache_path.write_text(json.dumps(memo))


if __name__ == "__main__":
    main()
