"""Where the host's time goes while the engine scores schedules: seconds a schedule, Python's garbage
collections, and cProfile's top functions.

    python benchmarks/host_profile.py --model SmolLM2-135M-Instruct.Q4_1.gguf
    python benchmarks/host_profile.py --model ... --unfreeze      # without load_model's gc.freeze()

The default objectives (benchmarks/throughput.py's Objectives) under the unmodified model and 20
random schedules (warm-up: on a GPU the layer graphs are captured then), then 10 timed schedules
("steady"), then 10 more under cProfile, sorted by own time and by cumulative time. The garbage
collections (gc.callbacks) are counted over the warm-up and the timed schedules.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectives_speed import random_schedules  # noqa: E402
from throughput import Objectives, _identity  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--unfreeze", action="store_true", help="undo load_model's gc.freeze() (a GPU's)")
    parser.add_argument("--limit", type=int, default=None, help="items per probe (default: all)")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()
    import torch

    from rys_search.loading import load_model

    loaded = load_model(args.model)
    if args.unfreeze:
        gc.unfreeze()
    cuda = loaded.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    spent = {"seconds": 0.0, "collections": 0, "full": 0, "start": 0.0}

    def collected(phase, info):
        if phase == "start":
            spent["start"] = time.perf_counter()
        else:
            spent["seconds"] += time.perf_counter() - spent["start"]
            spent["collections"] += 1
            spent["full"] += info["generation"] == 2

    gc.callbacks.append(collected)
    workload = Objectives(limit=args.limit)
    schedules = random_schedules(loaded.n_layers, 40, seed=1)
    start = time.perf_counter()
    for schedule in [_identity(loaded), *schedules[:20]]:
        workload.run(loaded, schedule)
    sync()
    print(f"warm-up, the unmodified model and 20 schedules: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    for schedule in schedules[20:30]:
        workload.run(loaded, schedule)
    sync()
    graphs = loaded.runtime.graphs
    print(f"steady: {(time.perf_counter() - start) / 10:.3f} s a schedule; layer calls "
          f"{dict(graphs.counts) if graphs is not None else 'eager (no graphs)'}")
    gc.callbacks.remove(collected)
    print(f"garbage collections over those 31 schedules: {spent['seconds']:.3f} s in {spent['collections']} "
          f"({spent['full']} full){'; gc.freeze() undone' if args.unfreeze else ''}")
    profile = cProfile.Profile()
    profile.enable()
    for schedule in schedules[30:]:
        workload.run(loaded, schedule)
    sync()
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumtime").print_stats(args.top)


if __name__ == "__main__":
    main()
