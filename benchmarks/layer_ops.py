"""Two operations of a decoder layer at the engine's shapes: transformers' way against rys-search's.

    python benchmarks/layer_ops.py              # a GPU: microseconds a call, and how far the outputs differ

- attention under a padding mask with grouped key/value heads: transformers' SDPA path
  (`repeat_kv`, then SDPA) against rys_search.attention.grouped_sdpa (SDPA with `enable_gqa`);
- RMSNorm: transformers' LlamaRMSNorm against rys_search.norms' fused one;
- rotary position embedding of the query and key heads: transformers' apply_rotary_pos_emb against
  rys_search.rotary.rotary_halves, timed inside a CUDA graph (as the engine replays layer calls),
  so that the figure is the GPU's time and not the launches'.

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


def graphed(fn, calls: int = 20) -> float:
    """Mean GPU microseconds a call: `calls` calls captured in one CUDA graph, its replays timed."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return timed(graph.replay, 20) / calls


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


def rotary_case(rows, length, heads, kv_heads, head_dim, device, dtype):
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from rys_search.rotary import rotary_halves

    def heads_first(n):  # as the attention makes them: a view of the projection's output
        return torch.randn(rows, length, n * head_dim, device=device, dtype=dtype).view(
            rows, length, n, head_dim).transpose(1, 2)

    q, k = heads_first(heads), heads_first(kv_heads)
    position = torch.arange(START, START + length, device=device, dtype=torch.float32)
    inverse = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.cat([position[:, None] * inverse] * 2, dim=-1)[None].expand(rows, -1, -1)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    expected, got = apply_rotary_pos_emb(q, k, cos, sin), rotary_halves(q, k, cos, sin)
    same = all(torch.equal(e, g) for e, g in zip(expected, got))
    return (graphed(lambda: apply_rotary_pos_emb(q, k, cos, sin)), graphed(lambda: rotary_halves(q, k, cos, sin)),
            "the same bits" if same else "DIFFERENT")


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
        before, after, same = rotary_case(rows, length, heads, kv_heads, head_dim, device, dtype)
        print(f"{name:14s} {'rotary (GPU time, in a graph)':28s} {before:12.1f} {after:11.1f}  {same}")


if __name__ == "__main__":
    main()
