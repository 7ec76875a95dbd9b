"""Out of GPU memory: free the caches, halve the tokens per batch and try the same work again.

    >>> results = retry_out_of_memory(loaded, lambda: stage.measure(loaded, schedule, baseline))

A study's trial, a calibration and a benchmark check all score through batches of at most
`loaded.token_budget` padded tokens; another process on the same GPU (a second study, a
calibration) can leave too little memory for them. Each retry halves the budget (never below
256 tokens) and clears the prefix cache, whose entries were recorded for the old batches, and the
layer graphs (graphs.py), captured for them.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from ..errors import first_line

__all__ = ["OOM_RETRIES", "out_of_memory", "retry_out_of_memory", "shrink_batches"]

log = logging.getLogger(__name__)
OOM_RETRIES = 2
T = TypeVar("T")


def out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def shrink_batches(loaded: Any, exc: BaseException) -> None:
    """Free the caches and halve the tokens per batch."""
    import torch

    from .engine import default_token_budget

    budget = loaded.token_budget or default_token_budget(loaded.device)
    loaded.token_budget = max(256, budget // 2)
    if getattr(loaded.runtime, "prefix_cache", None) is not None:  # the new batches have new keys
        loaded.runtime.prefix_cache.clear()
    if getattr(loaded.runtime, "graphs", None) is not None:  # and their graphs and buffers
        loaded.runtime.graphs.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.warning("out of memory (%s); retrying with %d tokens per batch", first_line(exc)[:200],
                loaded.token_budget)


def retry_out_of_memory(loaded: Any, call: Callable[[], T], retries: int = OOM_RETRIES) -> T:
    """call(), again after shrink_batches when it runs out of memory, at most `retries` more times."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if not out_of_memory(exc) or attempt == retries:
                raise
            shrink_batches(loaded, exc)
    raise AssertionError("unreachable")
