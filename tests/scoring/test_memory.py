"""Out-of-memory retries: halve the batches and try again, a bounded number of times, OOM only."""

from types import SimpleNamespace

import pytest
import torch

from rys_search.scoring.memory import OOM_RETRIES, retry_out_of_memory


class Cache:
    def __init__(self):
        self.cleared = 0

    def clear(self):
        self.cleared += 1


def loaded(budget=4096):
    return SimpleNamespace(token_budget=budget, device=torch.device("cpu"), runtime=SimpleNamespace(prefix_cache=Cache()))


def failing(times, exc):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "done"
    return call, calls


def test_out_of_memory_halves_the_batches_clears_the_prefix_cache_and_retries():
    m = loaded()
    call, calls = failing(2, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert retry_out_of_memory(m, call) == "done"
    assert len(calls) == 3 and m.token_budget == 1024 and m.runtime.prefix_cache.cleared == 2


def test_it_gives_up_after_its_retries_and_never_goes_below_256_tokens():
    m = loaded(600)
    call, calls = failing(99, RuntimeError("CUDA error: out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        retry_out_of_memory(m, call)
    assert len(calls) == OOM_RETRIES + 1 and m.token_budget == 256


def test_other_errors_are_not_retried():
    m = loaded()
    call, calls = failing(1, ValueError("bad item"))
    with pytest.raises(ValueError):
        retry_out_of_memory(m, call)
    assert len(calls) == 1 and m.token_budget == 4096
