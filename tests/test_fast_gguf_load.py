"""The parallel first load of a GGUF gives exactly the tensors transformers' own GGUF loader gives."""

import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from transformers import AutoModelForCausalLM

from rys_search.ggufio import _Prefetcher, fast_gguf_load
from rys_search.loading import default_gguf, load_model
from tiny import save_tiny


def transformers_load(path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


def assert_same_state(got, want):
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def fast_load(path, **kwargs):
    with fast_gguf_load(path, **kwargs) as stats:
        model = transformers_load(path)
    quantized = [t for t in GGUFReader(path).tensors if t.tensor_type != GGMLQuantizationType.F32]
    assert quantized and stats.parsed == 1 and stats.misses == 0  # every tensor came from the pool
    assert sorted(stats.names) == sorted(t.name for t in quantized)
    return model, quantized


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # llama: transformers un-permutes q/k; qwen2: not
def test_exported_q8_0_gguf_loads_exactly_as_transformers_loads_it(family, tmp_path, monkeypatch):
    from rys_search.export.gguf import plan_from_hf, write_gguf

    extra = {} if family == "llama" else {"sliding_window": None, "use_sliding_window": False, "layer_types": None}
    save_tiny(tmp_path / "hf", family, bpe=True, **extra)
    source = load_model(str(tmp_path / "hf"), device="cpu")
    path = tmp_path / "gguf" / "tiny.gguf"
    path.parent.mkdir()
    write_gguf(plan_from_hf(source.model, source.tokenizer, source.family, list(range(6)), "q8_0", {}, "tiny"), path)
    monkeypatch.setattr(_Prefetcher, "CHUNK", 100)  # a few rows per task: tensors split across threads
    model, quantized = fast_load(path, threads=3)
    assert any(t.tensor_type == GGMLQuantizationType.Q8_0 for t in quantized)
    assert_same_state(model, transformers_load(path))


@pytest.mark.slow
def test_smollm2_first_load_gives_transformers_tensors(smollm2):
    """The real Q4_1 file: the fast load, and the model load_model cached from it, equal transformers' load."""
    path = default_gguf()
    fast, _ = fast_load(path)
    plain = transformers_load(path)
    assert_same_state(fast, plain)
    assert_same_state(smollm2.model, plain)  # load_model's first load wrote the cache through the fast path
