"""First load of a GGUF, old against new; prints seconds side by side.

    python benchmarks/first_load.py --model qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
    python benchmarks/first_load.py --model M --threads 1,4,16      # the new path with several pool sizes
    python benchmarks/first_load.py --dequantize-only                # gguf-py dequantization alone, synthetic blocks
    python benchmarks/first_load.py --model M --load-model-only --device auto   # load_model alone, on the GPU

old: what rys-search's first load ran before: the header check (gguf_family), then transformers'
     own GGUF load of the model (fp32) and of the tokenizer;
new: the same calls inside ggufio.fast_gguf_load (the file parsed once, the tensor-name map
     built once, tensors dequantized ahead on a thread pool);
then load_model's whole first load into an empty temporary cache (the model ready, built from
the weights in memory, and its copy in the cache, written beside it) and the cached load after
it, and whether the two give the same model. The file is read once before timing, so
every variant finds it in the page cache. The old and new state dicts are compared (torch.equal).

--dequantize-only times gguf-py's dequantize on random blocks of a Qwen2.5-1.5B MLP-sized
matrix (8960 x 1536) per quantization type, one call on one thread against the pool.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def old_load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rys_search.loading import gguf_family

    gguf_family(str(path))
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model


def new_load(path: Path, threads: int | None):
    from rys_search.ggufio import fast_gguf_load

    with fast_gguf_load(path, threads=threads) as stats:
        model = old_load(path)
    return model, stats


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def same_state(a, b) -> bool:
    import torch

    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


def whole_files(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(64 << 20):
            pass


def dequantize_only(threads: int) -> None:
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

    from rys_search.ggufio import FastLoadStats, _Prefetcher

    rows, cols = 8960, 1536
    rng = np.random.default_rng(0)
    print(f"dequantize a {rows} x {cols} matrix of random blocks; {threads} threads in the pool")
    for name in ("Q4_K", "Q6_K", "Q5_0", "Q8_0", "Q4_1"):
        qtype = GGMLQuantizationType[name]
        block, size = GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)
        serial, one = timed(lambda: dequantize(data, qtype))

        class Tensor:  # what _Prefetcher reads from a GGUFReader's tensor list
            pass

        tensor = Tensor()
        tensor.data, tensor.tensor_type, tensor.n_elements, tensor.name = data, qtype, rows * cols, name
        reader = Tensor()
        reader.tensors = [tensor]
        prefetcher = _Prefetcher(reader, FastLoadStats(threads=threads), dequantize, 1 << 34)
        pooled, many = timed(lambda: prefetcher.take(data, qtype))
        prefetcher.close()
        same = np.array_equal(serial, pooled, equal_nan=True)
        print(f"  {name:<6} one call {one:7.3f} s   pool {many:7.3f} s   {one / many:5.1f}x   same values: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a GGUF file or 'default'")
    parser.add_argument("--threads", default="", help="comma-separated pool sizes for the new path (default: all cores)")
    parser.add_argument("--dequantize-only", action="store_true")
    parser.add_argument("--load-model-only", action="store_true", help="only load_model's first and cached loads")
    parser.add_argument("--device", default="cpu", help="load_model's device (cpu, cuda, auto)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="cProfile the first load and print its top N functions by cumulative time")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.dequantize_only:
        for threads in [int(t) for t in args.threads.split(",") if t] or [cores]:
            dequantize_only(threads)
        return

    import torch  # noqa: F401  (imported before timing: the import is not part of a load)
    import transformers  # noqa: F401
    from transformers.utils import logging

    from rys_search.loading import load_model, resolve_model

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    path = Path(resolve_model(args.model).location)
    whole_files(path)
    if args.load_model_only:
        print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB, {cores} cores")
        return whole_load(path, args.device, args.profile)
    print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB, {cores} cores")
    old, old_seconds = timed(lambda: old_load(path))
    print(f"old (transformers, one core)          {old_seconds:8.2f} s", flush=True)
    for threads in [int(t) for t in args.threads.split(",") if t] or [None]:
        (new, stats), seconds = timed(lambda: new_load(path, threads))
        print(f"new ({stats.threads:>2} threads)                     {seconds:8.2f} s   {old_seconds / seconds:5.1f}x   "
              f"parsed {stats.parsed}x, {stats.hits} tensors ahead, {stats.misses} not; "
              f"same tensors: {same_state(new, old)}", flush=True)
        del new
    del old
    whole_load(path, args.device, args.profile)


def phases(loaded) -> str:
    parts = getattr(loaded, "phases", None)  # (None: a load_model older than its phases)
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items()) if parts else "not recorded"


def whole_load(path: Path, device: str, profile: int = 0) -> None:
    """load_model's first load into an empty cache (the model ready, then its copy in the cache), the
    cached load after it, and whether the two give the same model."""
    from rys_search.loading import load_model

    with tempfile.TemporaryDirectory() as cache:
        os.environ["RYS_SEARCH_CACHE"] = cache
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        first = load_model(str(path), device=device)
        ready = time.perf_counter() - start
        if profiler is not None:
            profiler.disable()
        writer = getattr(first, "cache_writer", None)  # None: the copy was written before the load returned
        if writer is not None:
            writer.wait()
        written = time.perf_counter() - start
        second = load_model(str(path), device=device)
        print(f"load_model first load, model ready               {ready:8.2f} s   "
              f"(from cache: {first.from_cache}, device {first.device}; load_seconds {first.load_seconds:.2f})")
        print(f"  its parts: {phases(first)}")
        print(f"load_model first load, its copy in the cache     {written:8.2f} s   "
              f"({'written beside the load' if writer is not None else 'written before the load returned'})")
        print(f"load_model cached load                           {second.load_seconds:8.2f} s   (from cache: {second.from_cache})")
        print(f"  its parts: {phases(second)}")
        print(f"first and cached loads give the same model: {same_state(first.model, second.model)}")
    if profiler is not None:
        import pstats

        print(f"the first load (model ready), by cumulative time, top {profile}:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(profile)


if __name__ == "__main__":
    sys.exit(main())
