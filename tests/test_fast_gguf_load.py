"""The parallel first load of a GGUF gives exactly the tensors transformers' own GGUF loader gives."""

import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from transformers import AutoModelForCausalLM

from rys_search.ggufio import _Prefetcher, fast_gguf_load, plain_reader
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
    plain = transformers_load(path)
    assert_same_state(model, plain)
    assert model.config.to_dict() == plain.config.to_dict()
    from transformers import AutoTokenizer

    with fast_gguf_load(path):  # the header's values parsed once and shared by every pass
        fast_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert fast_tokenizer.get_vocab() == tokenizer.get_vocab() and len(tokenizer.get_vocab()) > 100
    assert fast_tokenizer("a tiny test").input_ids == tokenizer("a tiny test").input_ids


def test_the_plain_reader_reads_what_gguf_reads():
    """The real SmolLM2 file: every field (values and raw parts) and every tensor (bytes, shape, type)
    as gguf-py reads them."""
    import numpy as np

    path = default_gguf()
    want, got = GGUFReader(path), plain_reader()(path)
    assert list(want.fields) == list(got.fields) and len(want.fields) > 10
    for name, field in want.fields.items():
        other = got.fields[name]
        assert field.types == other.types and field.data == other.data and field.offset == other.offset, name
        assert len(field.parts) == len(other.parts)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(field.parts, other.parts)), name
    assert [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in want.tensors] == [
        (t.name, t.tensor_type, list(t.shape), t.data_offset) for t in got.tensors]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(want.tensors, got.tensors))
    assert not isinstance(got.fields["general.architecture"].parts[-1], np.memmap)  # the point: no memmap slices


@pytest.mark.slow
def test_smollm2_first_load_gives_transformers_tensors(smollm2):
    """The real Q4_1 file: the fast load, and the model load_model cached from it, equal transformers' load."""
    path = default_gguf()
    fast, _ = fast_load(path)
    plain = transformers_load(path)
    assert_same_state(fast, plain)
    assert_same_state(smollm2.model, plain)  # load_model's first load wrote the cache through the fast path


def test_each_header_element_is_parsed_once_across_the_config_tokenizer_and_weight_passes(tmp_path, monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as utils
    from transformers import AutoTokenizer

    from rys_search.export.gguf import plan_from_hf, write_gguf

    save_tiny(tmp_path / "hf", "llama", bpe=True)
    source = load_model(str(tmp_path / "hf"), device="cpu")
    path = tmp_path / "gguf" / "tiny.gguf"
    path.parent.mkdir()
    write_gguf(plan_from_hf(source.model, source.tokenizer, source.family, list(range(6)), "q8_0", {}, "tiny"), path)
    calls = []
    original = utils._gguf_parse_value
    monkeypatch.setattr(utils, "_gguf_parse_value", lambda value, kind: calls.append(id(value)) or original(value, kind))
    elements = sum(len(f.data) for f in GGUFReader(path).fields.values())
    transformers_load(path), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert len(calls) >= 2 * elements  # transformers alone: every pass parses every element
    calls.clear()
    with fast_gguf_load(path):
        transformers_load(path), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert 0 < len(calls) <= elements and len(set(calls)) == len(calls)


def test_a_first_load_parses_the_gguf_header_once(tmp_path, monkeypatch):
    """The header check and the load share one parse (a parse reads the tokenizer's arrays, seconds
    on a real model); a file changed since is parsed again."""
    import os

    from rys_search import ggufio
    from rys_search.export.gguf import plan_from_hf, write_gguf

    save_tiny(tmp_path / "hf", "llama", bpe=True)
    source = load_model(str(tmp_path / "hf"), device="cpu")
    path = tmp_path / "gguf" / "tiny.gguf"
    path.parent.mkdir()
    write_gguf(plan_from_hf(source.model, source.tokenizer, source.family, list(range(6)), "q8_0", {}, "tiny"), path)
    real = plain_reader()
    made = []

    class Counting(real):
        def __init__(self, *args, **kwargs):
            made.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ggufio, "plain_reader", lambda: Counting)
    monkeypatch.setenv("RYS_SEARCH_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(path), device="cpu")
    assert loaded.from_cache is False and len(made) == 1
    assert_same_state(loaded.model, transformers_load(path))
    ggufio.inspect_gguf(path)
    assert len(made) == 1
    os.utime(path, ns=(0, 0))  # the file changed (its mtime): its header is read again
    ggufio.inspect_gguf(path)
    assert len(made) == 2
