"""Seconds per schedule for the default search objectives; prints figures.

    python benchmarks/objectives_speed.py                         # SmolLM2 (the default model)
    python benchmarks/objectives_speed.py --model M --schedules 8
    python benchmarks/objectives_speed.py --shape qwen3-8b        # random weights built on the device

Each schedule repeats one or two blocks of 3 to 8 layers, drawn from a fixed seed. The
objectives (math, eq, reasoning in logprob mode, and fixed_point, search split) run once on
the unmodified model first (warm-up, and the baseline every change is measured against),
then on each schedule; the figure is the mean over the schedules, split by objective.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

SHAPES = {
    # Qwen3-8B: 36 layers, hidden 4096, 32 query / 8 key-value heads of 128, MLP 12288, vocab 151936
    "qwen3-8b": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                     max_position_embeddings=40960, tie_word_embeddings=False),
    # Qwen2.5-Coder-1.5B: 28 layers, hidden 1536, 12 query / 2 key-value heads of 128, MLP 8960, vocab 151936
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, tie_word_embeddings=True),
}
OBJECTIVES = ("math", "eq", "reasoning", "fixed_point")


def random_schedules(n_layers: int, count: int, seed: int = 0):
    from rys_search.schedule import Block, LayerSchedule

    rng = random.Random(seed)
    out = []
    while len(out) < count:
        width = rng.randint(3, 8)
        start = rng.randint(1, n_layers - width - 1)
        blocks = [Block(start, start + width - 1, rng.randint(1, 2))]
        if rng.random() < 0.5:
            w2 = rng.randint(3, 8)
            s2 = rng.randint(0, n_layers - w2)
            if s2 + w2 - 1 < start or s2 > start + width - 1:
                blocks.append(Block(s2, s2 + w2 - 1, 1))
        out.append(LayerSchedule.from_blocks(n_layers, blocks))
    return out


def build_shape(name: str, tokenizer, device: str | None):
    """Random weights of a SHAPES entry (or of a model folder's config), wrapped with the tokenizer given."""
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rys_search.loading import pick_device, wrap_model

    if name in SHAPES:
        spec = dict(SHAPES[name])
        config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    else:
        config = AutoConfig.from_pretrained(name)
        name = f"{Path(name).name} (random weights)"
    dev = pick_device(device)
    start = time.perf_counter()
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    print(f"built {name} with random weights on {dev} in {time.perf_counter() - start:.1f} s")
    return wrap_model(model, tokenizer, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape instead of --model")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--schedules", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="items per objective (default: the whole split)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging

    from rys_search.loading import load_model
    from rys_search.scoring import get_objective

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    if args.shape:
        tokenizer = load_model(args.model, device="cpu").tokenizer  # ids fit: SmolLM2's 49152 < 151936
        loaded = build_shape(args.shape, tokenizer, args.device)
    else:
        loaded = load_model(args.model, device=args.device, dtype=args.dtype)
        print(f"loaded {loaded.source.name} in {loaded.load_seconds:.1f} s")
    cuda = loaded.device.type == "cuda"
    print(f"model {loaded.source.name}: {loaded.family.name}, {loaded.n_layers} layers, {loaded.device}, {loaded.dtype}")
    objectives = [get_objective(name) for name in OBJECTIVES]

    def run(schedule):
        times, tokens = {}, 0
        for objective in objectives:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = objective.evaluate(loaded, schedule, limit=args.limit)
            if cuda:
                torch.cuda.synchronize()
            times[objective.name] = time.perf_counter() - start
            tokens += result.tokens
        return times, tokens

    from rys_search.schedule import LayerSchedule

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warm, warm_tokens = run(LayerSchedule.identity(loaded.n_layers))
    print(f"unmodified (warm-up): {sum(warm.values()):.2f} s, {warm_tokens} tokens")
    per: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
    totals, token_counts = [], []
    for schedule in random_schedules(loaded.n_layers, args.schedules):
        times, tokens = run(schedule)
        for name, t in times.items():
            per[name].append(t)
        totals.append(sum(times.values()))
        token_counts.append(tokens)
        print(f"  {str(schedule):<40} {totals[-1]:7.2f} s  {tokens:7d} tokens  {tokens / totals[-1]:9.0f} tokens/s")
    mean = statistics.mean(totals)
    print(f"seconds per schedule: {mean:.2f} (min {min(totals):.2f}, max {max(totals):.2f}) over {len(totals)} schedules")
    print("  by objective: " + ", ".join(f"{k} {statistics.mean(v):.2f} s" for k, v in per.items()))
    print(f"tokens per second: {statistics.mean(token_counts) / mean:.0f}")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
