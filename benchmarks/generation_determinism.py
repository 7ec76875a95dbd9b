"""Do the same inputs give the same bits on this device? Counts distinct results over repeats, per kernel.

    python benchmarks/generation_determinism.py --shape qwen2.5-1.5b --tokenizer DIR --bench test.jsonl
    CUBLAS_WORKSPACE_CONFIG=:4096:8 python benchmarks/generation_determinism.py ...   # cuBLAS's reproducible mode
    python benchmarks/generation_determinism.py ... --no-reduced-precision           # no bf16 reductions in GEMMs

Issue 12 saw the unmodified model score 36.0-36.8 on the same 250 GSM8K items in four runs. A
fixed batch plan removes one cause (a row's rounding depends on its batch's shape); this script
looks for the other, kernels that are not reproducible for identical inputs and shapes: the
model's matrix products at decode and prefill shapes, the attention of a prefill and of a
decode step, a whole prefill, and whole greedy generations (generate_ids, and transformers'
generate as rys-search used it). Each line: how many distinct results in --repeats runs (1 =
reproducible).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def distinct(results) -> int:
    seen = set()
    for r in results:
        if hasattr(r, "cpu"):
            r = r.detach().float().cpu().numpy().tobytes()
        seen.add(hashlib.blake2b(repr(r).encode() if not isinstance(r, bytes) else r, digest_size=16).digest())
    return len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--rows", type=int, default=148)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--no-reduced-precision", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--attention-only", action="store_true",
                        help="only decode-step attention in the Qwen2.5-1.5B shape, random tensors (no model)")
    args = parser.parse_args()
    if args.attention_only:
        return attention_only(args)

    import os

    import torch

    from generation_speed import load, old_generate
    from rys_search.chat import chat_ids
    from rys_search.scoring.benchmarks import gsm8k_items
    from rys_search.scoring.engine import _pad_left
    from rys_search.scoring.generation import generate_ids

    if args.no_reduced_precision:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    loaded = load(args)
    print(f"{loaded.source.name} {loaded.dtype} on {loaded.device}; CUBLAS_WORKSPACE_CONFIG="
          f"{os.environ.get('CUBLAS_WORKSPACE_CONFIG')}, bf16 reduced-precision reductions "
          f"{torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction}; {args.repeats} repeats")
    prompts = [chat_ids(loaded.tokenizer, i.prompt) for i in gsm8k_items(Path(args.bench))[: args.rows]]
    ids, mask, positions = _pad_left(prompts, 0, loaded.device)
    model, r = loaded.model, args.repeats
    layer = loaded.runtime.layers[0]
    hidden = model.config.hidden_size
    gen = torch.Generator(device=loaded.device).manual_seed(0)

    def line(label, fn):
        with torch.no_grad():
            results = [fn() for _ in range(r)]
        print(f"  {label:<56}{distinct(results):>3} distinct of {r}", flush=True)

    for rows, what in ((len(prompts), "decode"), (int(mask.numel()), "prefill")):
        x = torch.randn(rows, hidden, generator=gen, device=loaded.device, dtype=loaded.dtype)
        up = torch.randn(rows, model.config.intermediate_size, generator=gen, device=loaded.device, dtype=loaded.dtype)
        line(f"q_proj ({what}, {rows} rows)", lambda: layer.self_attn.q_proj(x))
        line(f"gate_proj ({what}, {rows} rows)", lambda: layer.mlp.gate_proj(x))
        line(f"down_proj ({what}, {rows} rows)", lambda: layer.mlp.down_proj(up))
        if what == "decode":
            line(f"lm_head ({what}, {rows} rows)", lambda: model.get_output_embeddings()(x))
    config = model.config
    heads, groups = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or hidden // heads
    b, w = ids.shape
    sdpa = torch.nn.functional.scaled_dot_product_attention
    causal = torch.ones(w, w, dtype=torch.bool, device=loaded.device).tril()
    allowed = causal[None, None] & mask.bool()[:, None, None, :]
    additive = torch.zeros(allowed.shape, dtype=loaded.dtype, device=loaded.device).masked_fill_(~allowed, -1e30)
    q = torch.randn(b, heads, w, dim, generator=gen, device=loaded.device, dtype=loaded.dtype)
    k = torch.randn(b, heads, w, dim, generator=gen, device=loaded.device, dtype=loaded.dtype)
    v = torch.randn(b, heads, w, dim, generator=gen, device=loaded.device, dtype=loaded.dtype)
    line(f"attention, prefill ({b} x {w}, float mask)", lambda: sdpa(q, k, v, attn_mask=additive))
    kv = w + args.new_tokens
    qd = torch.randn(b, groups, heads // groups, dim, generator=gen, device=loaded.device, dtype=loaded.dtype)
    kd = torch.randn(b, groups, kv, dim, generator=gen, device=loaded.device, dtype=loaded.dtype)
    vd = torch.randn(b, groups, kv, dim, generator=gen, device=loaded.device, dtype=loaded.dtype)
    md = torch.zeros(b, 1, 1, kv, dtype=loaded.dtype, device=loaded.device)
    line(f"attention, decode step ({b} rows over {kv} keys)", lambda: sdpa(qd, kd, vd, attn_mask=md))
    line("whole prefill, last logits (transformers' masks)",
         lambda: model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits)
    n = args.new_tokens
    line(f"generate_ids, {len(prompts)} prompts x {n} tokens", lambda: generate_ids(loaded, prompts, n))
    line(f"transformers' generate (the old path), {len(prompts)} x {n}", lambda: old_generate(loaded, prompts, n))


def attention_only(args) -> None:
    """Decode-step attention (one query token per row, a mask over the cache) as each path runs it."""
    import torch

    sdpa = torch.nn.functional.scaled_dot_product_attention
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows, heads, groups, dim, r = args.rows, 12, 2, 128, args.repeats
    print(f"decode attention, {rows} rows, {heads} query / {groups} key-value heads of {dim}, bf16; {r} repeats per length")

    def make(length):
        def rand(*shape):
            return torch.randn(*shape, generator=gen, device="cuda", dtype=torch.bfloat16)

        q, k, v = rand(rows, heads, 1, dim), rand(rows, groups, length, dim), rand(rows, groups, length, dim)
        keep = torch.rand(rows, 1, 1, length, generator=gen, device="cuda") > 0.1
        additive = torch.zeros(keep.shape, dtype=torch.bfloat16, device="cuda").masked_fill_(~keep, torch.finfo(torch.bfloat16).min)
        return q, k, v, keep, additive

    def repeated(x):
        return x[:, :, None].expand(rows, groups, heads // groups, *x.shape[2:]).reshape(rows, heads, *x.shape[2:])

    variants = {
        "keys/values repeated per query head, bool mask (transformers' SDPA path)":
            lambda q, k, v, keep, add: sdpa(q, repeated(k), repeated(v), attn_mask=keep),
        "keys/values repeated per query head, additive mask":
            lambda q, k, v, keep, add: sdpa(q, repeated(k), repeated(v), attn_mask=add),
        "query heads stacked per key/value head, additive mask (generation.py)":
            lambda q, k, v, keep, add: sdpa(q.reshape(rows, groups, heads // groups, dim), k, v, attn_mask=add),
    }
    lengths = list(range(200, 216))
    for label, fn in variants.items():
        unstable = 0
        for length in lengths:
            inputs = make(length)
            with torch.no_grad():
                unstable += distinct([fn(*inputs) for _ in range(r)]) > 1
        print(f"  {label:<74} not reproducible at {unstable} of {len(lengths)} lengths", flush=True)


if __name__ == "__main__":
    main()
