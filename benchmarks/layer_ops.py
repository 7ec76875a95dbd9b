"""Two operations of a decoder layer at the engine's shapes: transformers' way against rys-search's.

    python benchmarks/layer_ops.py              # a GPU: microseconds a call, and how far the outputs differ

- attention under a padding mask with grouped key/value heads: transformers' SDPA path
  (`repeat_kv`, then SDPA) against rys_search.attention.grouped_sdpa (SDPA with `enable_gqa`);
- RMSNorm: transformers' LlamaRMSNorm against rys_search.norms' fused one.

Shapes: SmolLM2 (9 query heads over 3, head 64, hidden 576), Qwen2.5-1.5B (12 over 2, 128,
1536) and Qwen3-8B (32 over 8, 128, 4096); a batch of left-padded rows after a 24-token shared
start (the engine's KV-cache continuation), bf16. Times are CUDA-event means over 100 calls.
The end-to-end effect is in `benchmarks/throughput.py --profile` (GPU busy per schedule).
"""

from __future__ import annotations

import argparse

SHAPES = {  # rows, new tokens, query heads, key/value heads, head size, hidden size
    "smollm2": (96, 256, 9, 3, 64, 576),
    "qwen2.5-1.5b": (96, 256, 12, 2, 128, 1536),
    "qwen3-8b": (64, 300, 32, 8, 128, 4096),
}
START = 24


def timed(fn, calls: int = 100) -> float:
    """Mean microseconds a call (CUDA events, after a warm-up)."""
    import torch

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / calls * 1000


def attention_case(rows, length, heads, kv_heads, head_dim, device, dtype):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from rys_search.attention import grouped_sdpa

    class Module:  # what the attention functions read off the layer
        num_key_value_groups = heads // kv_heads
        is_causal = True
        training = False

    query = torch.randn(rows, length, heads, head_dim, device=device, dtype=dtype).transpose(1, 2)
    key = torch.randn(rows, kv_heads, START + length, head_dim, device=device, dtype=dtype)
    value = torch.randn_like(key)
    own = torch.randint(int(0.8 * length), length + 1, (rows,), device=device)
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    causal = (k <= q)[None] & (k[None] >= (length - own)[:, None, None])
    mask = torch.cat([torch.ones(rows, length, START, dtype=torch.bool, device=device), causal], dim=2)[:, None]
    args = (Module(), query, key, value, mask)
    expected, got = sdpa_attention_forward(*args)[0], grouped_sdpa(*args)[0]
    return (timed(lambda: sdpa_attention_forward(*args)), timed(lambda: grouped_sdpa(*args)),
            (expected.float() - got.float()).abs().max().item())


def norm_case(tokens, hidden, device, dtype):
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from rys_search.norms import fuse_norms, unfuse_norms

    norm = LlamaRMSNorm(hidden, eps=1e-5).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.normal_()
        x = (torch.randn(tokens, hidden, device=device) * 3).to(dtype)
        expected, before = norm(x), timed(lambda: norm(x))
        fuse_norms(norm)
        got, after = norm(x), timed(lambda: norm(x))
        unfuse_norms(norm)
    return before, after, (expected.float() - got.float()).abs().max().item(), (expected != got).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("layer_ops.py times CUDA kernels: it needs a GPU")
    device, dtype = torch.device("cuda"), torch.bfloat16
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16; microseconds a call")
    print(f"{'shape':14s} {'operation':28s} {'transformers':>12s} {'rys-search':>11s}  largest difference")
    for name in args.shapes.split(","):
        rows, length, heads, kv_heads, head_dim, hidden = SHAPES[name]
        before, after, diff = attention_case(rows, length, heads, kv_heads, head_dim, device, dtype)
        print(f"{name:14s} {'attention, mask, GQA':28s} {before:12.1f} {after:11.1f}  {diff:.3g}")
        before, after, diff, share = norm_case(rows * length, hidden, device, dtype)
        print(f"{name:14s} {'RMSNorm':28s} {before:12.1f} {after:11.1f}  {diff:.3g} ({share:.1e} of values differ)")


if __name__ == "__main__":
    main()
