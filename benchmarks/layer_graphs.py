"""Layer calls as CUDA graphs against eager layers on a GPU: the same scores, and the seconds a schedule.

    python benchmarks/layer_graphs.py --model SmolLM2-135M-Instruct.Q4_1.gguf --schedules 30

Loads the model twice (RYS_SEARCH_CUDA_GRAPHS=0, then on; both with RYS_SEARCH_COMPILE set to
--compile, 1 by default as with graphs on a GPU, so that only the graphs differ), scores the default probes (math, eq,
reasoning; logprob mode, search split) and fixed_point under the unmodified model and the same
random schedules in both, and prints per objective the largest difference of a score between the
two, then the seconds a schedule of each (mean over the schedules after the first --warm, which
capture their graphs) and the runner's counts (layer calls eager, captured, replayed). On a CPU
there is nothing to compare (graphs are a GPU's); tests/test_graphs.py checks the same bookkeeping
there with emulated replays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectives_speed import random_schedules  # noqa: E402


def run(model: str, graphs: bool, schedules, limit, compile_: str):
    import torch

    from rys_search.loading import load_model
    from rys_search.schedule import LayerSchedule
    from rys_search.scoring import evaluate_probes, get_objective

    os.environ["RYS_SEARCH_CUDA_GRAPHS"] = "1" if graphs else "0"
    os.environ["RYS_SEARCH_COMPILE"] = compile_
    loaded = load_model(model)
    probes = [get_objective(n) for n in ("math", "eq", "reasoning")]
    fixed_point = get_objective("fixed_point")
    scores, seconds = [], []
    for schedule in [LayerSchedule.identity(loaded.n_layers), *schedules]:
        torch.cuda.synchronize()
        start = time.perf_counter()
        results = evaluate_probes(probes, loaded, schedule, split="search", limit=limit)
        point = fixed_point.evaluate(loaded, schedule, limit=limit and 8)
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        scores.append({r.objective: r.score for r in [*results, point]})
    counts = dict(loaded.runtime.graphs.counts) if loaded.runtime.graphs is not None else None
    del loaded
    torch.cuda.empty_cache()
    return scores, seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--schedules", type=int, default=30)
    parser.add_argument("--warm", type=int, default=10, help="schedules left out of the mean (graph captures)")
    parser.add_argument("--limit", type=int, default=None, help="items per probe (default: all)")
    parser.add_argument("--compile", default="1", help="RYS_SEARCH_COMPILE for both runs (0: eager layers)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no GPU: layer graphs are a GPU's (tests/test_graphs.py checks their bookkeeping on a CPU)")
        return
    from rys_search.loading import load_model

    n_layers = load_model(args.model).n_layers
    schedules = random_schedules(n_layers, args.schedules, seed=0)
    eager = run(args.model, False, schedules, args.limit, args.compile)
    graphed = run(args.model, True, schedules, args.limit, args.compile)
    for name in eager[0][0]:
        worst = max(abs(a[name] - b[name]) for a, b in zip(eager[0], graphed[0]))
        print(f"{name:12s} largest score difference over {len(schedules) + 1} schedules: {worst:.6g}")
    for label, (_, seconds, counts) in (("no graphs", eager), ("graphs", graphed)):
        steady = seconds[1 + args.warm:] or seconds[1:]
        print(f"{label:9s} {statistics.mean(steady):.3f} s a schedule over schedules {1 + args.warm + 1}-"
              f"{len(seconds) - 1} (first {seconds[1]:.3f} s); layer calls {counts}")


if __name__ == "__main__":
    main()
