"""The name a model's forward takes its KV cache by, and the name its output gives it back under:
`cache` from transformers 5.24 on (where `past_key_values` is still accepted, with a deprecation
warning), `past_key_values` before.

    >>> model(input_ids=ids, use_cache=True, **cache_kwargs(model, past))
    >>> past = output_cache(model(...))
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

__all__ = ["cache_kwargs", "output_cache"]


@lru_cache(maxsize=None)
def _name(cls: type) -> str:
    try:
        parameters = inspect.signature(cls.forward).parameters  # (through transformers' decorators)
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """{name: cache} for a call of model's forward."""
    return {_name(type(model)): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (None: none)."""
    fields = getattr(type(output), "__dataclass_fields__", {})
    return getattr(output, "cache" if "cache" in fields else "past_key_values", None)
