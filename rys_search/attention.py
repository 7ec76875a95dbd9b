"""SDPA attention that reads grouped key/value heads in place under a padding mask, on a GPU.

    >>> use_grouped_sdpa(runtime.config, device)   # ScheduledModel does this itself

With grouped-query attention (fewer key/value heads than query heads) and an attention mask,
transformers' SDPA path copies each key and value head once per query head that reads it
(`repeat_kv`) before calling torch's SDPA, because on some devices SDPA's fused kernels do not
take a mask together with grouped heads and would fall back to the unfused math kernel. The
engine's batches are left-padded, so every call has a mask. Where a fused kernel does take both
(cuDNN's on the H100 with torch 2.11), passing the grouped heads as they are (`enable_gqa`)
gives the same values without the copies: at the engine's shapes on the H100
(`benchmarks/layer_ops.py`), 525 us against 916 us a call for the Qwen3-8B shape, 237 against
433 for Qwen2.5-1.5B's, 144 against 227 for SmolLM2's, the same outputs.

How: a config whose attention implementation is "sdpa" on a CUDA device is switched to
GROUPED_SDPA, registered with transformers as an attention function (this module's) and a mask
function (transformers' own SDPA mask). Each call first asks, once per device, dtype, head size
and group count, whether SDPA has a fused kernel for grouped heads under a mask (a small call
with the math kernel disabled); where it has none, and for calls it does not handle (no mask,
one query token, soft-capping, attention sinks, position bias, a paged cache) and inside a layer
that torch.compile traces (a compiled graph would otherwise depend on that table, and recompile
when it changes), transformers' own SDPA function runs unchanged. On a CPU nothing is switched.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["GROUPED_SDPA", "grouped_sdpa", "use_grouped_sdpa", "fused_grouped_masked"]

GROUPED_SDPA = "rys_grouped_sdpa"
_FUSED: dict[tuple, bool] = {}


def use_grouped_sdpa(config: Any, device: Any) -> bool:
    """Switch config's attention from transformers' SDPA to grouped_sdpa on a CUDA device; whether it did."""
    if getattr(device, "type", str(device)) != "cuda" or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    config._attn_implementation = GROUPED_SDPA
    return True


def register() -> None:
    """Make GROUPED_SDPA known to transformers' attention and mask tables (once)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if GROUPED_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
    if GROUPED_SDPA not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


def grouped_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                 scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any):
    """transformers' SDPA attention (same arguments, same output layout), with grouped heads passed to a
    fused kernel as they are when a mask is given."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    special = any(kwargs.get(name) is not None for name in ("softcap", "s_aux", "position_bias", "cache"))
    if (groups > 1 and attention_mask is not None and query.shape[2] > 1 and not special
            and not torch.compiler.is_compiling() and fused_grouped_masked(query, key, attention_mask)):
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def fused_grouped_masked(query: Any, key: Any, mask: Any) -> bool:
    """Whether SDPA has a fused kernel for these grouped heads under a mask (asked once per kind of call)."""
    kind = (query.device, query.dtype, query.shape[1], key.shape[1], query.shape[-1], mask.dtype)
    if kind not in _FUSED:
        _FUSED[kind] = _probe(*kind)
    return _FUSED[kind]


def _probe(device: Any, dtype: Any, heads: int, kv_heads: int, head_dim: int, mask_dtype: Any) -> bool:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.zeros(2, heads, 5, head_dim, device=device, dtype=dtype)
    kv = torch.zeros(2, kv_heads, 7, head_dim, device=device, dtype=dtype)
    mask = torch.ones(2, 1, 5, 7, device=device, dtype=mask_dtype)
    try:
        with warnings.catch_warnings(), sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                                     SDPBackend.EFFICIENT_ATTENTION]):
            warnings.simplefilter("ignore")  # SDPA warns why each kernel it rejects cannot serve
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, enable_gqa=True)
    except RuntimeError:
        return False
    return True
