"""Seconds per schedule for greedy generation on GSM8K-style prompts: today's path against the old one.

    python benchmarks/generation_speed.py --model qwen.gguf --bench /work/shared/benchmarks/gsm8k/test.jsonl
    python benchmarks/generation_speed.py --shape qwen2.5-1.5b --tokenizer DIR --bench test.jsonl   # random weights
    python benchmarks/generation_speed.py --model M --bench F --prompts 250 --max-new-tokens 256 --schedules 3 --stop

The prompts are the first --prompts GSM8K items as `validate --mode generate` builds them
(the benchmark reader's prompt in the model's chat template). Each path runs the unmodified
model first (for the new path this records the prefix states, as the baseline of `validate`
does), then --schedules schedules drawn like benchmarks/objectives_speed.py's (fixed seed).

  new: rys_search.scoring.generation (sorted batches, prefix reuse of the prompt pass, static
       KV cache, CUDA-graph decode step, rows end at an end token; with --stop also where
       the GSM8K scorer stops a row: a complete answer line or a closed \\boxed{});
  old: transformers' model.generate on the same sorted batches, the path rys-search used before
       (kept here only for comparison); it runs on the unmodified model and the first
       --old-schedules schedules.

Printed per schedule: seconds, new tokens, rows that ended before the limit, and for the new
path the prefill and decode seconds and decode steps; then how many texts the two paths share.
--determinism adds the issue-12 check: the unmodified model again after the schedules, after
the prefix cache is cleared, with a halved loaded.token_budget (what the study's out-of-memory
retry sets), with CUDA graphs off, and the old path again and with half the batch budget;
each line says how many of the texts differ from the path's first run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectives_speed import random_schedules  # noqa: E402  (the schedules drawn)

from rys_search.scoring.probes import answered  # noqa: E402  (--stop: the scorer's own stop rule)

SHAPES = {
    # Qwen2.5-1.5B(-Coder)-Instruct: 28 layers, hidden 1536, 12 query / 2 key-value heads of 128, MLP 8960
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True),
    # SmolLM2-135M: 30 layers, hidden 576, 9 query / 3 key-value heads of 64, MLP 1536
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         max_position_embeddings=8192, rope_theta=1e5, tie_word_embeddings=True),
}
def old_generate(loaded, prompts, max_new_tokens, token_budget=None):
    """rys-search's greedy generation before this change: transformers' generate on sorted batches."""
    import torch

    from rys_search.scoring.engine import _pad_id, _pad_left, batches_by_length, default_token_budget

    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    budget = token_budget or getattr(loaded, "token_budget", None) or default_token_budget(device)
    pad = _pad_id(tokenizer)
    new_ids: list[list[int]] = [[] for _ in prompts]
    for batch in batches_by_length([len(p) + max_new_tokens for p in prompts], budget):
        ids, mask, _ = _pad_left([prompts[i] for i in batch], pad, device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=pad)
        rows = out[:, ids.shape[1]:].tolist()
        ends = set(_ends(loaded))
        for row, i in enumerate(batch):
            cut = next((k + 1 for k, t in enumerate(rows[row]) if t in ends), len(rows[row]))
            new_ids[i] = rows[row][:cut]
    return new_ids


def _ends(loaded):
    from rys_search.scoring.generation import end_tokens

    return end_tokens(loaded)


class Timer:
    """Wall seconds of the new path's prefill and decode steps (CUDA synchronised), and steps taken."""

    def __init__(self):
        from rys_search.scoring import generation

        self.generation = generation
        self.prefill = self.decode = 0.0
        self.steps = self.graphs = self.eager = 0
        self._saved = (generation._Batch._prefill, generation._Step.advance, generation._Step._warm_up_and_capture)
        timer = self

        def prefill(batch_self):
            start = _now()
            step = timer._saved[0](batch_self)
            timer.prefill += _now() - start
            return step

        def advance(step_self, count):
            start = _now()
            timer._saved[1](step_self, count)
            timer.decode += _now() - start
            timer.steps += count

        def capture(step_self):
            graph = timer._saved[2](step_self)
            timer.graphs += graph is not None
            timer.eager += graph is None
            return graph

        generation._Batch._prefill, generation._Step.advance, generation._Step._warm_up_and_capture = (
            prefill, advance, capture)

    def reset(self):
        self.prefill = self.decode = 0.0
        self.steps = 0

    def close(self):
        self.generation._Batch._prefill, self.generation._Step.advance, self.generation._Step._warm_up_and_capture = (
            self._saved)


def _now() -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def load(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rys_search.loading import load_model, pick_device, pick_dtype, wrap_model

    if args.shape is None:
        return load_model(args.model, device=args.device, dtype=args.dtype)
    spec = dict(SHAPES[args.shape])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    device = pick_device(args.device)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=pick_dtype(args.dtype, device))
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = load_model("default", device="cpu").tokenizer
    if tokenizer.vocab_size > config.vocab_size:
        raise SystemExit(f"the tokenizer's {tokenizer.vocab_size} ids do not fit the shape's {config.vocab_size}")
    return wrap_model(model, tokenizer, f"{args.shape} (random weights)")


def timed(fn):
    start = _now()
    out = fn()
    return out, _now() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="GGUF file, HF folder or 'default'")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape instead of --model")
    parser.add_argument("--tokenizer", help="tokenizer folder for --shape (default: the default model's)")
    parser.add_argument("--bench", required=True, help="a GSM8K jsonl file (question, answer)")
    parser.add_argument("--prompts", type=int, default=250)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--schedules", type=int, default=3)
    parser.add_argument("--old-schedules", type=int, default=1, help="schedules the old path runs (after the unmodified model)")
    parser.add_argument("--stop", action="store_true", help="the new path also stops a row at a finished 'The answer is N'")
    parser.add_argument("--determinism", action="store_true", help="the issue-12 repeat checks")
    parser.add_argument("--profile", action="store_true", help="a kernel profile of 16 eager decode steps under a schedule")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="float32 to compare the paths without bf16 rounding")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    from rys_search.chat import chat_ids
    from rys_search.schedule import LayerSchedule
    from rys_search.scoring.benchmarks import gsm8k_items
    from rys_search.scoring.generation import generate_ids, generation_budget, generation_plan

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    loaded = load(args)
    tok = loaded.tokenizer
    items = gsm8k_items(Path(args.bench))[: args.prompts]
    prompts = [chat_ids(tok, item.prompt) for item in items]
    max_new = args.max_new_tokens
    plan = generation_plan([len(p) for p in prompts], max_new, generation_budget(loaded))
    n = loaded.n_layers
    schedules = [LayerSchedule.identity(n)] + random_schedules(n, args.schedules, seed=0)
    stop = answered if args.stop else None
    lengths = [len(p) for p in prompts]
    print(f"model {loaded.source.name} ({loaded.family.name}, {n} layers, {loaded.device}, {loaded.dtype}); "
          f"{len(prompts)} GSM8K prompts of {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), "
          f"up to {max_new} new tokens, {len(plan)} batches of {'/'.join(str(len(b)) for b in plan)} rows; "
          f"stop: {'end token or a finished answer' if stop else 'end token'}")

    timer = Timer()
    new_runs, old_runs = {}, {}
    rows = []
    try:
        for k, schedule in enumerate(schedules):
            loaded.runtime.set_schedule(schedule)
            timer.reset()
            ids, seconds = timed(lambda: generate_ids(loaded, prompts, max_new, stop=stop))
            new_runs[str(schedule)] = ids
            row = {"schedule": str(schedule), "new": seconds, "new_tokens": sum(map(len, ids)),
                   "early": sum(len(x) < max_new for x in ids), "prefill": timer.prefill,
                   "decode": timer.decode, "steps": timer.steps}
            if k <= args.old_schedules:
                old, old_seconds = timed(lambda: old_generate(loaded, prompts, max_new))
                old_runs[str(schedule)] = old
                row.update(old=old_seconds, old_tokens=sum(map(len, old)), old_early=sum(len(x) < max_new for x in old),
                           same=sum(a == b[: len(a)] or b == a[: len(b)] for a, b in zip(ids, old)) if stop else
                           sum(a == b for a, b in zip(ids, old)))
            rows.append(row)
            print_row(row, k == 0)
        loaded.runtime.reset()
        summary(rows)
        if loaded.device.type == "cuda":
            print(f"decode steps: {timer.graphs} batches captured as CUDA graphs, {timer.eager} ran eagerly "
                  f"(capture failed)")
        if args.determinism:
            determinism(loaded, prompts, max_new, stop, new_runs, old_runs, schedules[0])
        if args.profile:
            profile(loaded, prompts, schedules[-1])
    finally:
        timer.close()


def print_row(row, first):
    if first:
        print(f"{'schedule':<34}{'new s':>8}{'prefill':>9}{'decode':>8}{'steps':>7}{'ms/step':>9}{'tokens':>8}"
              f"{'early':>7}{'old s':>9}{'tokens':>8}{'early':>7}{'x faster':>9}{'same':>6}")
    line = (f"{row['schedule'] + (' (unmodified)' if first else ''):<34}{row['new']:>8.2f}{row['prefill']:>9.2f}"
            f"{row['decode']:>8.2f}{row['steps']:>7}{1e3 * row['decode'] / max(1, row['steps']):>9.2f}"
            f"{row['new_tokens']:>8}{row['early']:>7}")
    if "old" in row:
        line += f"{row['old']:>9.2f}{row['old_tokens']:>8}{row['old_early']:>7}{row['old'] / row['new']:>9.1f}{row['same']:>6}"
    print(line, flush=True)


def summary(rows):
    scheduled = rows[1:]
    if not scheduled:
        return
    new = statistics.mean(r["new"] for r in scheduled)
    line = f"mean over {len(scheduled)} schedules: new {new:.2f} s per schedule"
    old = [r["old"] for r in scheduled if "old" in r]
    if old:
        line += f"; old {statistics.mean(old):.2f} s per schedule over {len(old)} ({statistics.mean(old) / new:.1f}x)"
    print(line)


def determinism(loaded, prompts, max_new, stop, new_runs, old_runs, identity):
    """Issue 12: does the same command give the same texts? Counts of texts that differ from the first run."""
    from rys_search.scoring.generation import generate_ids

    base_new, base_old = new_runs[str(identity)], old_runs.get(str(identity))
    runtime = loaded.runtime

    def report(label, got, base):
        differ = sum(a != b for a, b in zip(got, base))
        print(f"  {label:<58}{differ:>4} of {len(base)} texts differ", flush=True)

    print("determinism (the unmodified model, same prompts):")
    report("new path again, after the schedules", generate_ids(loaded, prompts, max_new, stop=stop), base_new)
    if runtime.prefix_cache is not None:
        runtime.prefix_cache.clear()
        report("new path, prefix cache cleared", generate_ids(loaded, prompts, max_new, stop=stop), base_new)
    budget = loaded.token_budget
    loaded.token_budget = 8192
    report("new path, loaded.token_budget 8192 (ignored by generation)", generate_ids(loaded, prompts, max_new, stop=stop),
           base_new)
    loaded.token_budget = budget
    os.environ["RYS_SEARCH_CUDA_GRAPHS"] = "0"
    report("new path, CUDA graphs off (eager decode steps)", generate_ids(loaded, prompts, max_new, stop=stop), base_new)
    os.environ.pop("RYS_SEARCH_CUDA_GRAPHS")
    from rys_search.scoring.generation import generation_budget

    half = generation_budget(loaded) // 2
    report(f"new path, a different plan (token_budget {half})",
           generate_ids(loaded, prompts, max_new, token_budget=half, stop=stop), base_new)
    if base_old is not None:
        from rys_search.scoring.engine import default_token_budget

        other = default_token_budget(loaded.device) // 2
        report("old path again, after the schedules", old_generate(loaded, prompts, max_new), base_old)
        report(f"old path, token budget {other} (other batches)", old_generate(loaded, prompts, max_new, other), base_old)


def profile(loaded, prompts, schedule, steps=16):
    """GPU time by kernel over one batch's prefill (from the recorded prefix) and `steps` eager decode steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from rys_search.scoring.generation import generate_ids

    os.environ["RYS_SEARCH_CUDA_GRAPHS"] = "0"
    loaded.runtime.set_schedule(schedule)
    generate_ids(loaded, prompts, steps + 1)  # warm
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        generate_ids(loaded, prompts, steps + 1)
        torch.cuda.synchronize()
    os.environ.pop("RYS_SEARCH_CUDA_GRAPHS")
    loaded.runtime.reset()
    events = [e for e in prof.key_averages() if getattr(e, "self_device_time_total", 0) > 0]
    total = sum(e.self_device_time_total for e in events)
    print(f"profile: {schedule}, all prompts, prefill + {steps} eager decode steps: GPU busy {total / 1e3:.1f} ms")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:14]:
        print(f"  {e.self_device_time_total / 1e3:9.2f} ms {100 * e.self_device_time_total / total:5.1f}%  "
              f"{e.count:>6}x  {e.key[:90]}")


if __name__ == "__main__":
    main()
