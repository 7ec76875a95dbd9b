"""RMSNorm in two operations where transformers' takes seven, on a GPU.

    >>> fuse_norms(model)        # ScheduledModel does this itself on a GPU, before any compiling
    >>> unfuse_norms(model)

transformers' Llama-style RMSNorm (Llama, Mistral, Qwen 2 and 3, Phi-3, Granite, Mixtral and the
Qwen MoE families use it word for word) runs as seven kernels a call: the input to float32, its
square, the mean, the reciprocal square root, a product, back to the input's dtype, the weight's
product. torch's own `rms_norm` does the first six in one (in float32 inside, one rounding to the
input's dtype at its end, as transformers' `.to`), then the weight's product: the same formula in
two operations (`benchmarks/layer_ops.py`: 69 against 240 us at SmolLM2's shape on the H100).

Where layers run eagerly (small models on a GPU, compiling.py) each kernel is a launch and a pass
over the activations. Where layers are compiled, a fused norm is left out of the separately
compiled parts (compiling._parts) for calls with a KV cache: each compiled call costs a guard check
of about 50 us on the host, and the Qwen3-8B shape made two of them a layer for its norms
(`benchmarks/throughput.py --shape qwen3-8b --profile` on the H100: Dynamo cache lookups 3,686 ->
942 for two schedules, host time in torch operations 2.57 -> 1.64 s, the GPU busy 0.661 against
0.656 s a schedule; seconds a schedule 0.936 and 0.971 against 0.995 and 1.227, runs interleaved).

Which classes: those whose forward is, token for token, transformers' LlamaRMSNorm.forward (read
from their source once per class), so a family whose norm differs (Gemma's 1 + weight, OLMo 2's
and gpt-oss's product in float32) keeps its own. The class of each such module is swapped for a
subclass with the fused forward; the runtime's clones share it. A CPU keeps transformers' norms
(stored CPU results stay as they were).
"""

from __future__ import annotations

import inspect
import io
import tokenize
from typing import Any

__all__ = ["fuse_norms", "unfuse_norms", "is_llama_norm", "source_tokens"]

_FUSED: dict[type, type] = {}
_LLAMA: dict[type, bool] = {}


def fuse_norms(model: Any) -> int:
    """Swap every Llama-style RMSNorm in model for the fused one; how many were swapped."""
    swapped = 0
    for module in model.modules():
        cls = type(module)
        if getattr(cls, "_rys_norm_base", None) is None and is_llama_norm(cls):
            module.__class__ = _fused_class(cls)
            swapped += 1
    return swapped


def unfuse_norms(model: Any) -> None:
    for module in model.modules():
        base = getattr(type(module), "_rys_norm_base", None)
        if base is not None:
            module.__class__ = base


def is_llama_norm(cls: type) -> bool:
    """Whether cls.forward is transformers' LlamaRMSNorm.forward, token for token (never when either
    source cannot be read)."""
    if cls not in _LLAMA:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        forward = cls.__dict__.get("forward")
        reference = source_tokens(LlamaRMSNorm.forward)
        _LLAMA[cls] = forward is not None and reference is not None and source_tokens(forward) == reference
    return _LLAMA[cls]


def source_tokens(function: Any) -> list[str] | None:
    """The function's source as tokens, comments and layout left out (None if it has no source)."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return None
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines = source.splitlines(keepends=True)
    indent = len(lines[0]) - len(lines[0].lstrip())
    source = "".join(line[indent:] if line[:indent].isspace() else line for line in lines)
    return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip]


def _fused_class(base: type) -> type:
    if base not in _FUSED:
        import torch

        def forward(self, hidden_states):
            normed = torch.nn.functional.rms_norm(hidden_states, (hidden_states.shape[-1],), eps=self.variance_epsilon)
            return self.weight * normed

        _FUSED[base] = type(f"Fused{base.__name__}", (base,), {"forward": forward, "_rys_norm_base": base,
                                                               "__module__": base.__module__})
    return _FUSED[base]
