"""Grouped heads read in place under a mask score what transformers' SDPA path (repeat_kv) scores."""

import numpy as np
import pytest
import torch

from rys_search import attention
from rys_search.attention import GROUPED_SDPA, use_grouped_sdpa
from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring.engine import Request, token_logprobs
from tiny import TINY, save_tiny

SCHEDULES = [None, "0-1,2-3x3,4,5x2"]


def requests(seed=0):
    """Left-padded batches (a mask), prompts shared by continuations (KV caches) and whole sequences."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        prompt = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(6, 14)))]
        for _ in range(3):
            tail = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(1, 4)))]
            targets = [(len(prompt), [5, 6])] + [(len(prompt) + j, [tail[j]]) for j in range(1, len(tail))]
            out.append(Request(prompt + tail, targets, prefix=len(prompt)))
    for _ in range(5):
        ids = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(3, 12)))]
        out.append(Request(ids, [(len(ids) - 1, [ids[-1], 9]), (len(ids), [4])]))
    return out


def scores(loaded, reqs):
    out = []
    for schedule in SCHEDULES:
        with loaded.runtime.using(schedule or LayerSchedule.identity(loaded.n_layers)):
            out.append(token_logprobs(loaded, reqs, token_budget=64)[0])
    return out


def assert_same(a, b, atol):
    for x, y in zip(a, b, strict=True):
        for row_x, row_y in zip(x, y, strict=True):
            for (lp_x, top_x), (lp_y, top_y) in zip(row_x, row_y, strict=True):
                assert np.allclose(lp_x, lp_y, rtol=0, atol=atol) and top_x == top_y


@pytest.fixture
def counted(monkeypatch):
    """Calls of torch's SDPA with grouped heads passed as they are (enable_gqa) under a mask."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def wrapper(*args, **kwargs):
        if kwargs.get("enable_gqa") and kwargs.get("attn_mask") is not None:
            calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", wrapper)
    return calls


@pytest.mark.parametrize("family", sorted(TINY))
def test_grouped_heads_score_as_repeated_heads(tmp_path, monkeypatch, counted, family):
    save_tiny(tmp_path, family)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.runtime.grouped_sdpa is False  # on a CPU nothing is switched
    reqs = requests()
    before = scores(loaded, reqs)
    assert not counted
    monkeypatch.setattr(attention, "fused_grouped_masked", lambda *args: True)  # as where a fused kernel has it
    if not use_grouped_sdpa(loaded.runtime.config, "cuda"):  # the switch itself, on this CPU model
        assert loaded.runtime.config._attn_implementation != "sdpa"  # eager families: Gemma 2, gpt-oss
        return
    assert loaded.runtime.config._attn_implementation == GROUPED_SDPA
    loaded.runtime.prefix_cache.clear()
    after = scores(loaded, reqs)
    assert counted, "the grouped path never ran"
    assert all(shape[1] == 4 for shape in counted)  # the tiny models' 4 query heads over 2 key/value heads
    assert_same(before, after, atol=1e-5)


def test_a_device_without_the_fused_kernel_keeps_transformers_path(tmp_path, monkeypatch, counted):
    save_tiny(tmp_path, "llama")
    loaded = load_model(str(tmp_path), device="cpu")
    reqs = requests(1)
    before = scores(loaded, reqs)
    monkeypatch.setattr(attention, "fused_grouped_masked", lambda *args: False)
    assert use_grouped_sdpa(loaded.runtime.config, "cuda")
    loaded.runtime.prefix_cache.clear()
    assert_same(before, scores(loaded, reqs), atol=0)  # the very same calls: bit for bit
    assert not counted


def test_the_switch_and_its_probe():
    class Config:
        _attn_implementation = "sdpa"

    config = Config()
    assert not use_grouped_sdpa(config, torch.device("cpu")) and config._attn_implementation == "sdpa"
    assert use_grouped_sdpa(config, torch.device("cuda")) and config._attn_implementation == GROUPED_SDPA
    config._attn_implementation = "eager"
    assert not use_grouped_sdpa(config, "cuda") and config._attn_implementation == "eager"
    # the probe asks SDPA with the unfused math kernel disabled: this CPU's fused kernel takes a mask
    # with grouped heads in float32, and nothing takes a mask whose dtype SDPA rejects
    cpu = torch.device("cpu")
    assert attention._probe(cpu, torch.float32, 4, 2, 16, torch.bool) is True
    assert attention._probe(cpu, torch.float32, 4, 2, 16, torch.long) is False
