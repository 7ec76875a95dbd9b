"""Grouped heads read in place under a mask score what transformers' SDPA path (repeat_kv) scores."""

import pytest
import torch

from rys_search import attention
from rys_search.attention import GROUPED_SDPA, use_grouped_sdpa
from rys_search.loading import load_model
from test_compiling import assert_close, requests, scores
from tiny import TINY, save_tiny


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
    loaded.runtime.prefix_cache = None  # every call runs every layer, before and after the switch
    reqs = requests(0)
    before = scores(loaded, reqs)
    assert not counted
    monkeypatch.setattr(attention, "fused_grouped_masked", lambda *args: True)  # as where a fused kernel has it
    if not use_grouped_sdpa(loaded.runtime.config, "cuda"):  # the switch itself, on this CPU model
        assert loaded.runtime.config._attn_implementation != "sdpa"  # eager families: Gemma 2, gpt-oss
        return
    assert loaded.runtime.config._attn_implementation == GROUPED_SDPA
    after = scores(loaded, reqs)
    assert counted, "the grouped path never ran"
    assert all(shape[1] == 4 for shape in counted)  # the tiny models' 4 query heads over 2 key/value heads
    assert_close(before, after, atol=1e-5)


def test_a_device_without_the_fused_kernel_keeps_transformers_path(tmp_path, monkeypatch, counted):
    save_tiny(tmp_path, "llama")
    loaded = load_model(str(tmp_path), device="cpu")
    loaded.runtime.prefix_cache = None
    reqs = requests(1)
    before = scores(loaded, reqs)
    monkeypatch.setattr(attention, "fused_grouped_masked", lambda *args: False)
    assert use_grouped_sdpa(loaded.runtime.config, "cuda")
    assert_close(before, scores(loaded, reqs), atol=0, rtol=0)  # the very same calls: bit for bit
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
