"""The engine's forward options side by side: compiled decoder layers, and the shared start.

    python benchmarks/forward_options.py --shape qwen3-8b --tokenizer .stage/smol.gguf   # random weights, GPU
    python benchmarks/forward_options.py --model .stage/smol.gguf
    python benchmarks/forward_options.py --model .stage/qwen.gguf --schedules 5

Four variants on one loaded model: eager or compiled layers (rys_search/compiling.py, what
RYS_SEARCH_COMPILE sets) x whole sequences or the shared start (the chat template's system turn
run once per call, scoring/engine.py, what RYS_SEARCH_SHARED_START sets). Each runs the default
objectives (math, eq, reasoning in logprob mode, and fixed_point; search split, all items or --limit)
first on the unmodified model (warm-up: it compiles and records the prefix states; its
seconds are printed as `first`), then on --schedules schedules (objectives_speed.py's
generator, fixed seed). Printed per variant: seconds per schedule (mean), the first call, and
the largest difference of any objective's score, on any schedule, from eager whole sequences
(points; on random weights the scores mean nothing, their agreement still does).
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

PROBES = ("math", "eq", "reasoning")


def run(loaded, schedule, probes, fixed_point, limit=None) -> dict[str, float]:
    from rys_search.scoring.probes import evaluate_probes

    scores = {"fixed_point": fixed_point.evaluate(loaded, schedule, limit=limit and 8).score}
    for result in evaluate_probes(probes, loaded, schedule, split="search", limit=limit):
        scores[result.objective] = result.score
    return scores


def timed(fn, cuda):
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", help="random weights of this shape (objectives_speed.SHAPES) instead of --model")
    parser.add_argument("--tokenizer", help="model whose tokenizer --shape uses (default: --model)")
    parser.add_argument("--schedules", type=int, default=5)
    parser.add_argument("--mode", default="default", help="torch.compile mode for the compiled variants")
    parser.add_argument("--variants", default="eager-whole,eager-shared,compiled-whole,compiled-shared")
    parser.add_argument("--limit", type=int, default=None, help="items per objective (default: the whole split)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    os.environ["RYS_SEARCH_COMPILE"] = "0"  # this script compiles the layers itself, per variant
    from transformers.utils import logging

    from rys_search.compiling import compile_layers, uncompile_layers
    from rys_search.loading import load_model
    from rys_search.schedule import LayerSchedule
    from rys_search.scoring import get_objective

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    if args.shape:
        from objectives_speed import build_shape

        tokenizer = load_model(args.tokenizer or args.model, device="cpu").tokenizer  # SmolLM2's ids fit 151936
        loaded = build_shape(args.shape, tokenizer, args.device)
    else:
        loaded = load_model(args.model, device=args.device)
        print(f"loaded {loaded.source.name} in {loaded.load_seconds:.1f} s")
    cuda = loaded.device.type == "cuda"
    runtime = loaded.runtime
    probes = [get_objective(n) for n in PROBES]
    fixed_point = get_objective("fixed_point")
    schedules = random_schedules(loaded.n_layers, args.schedules)
    identity = LayerSchedule.identity(loaded.n_layers)
    print(f"model {loaded.source.name}: {loaded.n_layers} layers on {loaded.device}, {loaded.dtype}; "
          f"{len(schedules)} schedules; compile mode {args.mode}")
    reference: list[dict[str, float]] | None = None
    rows = []
    for variant in args.variants.split(","):
        layers, sharing = variant.split("-")
        modules = [*runtime._original_layers, *runtime._clones.values()]
        if layers == "compiled":
            compile_layers(modules, mode=args.mode)
        else:
            uncompile_layers(modules)
        os.environ["RYS_SEARCH_SHARED_START"] = "1" if sharing == "shared" else "0"
        if runtime.prefix_cache is not None:
            runtime.prefix_cache.clear()
        first, _ = timed(lambda: run(loaded, identity, probes, fixed_point, args.limit), cuda)
        seconds, scores = [], []
        for schedule in schedules:
            t, got = timed(lambda: run(loaded, schedule, probes, fixed_point, args.limit), cuda)
            seconds.append(t)
            scores.append(got)
        if reference is None:
            reference = scores
        worst = {k: max(abs(s[k] - r[k]) for s, r in zip(scores, reference)) for k in scores[0]}
        rows.append((variant, statistics.fmean(seconds), first, worst))
        print(f"  {variant:<16} {statistics.fmean(seconds):.3f} s per schedule ({', '.join(f'{t:.3f}' for t in seconds)}); "
              f"first call {first:.1f} s; largest score difference from {args.variants.split(',')[0]}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()), flush=True)
    base = rows[0][1]
    print("summary: " + "; ".join(f"{v} {s:.3f} s ({s / base:.2f}x)" for v, s, _, _ in rows))


if __name__ == "__main__":
    main()
