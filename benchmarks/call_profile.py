"""Where a schedule's GPU time goes: each forward call of the engine timed on the GPU and the host, and the kernels.

    python benchmarks/call_profile.py --model SmolLM2-135M-Instruct.Q4_1.gguf

The default objectives (benchmarks/throughput.py's Objectives) under the unmodified model and the
10 schedules throughput.py draws (warm-up: graphs captured, shapes compiled), then each of
--schedules of them again with a CUDA event before and after every runtime.forward call and at
the schedule's start and end. The GPU runs behind the host, so the time between a call's two
events is the GPU's time for that call's kernels; what lies between calls (reading the picks,
selecting cache rows, and the GPU waiting for the host) is reported as "between calls"; the host's
own clock around each call gives the time it took to queue it. Calls are grouped by kind (whole sequences,
a KV-cache continuation, the shared start) and by the number of decoder layers they ran. Last,
throughput.py's profile of two schedules: GPU busy against wall, the top kernels by GPU time and
the top operators by host time.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectives_speed import random_schedules  # noqa: E402
from throughput import Objectives, _identity, profile  # noqa: E402


def timed_calls(loaded, workload, schedule):
    """[(description, GPU ms, host ms)] of each forward call under schedule, and the schedule's GPU ms."""
    import torch

    runtime = loaded.runtime
    forward = runtime.forward
    marks = []

    def counted(key=None, **inputs):
        ids = inputs.get("input_ids", inputs.get("inputs_embeds"))
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start = inputs.get("start")
        if start is None:
            start = runtime.start_for([key])
        layers = len(runtime.schedule) - start
        cached = any(k in inputs and inputs[k] is not None for k in ("past_key_values", "cache"))
        keep = inputs.get("logits_to_keep") or ids.shape[1]
        kind = "continuation" if cached else ("start" if ids.shape[0] == 1 else "whole")
        host = time.perf_counter()
        begin.record()
        out = forward(key, **inputs)
        end.record()
        marks.append(((kind, tuple(ids.shape[:2]), layers, keep), begin, end, time.perf_counter() - host))
        return out

    runtime.forward = counted
    first, last = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    try:
        torch.cuda.synchronize()
        first.record()
        workload.run(loaded, schedule)
        last.record()
        torch.cuda.synchronize()
    finally:
        del runtime.forward
    return [(what, b.elapsed_time(e), 1000 * host) for what, b, e, host in marks], first.elapsed_time(last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--schedules", type=int, default=3, help="schedules timed call by call")
    parser.add_argument("--calls", type=int, default=40, help="calls listed for the first timed schedule")
    parser.add_argument("--kernels", type=int, default=30, help="kernels and operators listed (0: no profile)")
    parser.add_argument("--call-cost", type=int, help="padded tokens a forward call is weighed as (default: the engine's)")
    args = parser.parse_args()
    import torch

    from rys_search.loading import load_model

    loaded = load_model(args.model)
    if args.call_cost is not None:
        loaded.call_cost = args.call_cost
    if loaded.device.type != "cuda":
        raise SystemExit("call_profile.py times GPU work: it needs a GPU")
    workload = Objectives()
    schedules = random_schedules(loaded.n_layers, 10)
    for schedule in [_identity(loaded), *schedules]:
        workload.run(loaded, schedule)
    torch.cuda.synchronize()
    by_kind = collections.defaultdict(lambda: [0, 0.0, 0])  # kind -> calls, ms, layer calls
    totals = []
    for n, schedule in enumerate(schedules[1 : 1 + args.schedules]):
        calls, total = timed_calls(loaded, workload, schedule)
        totals.append(total)
        inside = sum(ms for _, ms, _ in calls)
        print(f"schedule {schedule}: GPU {total:.1f} ms from first to last event, {len(calls)} forward calls "
              f"{inside:.1f} ms, between calls {total - inside:.1f} ms; the host queued the calls in "
              f"{sum(host for *_, host in calls):.1f} ms")
        if n == 0:
            for (kind, shape, layers, keep), ms, host in calls[: args.calls]:
                print(f"  {kind:12} rows x length {shape[0]:4} x {shape[1]:4}  layers {layers:3}  logits kept {keep:4}"
                      f"  GPU {ms:7.3f} ms  {1000 * ms / max(layers, 1):6.1f} us a layer; host {host:7.3f} ms")
        for (kind, shape, layers, keep), ms, _ in calls:
            row = by_kind[kind]
            row[0] += 1
            row[1] += ms
            row[2] += layers
    count = len(totals)
    print(f"\nmean over {count} schedules: {sum(totals) / count:.1f} ms GPU a schedule")
    for kind, (calls, ms, layers) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:12} {calls / count:5.1f} calls  {ms / count:7.1f} ms  {layers / count:6.0f} layer calls  "
              f"{1000 * ms / max(layers, 1):6.1f} us a layer call")
    if args.kernels:
        profile(loaded, workload, schedules[1:3], rows=args.kernels)


if __name__ == "__main__":
    main()
