"""Rotary position embedding in fewer passes over memory than transformers', on a GPU; the same bits.

    >>> fuse_rotary(model)       # ScheduledModel does this itself on a GPU
    >>> unfuse_rotary()          # every modeling module back to its own function

transformers' `apply_rotary_pos_emb` (Llama's, copied word for word by Mistral, Qwen 2 and 3, the
Gemmas, Granite, Mixtral and the Qwen MoE families) computes `q * cos + rotate_half(q) * sin`, with
`rotate_half(x) = cat(-x2, x1)`: five kernels a tensor (a product, a negation, a concatenation, a
product, a sum), two of them making copies. SmolLM2's profile on the H100 (the default objectives,
layer calls replayed as CUDA graphs, `benchmarks/call_profile.py`): its concatenations, negations and
sums alone took 14% of the GPU's time, its products part of another 14%.

Here each tensor takes four passes and no copies:

    p = x * cos,  r = x * swap(sin)          swap(sin) = cat(sin2, sin1), on (rows, tokens, head) only
    out1 = p1 - r2,  out2 = p2 + r1          written into the two halves of one output

Each product and sum is the one transformers' formula rounds (p1 = x1 * cos1, r2 = x2 * sin1, and
`a + (-b)` is `a - b` in IEEE arithmetic), so the outputs are the same bits, in the same layout.
`benchmarks/layer_ops.py` on the H100, GPU microseconds a call at the engine's shapes (in a CUDA graph,
bf16), transformers' against this: SmolLM2 287 / 186, Qwen2.5-1.5B 636 / 401, Qwen3-8B 1398 / 856,
the same bits. `benchmarks/throughput.py --model SmolLM2 --variants engine --schedules 10`, runs
interleaved with the code before (which also indexed the shared start's KV cache per call, see
engine._repeated): 0.060, 0.058, 0.057 s a schedule against 0.064, 0.062, 0.061, the same scores; on
a machine whose host took 1.8 times as long to queue the calls, 0.064, 0.074, 0.071 against 0.067,
0.070, 0.071 (within its noise: the GPU was not the limit there).

Which modules: those whose `apply_rotary_pos_emb` and `rotate_half` are, token for token, Llama's
(norms.py reads sources the same way); others (Phi-3's partial rotary, OLMo 2's in float32,
gpt-oss's) keep theirs. The module's global is replaced, so every model of that family in the
process uses it; inside a layer that torch.compile traces, and for a head size that does not
split in two halves of one size, transformers' own function runs.
"""

from __future__ import annotations

import sys
from typing import Any

from .norms import source_tokens

__all__ = ["fuse_rotary", "is_llama_rotary", "rotary_halves", "unfuse_rotary"]

_PATCHED: dict[str, Any] = {}  # module name -> its own apply_rotary_pos_emb
_LLAMA: dict[tuple[Any, Any], bool] = {}  # keyed by the functions themselves: an id() is reused once one is freed


def fuse_rotary(model: Any) -> int:
    """Point the Llama-style rotary of every modeling module that model's parts come from at rotary_halves;
    how many of those modules use it (switched now or before)."""
    using = 0
    for name in sorted({type(m).__module__ for m in model.modules()}):
        module = sys.modules.get(name)
        if module is not None and name not in _PATCHED and is_llama_rotary(module):
            _PATCHED[name] = module.apply_rotary_pos_emb
            module.apply_rotary_pos_emb = _switched(_PATCHED[name])
        using += name in _PATCHED
    return using


def unfuse_rotary() -> None:
    """Every switched module back to its own function."""
    for name, original in _PATCHED.items():
        module = sys.modules.get(name)
        if module is not None:
            module.apply_rotary_pos_emb = original
    _PATCHED.clear()


def is_llama_rotary(module: Any) -> bool:
    """Whether the module's apply_rotary_pos_emb and rotate_half are Llama's, token for token (decorators
    aside; never when a source cannot be read)."""
    apply, rotate = getattr(module, "apply_rotary_pos_emb", None), getattr(module, "rotate_half", None)
    if not callable(apply) or not callable(rotate):
        return False
    key = (apply, rotate)
    if key not in _LLAMA:
        from transformers.models.llama import modeling_llama as llama

        pairs = [(_body(apply), _body(llama.apply_rotary_pos_emb)), (_body(rotate), _body(llama.rotate_half))]
        _LLAMA[key] = all(mine is not None and mine == reference for mine, reference in pairs)
    return _LLAMA[key]


def _body(function: Any) -> list[str] | None:
    """The function's tokens from its `def` on, its decorators (transformers' kernel-hub one) and
    docstring left out."""
    tokens = source_tokens(function)
    if not tokens or "def" not in tokens:
        return None
    tokens = tokens[tokens.index("def"):]
    depth = 0
    for at, token in enumerate(tokens):  # the header's closing colon
        depth += (token in ("(", "[", "{")) - (token in (")", "]", "}"))
        if token == ":" and depth == 0:
            if at + 1 < len(tokens) and tokens[at + 1][-1:] in ("'", '"'):
                return tokens[: at + 1] + tokens[at + 2 :]
            break
    return tokens


def rotary_halves(q: Any, k: Any, cos: Any, sin: Any, unsqueeze_dim: int = 1) -> tuple[Any, Any]:
    """transformers' apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim), in four passes a tensor."""
    import torch

    half = q.shape[-1] // 2
    cos = cos.unsqueeze(unsqueeze_dim)
    swapped = torch.cat((sin[..., half:], sin[..., :half]), dim=-1).unsqueeze(unsqueeze_dim)
    out = []
    for x in (q, k):
        p, r = x * cos, x * swapped
        rotated = torch.empty_like(p)
        torch.sub(p[..., :half], r[..., half:], out=rotated[..., :half])
        torch.add(p[..., half:], r[..., :half], out=rotated[..., half:])
        out.append(rotated)
    return out[0], out[1]


def _switched(original: Any) -> Any:
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        import torch

        size = q.shape[-1]
        if (size % 2 or k.shape[-1] != size or cos.shape[-1] != size or sin.shape[-1] != size
                or torch.compiler.is_compiling()):
            return original(q, k, cos, sin, unsqueeze_dim)
        return rotary_halves(q, k, cos, sin, unsqueeze_dim)

    apply_rotary_pos_emb._rys_rotary_base = original
    return apply_rotary_pos_emb
