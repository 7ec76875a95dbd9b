"""Three ways to score a schedule, side by side: seconds, tokens/s, TFLOP/s, peak memory.

    python benchmarks/throughput.py --model SmolLM2-135M-Instruct.Q4_1.gguf      # real weights
    python benchmarks/throughput.py --shape qwen3-8b --tokenizer DIR             # random weights on the GPU (DIR or a .gguf)
    python benchmarks/throughput.py --shape qwen3-8b --tokenizer DIR --workload synthetic   # 512 x 128 tokens

(a) engine: the evaluation path `rys-search run` uses (sorted batches, logits only where
    scored, shared prompts run once, and the unmodified model's hidden states before each
    schedule's first deviation reused from the prefix cache);
(b) plain: the same weight-shared batched forward with every layer run (prefix cache off);
(c) copy: a materialised copy of the schedule (every virtual layer's weights copied into a
    new model, the copy's time counted) run one sequence at a time, as a per-request server
    would. It is timed on a subsample (--copy-limit items per probe, 8 passages, 32 synthetic
    sequences) and scaled to the whole workload by tokens; the output says so.

Workloads: `objectives` (default): the default search objectives, math, eq and reasoning in
logprob mode plus fixed_point, search split; `synthetic`: 512 random prompts of 128 tokens,
one scored token each (the workload of ../shared/GPU.md). Schedules repeat one or two
blocks of 3 to 8 layers (benchmarks/objectives_speed.py's generator, fixed seed); each variant
first runs the unmodified model once (warm-up; for (a) it records the prefix states). The
figures are means over the schedules after the first (on a GPU the first pays torch.compile's
compiles for new shapes; every schedule's seconds are printed). Schedules are timed with no
FLOP-counting hook installed (a global module hook changes what torch.compile builds: guard
failures, recompiles, graph breaks); the FLOPs are counted in a second, untimed pass.

FLOPs are counted from what each layer actually ran (2 x weights per token, attention at half
the call's length, the LM head at the kept positions); the peak is an 8192^3 bf16 matrix
product measured at start. `dense` TFLOP/s is the full schedule's FLOPs over the time, what a
forward without reuse would have to sustain. Peak memory is torch's max allocated during the
variant's schedules (weights, prefix cache and activations). Last, the memory check: peak with
a 9-layer block repeated once against the unmodified model's, both under (a).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectives_speed import SHAPES, build_shape, random_schedules  # noqa: E402  (the 8B shape, the schedules drawn)

PROBES = ("math", "eq", "reasoning")




# ---- counting ------------------------------------------------------------------------------


class Flops:
    """Counts the FLOPs a model runs, from global module hooks (clones of a layer made earlier keep
    copies of its own hook tables, so a hook added to a source layer later would miss them)."""

    def __init__(self, model, layers, config):
        from torch.nn.modules.module import register_module_forward_pre_hook

        self.total = 0.0
        layer_type = type(layers[0])
        per_layer = sum(p.numel() for n, p in layers[0].named_parameters() if p.dim() == 2)
        heads = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
        lm_head = model.get_output_embeddings()
        head = lm_head.weight.numel()

        def hook(module, args):
            if type(module) is layer_type:  # attention at about half the call's length (short prompts: small)
                b, t = args[0].shape[0], args[0].shape[1]
                self.total += b * t * (2.0 * per_layer + 4.0 * (t + 1) / 2 * heads)
            elif module is lm_head:
                self.total += 2.0 * args[0].shape[0] * args[0].shape[1] * head

        self.handles = [register_module_forward_pre_hook(hook)]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def matmul_peak() -> float:
    """TFLOP/s of an 8192^3 bf16 matrix product on random data (median of 20 after warm-up)."""
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    return 2 * n**3 / statistics.median(times) / 1e12


# ---- models --------------------------------------------------------------------------------


def materialise(loaded, path):
    """A new model whose layer k holds a copy of the weights of source layer path[k]."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from rys_search.loading import wrap_model

    config = copy.deepcopy(loaded.runtime.config)
    for key, value in loaded.family.remap(loaded.runtime._original_config, path).items():
        setattr(config, key, value)
    with torch.device("meta"):
        dup = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    dup.to_empty(device=loaded.device)
    source = loaded.model.state_dict(keep_vars=True) | dict(loaded.model.named_buffers())
    marker = "." + loaded.family.layers.rpartition(".")[2] + "."
    with torch.no_grad():
        for name, tensor in list(dup.state_dict(keep_vars=True).items()) + list(dup.named_buffers()):
            if marker in name:
                head, rest = name.split(marker, 1)
                index, tail = rest.split(".", 1)
                name = f"{head}{marker}{path[int(index)]}.{tail}"
            tensor.copy_(source[name])
    out = wrap_model(dup, loaded.tokenizer, "copy")
    out.runtime.prefix_cache = None
    return out


# ---- workloads -----------------------------------------------------------------------------


class Objectives:
    """The default search objectives, evaluated as StudyRunner does."""

    def __init__(self, limit=None):
        from rys_search.scoring import get_objective

        self.probes = [get_objective(n) for n in PROBES]
        self.fixed_point = get_objective("fixed_point")
        self.limit = limit

    def run(self, loaded, schedule) -> dict[str, int]:
        from rys_search.scoring.probes import evaluate_probes

        tokens = {"fixed_point": self.fixed_point.evaluate(loaded, schedule, limit=self.limit and 8).tokens}
        for result in evaluate_probes(self.probes, loaded, schedule, split="search", limit=self.limit):
            tokens[result.objective] = result.tokens
        return tokens

    def run_copy(self, copy_loaded, loaded, schedule) -> dict[str, int]:
        """The probes on the copy one sequence at a time; fixed_point as its two passes, one passage at a time."""
        import torch

        copy_loaded.token_budget = 1
        tokens = {}
        for probe in self.probes:
            tokens[probe.name] = probe.evaluate(copy_loaded, None, split="search", limit=self.limit).tokens
        count = 0
        for text in self.fixed_point.passages(8):
            ids = torch.tensor([list(loaded.tokenizer(text)["input_ids"])[:64]], device=loaded.device)
            with torch.no_grad():
                copy_loaded.model(ids).logits.float().log_softmax(-1)
                with loaded.runtime.using(_identity(loaded)):
                    loaded.model(ids).logits.float().log_softmax(-1)
            count += 2 * ids.shape[1]
        tokens["fixed_point"] = count
        return tokens


class Synthetic:
    """512 random prompts of 128 tokens, the next token scored at the last position."""

    def __init__(self, loaded, count=512, length=128, seed=0):
        from rys_search.scoring.engine import Request

        rng = random.Random(seed)
        vocab = len(loaded.tokenizer)
        self.requests = []
        for _ in range(count):
            ids = [rng.randrange(100, vocab) for _ in range(length)]
            self.requests.append(Request(ids, [(length, [rng.randrange(100, vocab)])]))
        self.limit = None

    def run(self, loaded, schedule, requests=None) -> dict[str, int]:
        from rys_search.scoring.engine import token_logprobs

        with loaded.runtime.using(schedule):
            _, tokens = token_logprobs(loaded, requests or self.requests)
        return {"synthetic": tokens}

    def run_copy(self, copy_loaded, loaded, schedule) -> dict[str, int]:
        copy_loaded.token_budget = 1
        return self.run(copy_loaded, _identity(copy_loaded), self.requests[:32])


def _identity(loaded):
    from rys_search.schedule import LayerSchedule

    return LayerSchedule.identity(loaded.n_layers)


# ---- measuring -----------------------------------------------------------------------------


def _free():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(fn, cuda):
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def measure(loaded, workload, schedules, variant, full_tokens=None):
    """Mean seconds, tokens, FLOPs, FLOPs of the dense schedule, peak memory over the schedules."""
    import torch

    cuda = loaded.device.type == "cuda"
    runtime = loaded.runtime
    seconds, tokens, flops, extra = [], [], [], []
    if variant == "copy":
        for schedule in schedules:
            copy_seconds, copy_loaded = timed(lambda: materialise(loaded, schedule.expand()), cuda)
            counter = Flops(copy_loaded.model, copy_loaded.runtime.layers, copy_loaded.runtime.config)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            workload.run_copy(copy_loaded, loaded, schedule)  # warm-up
            counter.total = 0.0
            run_seconds, counts = timed(lambda: workload.run_copy(copy_loaded, loaded, schedule), cuda)
            counter.remove()
            scale = sum(full_tokens.values()) / sum(counts.values())
            seconds.append(copy_seconds + run_seconds * scale)
            tokens.append(sum(full_tokens.values()))
            flops.append(counter.total * scale)
            extra.append(copy_seconds)
            del copy_loaded
            _free()
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        return dict(seconds=statistics.mean(seconds), tokens=statistics.mean(tokens), flops=statistics.mean(flops),
                    peak=peak, copy_seconds=statistics.mean(extra), scale=scale)
    cache = runtime.prefix_cache
    if variant == "plain":
        runtime.prefix_cache = None
    try:
        _, counts = timed(lambda: workload.run(loaded, _identity(loaded)), cuda)  # warm-up; records the prefix
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for schedule in schedules:  # timed with no counting hook: a global hook would change what compiles
            t, counts = timed(lambda: workload.run(loaded, schedule), cuda)
            seconds.append(t)
            tokens.append(sum(counts.values()))
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        counter = Flops(loaded.model, runtime._original_layers, runtime.config)
        try:
            for schedule in schedules:  # the FLOPs, counted in a second, untimed pass of the same work
                counter.total = 0.0
                workload.run(loaded, schedule)
                flops.append(counter.total)
        finally:
            counter.remove()
    finally:
        runtime.prefix_cache = cache
    steady = slice(1, None) if len(seconds) > 1 else slice(None)  # the first schedule pays torch.compile's compiles
    return dict(seconds=statistics.mean(seconds[steady]), tokens=statistics.mean(tokens[steady]),
                flops=statistics.mean(flops[steady]), peak=peak, per_schedule=seconds, counts=counts,
                first=seconds[0])


def memory_check(loaded, workload):
    """Peak GiB of the unmodified model and of a 9-layer block repeated once, without and with reuse."""
    import torch

    from rys_search.schedule import Block, LayerSchedule

    n = loaded.n_layers
    start = max(0, n // 3 - 1)
    nine = LayerSchedule.from_blocks(n, [Block(start, start + 8, 1)])
    runtime = loaded.runtime
    cache = runtime.prefix_cache
    out = {}
    if cache is not None:  # the plain figures must not hold the engine's recorded states
        cache.clear()
        _free()
    for variant in ("plain", "engine"):
        runtime.prefix_cache = None if variant == "plain" else cache
        for label, schedule in (("unmodified", _identity(loaded)), (str(nine), nine)):
            workload.run(loaded, schedule)  # warm-up (records the prefix for the engine)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            workload.run(loaded, schedule)
            torch.cuda.synchronize()
            out[variant, label] = torch.cuda.max_memory_allocated() / 2**30
    runtime.prefix_cache = cache
    held = cache.used / 2**30 if cache is not None else 0.0
    base = out["plain", "unmodified"]
    print(f"memory check, peak GiB (prefix cache holds {held:.2f} GiB of it under the engine):")
    for (variant, label), value in out.items():
        print(f"  {variant:7} {label:28} {value:8.2f}  {value / base:.3f}x the unmodified model without reuse")


def profile(loaded, workload, schedules, rows: int = 12) -> None:
    """Where the engine's time goes: forward calls, GPU busy time against wall time, top operators."""
    import torch
    from torch.profiler import ProfilerActivity

    runtime = loaded.runtime
    calls = []
    forward = runtime.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    runtime.forward = counted
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loaded.device.type == "cuda" else [])
    try:
        with torch.profiler.profile(activities=activities) as prof:
            wall, _ = timed(lambda: [workload.run(loaded, s) for s in schedules], loaded.device.type == "cuda")
    finally:
        del runtime.forward
    events = prof.key_averages()
    from torch.autograd import DeviceType

    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6  # kernels only
    print(f"profile over {len(schedules)} schedules: {wall / len(schedules):.3f} s each, {len(calls) / len(schedules):.0f} "
          f"forward calls each, GPU busy {busy / len(schedules):.3f} s each ({100 * busy / wall:.0f}% of wall)")
    print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape instead of --model")
    parser.add_argument("--config", help="random weights from this model folder's config (and its tokenizer)")
    parser.add_argument("--tokenizer", help="tokenizer folder for --shape (default: --model's)")
    parser.add_argument("--count", type=int, default=512, help="synthetic prompts")
    parser.add_argument("--length", type=int, default=128, help="synthetic prompt length")
    parser.add_argument("--workload", default="objectives", help="objectives, synthetic or both (comma-separated)")
    parser.add_argument("--schedules", type=int, default=5)
    parser.add_argument("--variants", default="engine,plain,copy")
    parser.add_argument("--copy-schedules", type=int, default=2)
    parser.add_argument("--copy-limit", type=int, default=20, help="items per probe for the copy's subsample")
    parser.add_argument("--profile", action="store_true", help="also profile the engine on two schedules")
    parser.add_argument("--device", default=None)
    parser.add_argument("--token-budget", type=int, help="padded tokens per batch (default: the engine's for the device)")
    parser.add_argument("--call-cost", type=int, help="the cost of a forward call in padded tokens that batching weighs "
                        "(default: the engine's estimate, scoring/engine.py's call_cost)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging

    from rys_search.loading import load_model

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    if args.shape or args.config:
        from transformers import AutoTokenizer

        where = Path(args.tokenizer or args.config or args.model)
        if where.is_file():  # a GGUF file: its tokenizer, read by transformers
            tokenizer = AutoTokenizer.from_pretrained(str(where.parent), gguf_file=where.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(where))  # 49152 ids fit 151936
        loaded = build_shape(args.shape or args.config, tokenizer, args.device)
    else:
        loaded = load_model(args.model, device=args.device)
        print(f"loaded {loaded.source.name} in {loaded.load_seconds:.1f} s")
    loaded.token_budget = args.token_budget
    if args.call_cost is not None:
        loaded.call_cost = args.call_cost
    from rys_search.scoring.engine import call_cost

    cuda = loaded.device.type == "cuda"
    peak_tflops = matmul_peak() if cuda else float("nan")
    print(f"model {loaded.source.name}: {loaded.family.name}, {loaded.n_layers} layers, {loaded.device}, {loaded.dtype}; "
          f"measured bf16 matmul peak {peak_tflops:.0f} TFLOP/s; a forward call weighed as {call_cost(loaded)} padded tokens")
    for name in args.workload.split(","):
        report(loaded, name, args, peak_tflops)


def report(loaded, workload_name, args, peak_tflops) -> None:
    cuda = loaded.device.type == "cuda"
    workload = Objectives() if workload_name == "objectives" else Synthetic(loaded, args.count, args.length)
    schedules = random_schedules(loaded.n_layers, args.schedules)
    variants = args.variants.split(",")
    rows = {}
    full_tokens = None
    if loaded.runtime.prefix_cache is not None:  # another workload's states would crowd this one's out
        loaded.runtime.prefix_cache.clear()
    for variant in ("plain", "engine"):  # plain first: its peak memory holds no prefix cache
        if variant in variants or "copy" in variants:
            rows[variant] = measure(loaded, workload, schedules, variant)
            full_tokens = rows[variant]["counts"]
            print(f"({variant}) per schedule: " + ", ".join(f"{t:.3f}" for t in rows[variant]["per_schedule"]) + " s"
                  + (" (the figures below leave out the first, which compiles)" if len(schedules) > 1 else ""))
    dense = rows["plain"]["flops"] if "plain" in rows else float("nan")
    if "copy" in variants:
        sub = Objectives(args.copy_limit) if workload_name == "objectives" else workload
        rows["copy"] = measure(loaded, sub, schedules[: args.copy_schedules], "copy", full_tokens=full_tokens)
        print(f"(copy) timed on a subsample scaled x{rows['copy']['scale']:.1f} by tokens, over "
              f"{args.copy_schedules} schedules; materialising took {rows['copy']['copy_seconds']:.3f} s of it")
    names = [v for v in ("engine", "plain", "copy") if v in rows]
    base = rows.get("engine")
    print(f"\n{workload_name} on {loaded.source.name}, {len(schedules)} schedules, {full_tokens and sum(full_tokens.values())} tokens each")
    print(f"{'':26}" + "".join(f"{n:>12}" for n in names) + "".join(f"{n + '/engine':>14}" for n in names[1:]))

    def line(label, key, fmt, ratio=True):
        values = [rows[n][key] for n in names]
        text = f"{label:26}" + "".join(f"{fmt.format(v):>12}" for v in values)
        if ratio and base:
            text += "".join(f"{rows[n][key] / base[key]:>13.2f}x" for n in names[1:])
        print(text)

    for n in names:
        r = rows[n]
        r["tps"] = r["tokens"] / r["seconds"]
        r["tflops"] = r["flops"] / r["seconds"] / 1e12
        r["share"] = 100 * r["tflops"] / peak_tflops
        r["dense"] = dense / r["seconds"] / 1e12
    line("seconds per schedule", "seconds", "{:.3f}")
    line("tokens per second", "tps", "{:.0f}")
    line("achieved TFLOP/s", "tflops", "{:.1f}")
    line("share of matmul peak %", "share", "{:.1f}", ratio=False)
    line("dense-equivalent TFLOP/s", "dense", "{:.1f}")
    line("peak GPU memory GiB", "peak", "{:.2f}")
    if cuda:
        memory_check(loaded, workload)
    if args.profile:  # two schedules the timed runs have seen: their graphs are captured, their shapes compiled
        profile(loaded, workload, schedules[-2:])


if __name__ == "__main__":
    main()
