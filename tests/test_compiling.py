"""Compiled decoder layers score what eager ones score, share their graphs, and fall back safely."""

import logging

import numpy as np
import pytest
import torch

from rys_search.compiling import compile_layers, compile_setting, uncompile_layers
from rys_search.errors import UserError
from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring.engine import token_logprobs
from tiny import save_tiny

from rys_search.scoring.engine import Request

SCHEDULES = ["0-1,2-3x3,4,5x2", "0-4,2-5"]


def requests(seed):
    """Prompts shared by several continuations (the KV-cache path) and whole sequences."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        prompt = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(4, 14)))]
        for _ in range(3):
            tail = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(1, 4)))]
            targets = [(len(prompt), [5, 6])] + [(len(prompt) + j, [tail[j]]) for j in range(1, len(tail))]
            out.append(Request(prompt + tail, targets, prefix=len(prompt)))
    for _ in range(5):
        ids = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(3, 12)))]
        out.append(Request(ids, [(len(ids) - 1, [ids[-1], 9]), (len(ids), [4])]))
    return out


def every_layer(folder, family, dtype=None):
    """A tiny model of the family on the CPU whose calls run every layer (no prefix reuse), so that two
    ways of running its layers see the same work."""
    save_tiny(folder, family)
    loaded = load_model(str(folder), device="cpu", dtype=dtype)
    loaded.runtime.prefix_cache = None
    return loaded


@pytest.fixture
def loaded(tmp_path, family):
    return every_layer(tmp_path, family)


def scores(loaded, reqs):
    out = []
    for schedule in [None, *SCHEDULES]:
        with loaded.runtime.using(schedule or LayerSchedule.identity(loaded.n_layers)):
            got, _ = token_logprobs(loaded, reqs, token_budget=64)
        out.append(got)
    return out


def assert_close(a, b, atol, rtol=1e-5):
    for x, y in zip(a, b, strict=True):
        for row_x, row_y in zip(x, y, strict=True):
            for (lp_x, top_x), (lp_y, top_y) in zip(row_x, row_y, strict=True):
                assert np.allclose(lp_x, lp_y, rtol=rtol, atol=atol) and top_x == top_y


def test_compiled_layers_score_as_eager_ones_and_share_graphs(loaded, caplog):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    reqs = requests(2)
    eager = scores(loaded, reqs)
    layers = loaded.runtime._original_layers
    assert compile_layers(layers, backend="aot_eager") >= len(layers)  # the layers and their norms and MLPs
    with caplog.at_level(logging.WARNING, logger="rys_search.compiling"):
        compiled = scores(loaded, reqs)  # whole batches (layer graphs) and shared prompts (part graphs)
    assert not caplog.records  # nothing fell back to eager
    assert_close(compiled, eager, atol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    assert 0 < graphs <= 14  # shared by 6 layers and their clones: per class, attention kind, input rank and mask
    uncompile_layers(layers)
    assert all(not type(m).__name__.startswith("Compiled") for m in loaded.model.modules())
    assert_close(scores(loaded, reqs), eager, atol=0)


def test_fused_norms_are_left_out_of_the_compiled_parts(tmp_path, caplog):
    """On a GPU the runtime fuses the norms before compiling (norms.py): the compiled parts are then the
    MLPs alone, and the whole-layer graphs trace the fused norms; the scores stay the eager ones."""
    from rys_search.compiling import _parts
    from rys_search.norms import fuse_norms, unfuse_norms

    save_tiny(tmp_path, "qwen3")  # Qwen 3: also a query and a key norm inside the attention
    loaded = load_model(str(tmp_path), device="cpu")
    loaded.runtime.prefix_cache = None
    reqs = requests(4)
    eager = scores(loaded, reqs)
    layers = loaded.runtime._original_layers
    assert fuse_norms(loaded.model) == 4 * len(layers) + 1
    assert [type(m).__name__ for m in _parts(layers[0])] == ["Qwen3MLP"]
    torch._dynamo.reset()
    assert compile_layers(layers, backend="aot_eager") == 2 * len(layers)  # each layer and its MLP
    with caplog.at_level(logging.WARNING, logger="rys_search.compiling"):
        compiled = scores(loaded, reqs)
    assert not caplog.records
    assert_close(compiled, eager, atol=1e-5)
    uncompile_layers(layers)
    unfuse_norms(loaded.model)


def test_a_failing_compile_falls_back_to_eager_once(tmp_path, monkeypatch, caplog):
    save_tiny(tmp_path, "llama")
    loaded = load_model(str(tmp_path), device="cpu")
    reqs = requests(3)
    eager = scores(loaded, reqs)
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    compile_layers(loaded.runtime._original_layers, mode="fallback-test")  # a mode of its own: fresh classes
    with caplog.at_level(logging.WARNING, logger="rys_search.compiling"):
        fallen = scores(loaded, reqs)
    assert_close(fallen, eager, atol=0)
    assert calls["n"] == 3  # once per class (the layer, its norm, its MLP); never retried
    assert sum("runs eagerly" in r.getMessage() for r in caplog.records) == 3


def test_the_setting(monkeypatch):
    monkeypatch.delenv("RYS_SEARCH_COMPILE", raising=False)
    assert compile_setting(torch.device("cpu")) is None
    assert compile_setting(torch.device("cuda")) == "default"
    assert compile_setting(torch.device("cuda"), 8_000_000_000) == "default"
    assert compile_setting(torch.device("cuda"), 135_000_000) is None  # SmolLM2: its layers run faster eagerly
    assert compile_setting(torch.device("cpu"), 8_000_000_000) is None
    for value, want in [("0", None), ("off", None), ("1", "default"), ("on", "default"),
                        ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs")]:
        monkeypatch.setenv("RYS_SEARCH_COMPILE", value)
        assert compile_setting(torch.device("cuda")) == want
    for value in ("reduce-overhead", "max-autotune"):  # CUDA graphs: their outputs are overwritten under the engine
        monkeypatch.setenv("RYS_SEARCH_COMPILE", value)
        with pytest.raises(UserError, match=f"RYS_SEARCH_COMPILE={value}: this torch.compile mode captures CUDA graphs"):
            compile_setting(torch.device("cuda"))
    monkeypatch.setenv("RYS_SEARCH_COMPILE", "1")
    assert compile_setting(torch.device("cpu")) == "default"
    assert compile_setting(torch.device("cuda"), 135_000_000) == "default"  # asked for: on whatever the size


@pytest.mark.slow
def test_inductor_layers_score_as_eager_ones(tmp_path, caplog):
    """The real backend (C++ on the CPU, Triton on a GPU): a few minutes on a busy CPU."""
    from torch._dynamo.utils import counters

    save_tiny(tmp_path, "qwen3")
    loaded = load_model(str(tmp_path), device="cpu")
    loaded.runtime.prefix_cache = None
    reqs = requests(4)
    eager = scores(loaded, reqs)
    torch._dynamo.reset()
    counters.clear()
    compile_layers(loaded.runtime._original_layers)
    with caplog.at_level(logging.WARNING, logger="rys_search.compiling"):
        assert_close(scores(loaded, reqs), eager, atol=1e-4)
    assert not caplog.records and counters["stats"]["unique_graphs"] > 0  # compiled, not fallen back
