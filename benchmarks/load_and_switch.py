"""Load times of a model and the time to switch its schedule; prints figures.

    python benchmarks/load_and_switch.py                       # the default model, CPU or GPU
    python benchmarks/load_and_switch.py --model M --switches 1000

The first load uses an empty dequantization cache in a temporary folder (a GGUF is
converted and saved), the second load reads that cache. A switch is one set_schedule() to a
random two-block schedule; the figure is the median over --switches switches.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--switches", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        os.environ["RYS_SEARCH_CACHE"] = cache
        import torch  # noqa: F401  (imported before timing: the import is not part of a load)
        import transformers  # noqa: F401
        from transformers.utils import logging

        from rys_search.loading import load_model
        from rys_search.schedule import Block, LayerSchedule

        logging.disable_progress_bar()
        first = load_model(args.model, device=args.device)
        second = load_model(args.model, device=args.device)
        n = second.n_layers
        print(f"model           {second.source.name} ({second.family.name}, {n} layers, {second.device}, {second.dtype})")
        print(f"first load      {first.load_seconds:8.2f} s   (from cache: {first.from_cache})")
        print(f"cached load     {second.load_seconds:8.2f} s   (from cache: {second.from_cache})")

        rng = random.Random(0)
        schedules = []
        while len(schedules) < 64:
            a = rng.randrange(0, n // 2)
            b = rng.randrange(n // 2, n - 1)
            blocks = [Block(a, a + rng.randrange(0, 3), rng.randrange(1, 3)), Block(b, b, 1)]
            if blocks[0].end < b:
                schedules.append(LayerSchedule.from_blocks(n, blocks))
        runtime = second.runtime
        times = []
        for k in range(args.switches):
            start = time.perf_counter()
            runtime.set_schedule(schedules[k % len(schedules)])
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        runtime.reset()
        reset = time.perf_counter() - start
        print(f"switch schedule {statistics.median(times) * 1e3:8.3f} ms median, {max(times) * 1e3:.3f} ms max "
              f"over {args.switches} switches ({len(schedules)} schedules)")
        print(f"reset identity  {reset * 1e3:8.3f} ms")
        print(f"weight copies   {runtime.weight_copies()}")


if __name__ == "__main__":
    main()
