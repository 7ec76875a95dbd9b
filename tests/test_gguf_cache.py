"""The dequantized GGUF cache when several processes load the same new file at once."""

import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from test_export import write_source_gguf
from tiny import save_tiny

LOAD = """
import os, sys, time
while not os.path.exists(sys.argv[2]):  # start together
    time.sleep(0.001)
from rys_search.loading import load_model
loaded = load_model(sys.argv[1], device="cpu")
print("from_cache", loaded.from_cache, loaded.n_layers)
"""


def test_two_processes_loading_one_new_gguf_dequantize_it_once(tmp_path):
    folder = tmp_path / "hf"
    save_tiny(folder, "llama", bpe=True)
    gguf = tmp_path / "tiny.gguf"
    write_source_gguf(str(folder), gguf)
    env = {**os.environ, "RYS_SEARCH_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", LOAD, str(gguf), str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(3)  # both past their imports, waiting for the go
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    answers = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    assert answers == ["from_cache False 6", "from_cache True 6"]  # one converted, the other read its result
    [entry] = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert (entry / "rys-cache.json").is_file() and not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]


def assert_same_load(first, cached):
    """A first load (its model built from the weights in memory) and a cached load give the same model:
    every parameter and buffer (dtype and values), config, generation config and tokenizer."""
    import torch

    from rys_search.chat import chat_input_ids

    def tensors(loaded):
        return {**dict(loaded.model.named_buffers()), **loaded.model.state_dict()}

    a, b = tensors(first), tensors(cached)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])] == []
    assert first.model.config.to_dict() == cached.model.config.to_dict()
    assert first.model.generation_config.to_dict() == cached.model.generation_config.to_dict()
    assert type(first.tokenizer) is type(cached.tokenizer)
    prompt = "Name three prime numbers below 20."
    assert torch.equal(chat_input_ids(first.tokenizer, prompt), chat_input_ids(cached.tokenizer, prompt))


@pytest.fixture
def tiny_gguf(tmp_path, monkeypatch):
    folder = tmp_path / "hf"
    save_tiny(folder, "llama", bpe=True)
    path = tmp_path / "tiny.gguf"
    write_source_gguf(str(folder), path, kind="q8_0")
    monkeypatch.setenv("RYS_SEARCH_CACHE", str(tmp_path / "cache"))
    return path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_first_load_gives_the_model_a_cached_load_gives(tiny_gguf, dtype):
    from rys_search.loading import load_model

    first = load_model(str(tiny_gguf), device="cpu", dtype=dtype)
    assert first.from_cache is False
    first.cache_writer.wait()
    cached = load_model(str(tiny_gguf), device="cpu", dtype=dtype)
    assert cached.from_cache is True and cached.cache_writer is None
    assert_same_load(first, cached)
    # where each load's time went: the first dequantized the file, the cached one read the copy
    assert {"imports", "header", "dequantize", "tokenizer", "weights"} <= set(first.phases)
    assert set(cached.phases) == {"imports", "weights", "tokenizer"}
    assert sum(cached.phases.values()) <= cached.load_seconds


def test_a_first_load_returns_while_its_copy_is_written_and_the_copy_appears_whole(tiny_gguf, monkeypatch):
    from rys_search.loading import CacheWriter, gguf_cache_dir, load_model

    go, write = threading.Event(), CacheWriter.run
    monkeypatch.setattr(CacheWriter, "run", lambda self: (go.wait(60), write(self)))
    stale = gguf_cache_dir(tiny_gguf).with_name(gguf_cache_dir(tiny_gguf).name + ".tmp999999")  # a killed writer's
    stale.mkdir(parents=True)
    loaded = load_model(str(tiny_gguf), device="cpu")
    entry = gguf_cache_dir(tiny_gguf)
    assert loaded.from_cache is False and loaded.cache_writer.is_alive()
    assert not entry.exists() and not stale.exists()
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad():
        assert torch.isfinite(loaded.model(ids).logits).all()  # the model is usable meanwhile
    go.set()
    assert loaded.cache_writer.wait() == entry and (entry / "rys-cache.json").is_file()
    assert [p.name for p in entry.parent.iterdir() if ".tmp" in p.name] == []


def test_a_failed_copy_is_one_warning_and_the_next_load_dequantizes_again(tiny_gguf, monkeypatch, caplog):
    from transformers import PreTrainedModel

    from rys_search.loading import ModelFileError, ensure_cached, gguf_cache_dir, load_model, resolve_model

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedModel, "save_pretrained", full)
        loaded = load_model(str(tiny_gguf), device="cpu")
        with pytest.raises(ModelFileError, match="^cannot write the dequantized copy of tiny.gguf into .*No space"):
            loaded.cache_writer.wait()
        assert "the next load dequantizes it again" in caplog.text
        with pytest.raises(ModelFileError, match="No space left"):  # the workers' call needs the copy: it raises
            ensure_cached(resolve_model(str(tiny_gguf)))
    assert [p.name for p in gguf_cache_dir(tiny_gguf).parent.iterdir() if not p.name.endswith(".lock")] == []
    again = load_model(str(tiny_gguf), device="cpu")  # the lock was released: this process may write it
    assert again.from_cache is False and again.cache_writer.wait().is_dir()
    assert load_model(str(tiny_gguf), device="cpu").from_cache is True
