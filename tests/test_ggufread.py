"""rys-search's own GGUF reader (ggufread): the exporter's map run backwards.

Every family's tiny model is written as a GGUF and read back: the same tensors, bit for bit, and
the same config. Where transformers also reads the architecture, both readers must agree (an
independent check of the inverse map, on quantized data too); for the architectures only
rys-search reads (OLMo 2, Granite, Mixtral, gpt-oss), llama.cpp's logits are compared with a
physical duplicate in test_export.py. A schedule run on such a GGUF must equal a physical duplicate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rys_search.architectures import families, family_for
from rys_search.errors import UserError
from rys_search.schedule import LayerSchedule
from test_gguf_cache import assert_same_load
from tiny import GGUF_SAFE, physically_duplicated, save_tiny

FROM_HF = sorted(name for name, f in families().items() if f.gguf_from_hf)
RYS_READ = sorted(name for name, f in families().items() if f.gguf_reader == "rys-search")
SCHEDULE = "0-1,2-3x3,4,5x2"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RYS_SEARCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(family, kind="f32") -> (GGUF path, HF folder, model): the tiny model written as a GGUF."""
    made: dict[tuple[str, str], tuple[Path, Path, object]] = {}

    def get(family: str, kind: str = "f32", **extra):
        key = (family, kind, tuple(sorted(extra.items())))
        if key not in made:
            from rys_search.export.gguf import plan_from_hf, write_gguf
            from rys_search.loading import wrap_model
            from transformers import AutoTokenizer

            folder = tmp_path_factory.mktemp(f"src-{family}")
            model = save_tiny(folder, family, bpe=True, sharpen=30.0, **GGUF_SAFE[family])
            loaded = wrap_model(model, AutoTokenizer.from_pretrained(folder))
            path = folder.parent / f"{folder.name}-{kind}.gguf"
            plan = plan_from_hf(loaded.model, loaded.tokenizer, loaded.family, list(range(6)), kind, {}, "tiny")
            for edit in extra.get("edits", ()):
                edit(plan)
            write_gguf(plan, path)
            made[key] = (path, folder, model)
        return made[key]

    return get


@pytest.mark.parametrize("family", FROM_HF)
def test_a_gguf_reads_back_as_the_model_it_was_written_from(family, exported):
    from transformers import AutoTokenizer

    from rys_search.ggufmap import CONFIG_KEYS
    from rys_search.ggufread import read_gguf

    path, folder, model = exported(family)
    config, state, tokenizer = read_gguf(path, family_for(family))
    want = {k: v for k, v in model.state_dict().items()
            if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
    offset = family_for(family).gguf_norm_offset  # Gemma's norms are written + 1: (w + 1) - 1, rounded in f32
    want = {k: (v + offset) - offset if offset and k.endswith("norm.weight") else v for k, v in want.items()}
    assert sorted(state) == sorted(want)
    unequal = [k for k in want if not torch.equal(state[k], want[k])]
    assert unequal == []
    entries = ["num_hidden_layers", "tie_word_embeddings", "head_dim", "bos_token_id", "eos_token_id",
               "pad_token_id", *(entry for _, entry, _ in CONFIG_KEYS),
               *(entry for _, entry, _ in family_for(family).gguf_config)]
    assert {e: getattr(config, e, None) for e in entries} == {e: getattr(model.config, e, None) for e in entries}
    assert config.rope_parameters["rope_theta"] == model.config.rope_parameters["rope_theta"]
    original = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == original.chat_template and tokenizer.eos_token == original.eos_token
    text = "<|im_start|>user\nWhat is 17*23? Ann's   answer:\n\n 391.<|im_end|>"
    assert tokenizer(text).input_ids == original(text).input_ids


@pytest.mark.parametrize("family, kind", [("llama", "q8_0"), ("qwen2", "f16"), ("qwen3_moe", "f32")])
def test_where_transformers_reads_the_gguf_too_both_readers_agree(family, kind, exported):
    """llama: q/k rows permuted back, quantized blocks dequantized on the thread pool; qwen2: biases, f16;
    qwen3_moe: expert tensors; each against transformers' own reader of the same file."""
    from transformers import AutoModelForCausalLM

    from rys_search.ggufread import read_gguf

    path, _, model = exported(family, kind)
    _, state, _ = read_gguf(path, family_for(family))
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).state_dict()
    assert [k for k in state if not torch.equal(state[k], theirs[k])] == []
    if kind != "f32":  # a lossy type: the values moved, so the comparison above had something to agree on
        assert any(not torch.equal(state[k], model.state_dict()[k]) for k in state)


@pytest.mark.parametrize("family", RYS_READ)
def test_a_schedule_on_a_gguf_only_rys_search_reads_equals_a_physical_duplicate(family, exported):
    from rys_search.loading import load_model

    path, _, model = exported(family)
    loaded = load_model(str(path), device="cpu")
    assert loaded.family.name == family and loaded.from_cache is False
    ids = torch.tensor([[1, 70, 71, 72, 73, 80, 90, 100, 110, 5, 6, 7, 250, 260, 270, 9]])
    order = LayerSchedule.parse(SCHEDULE).expand()
    with torch.no_grad():
        with loaded.runtime.using(LayerSchedule.parse(SCHEDULE)):
            got = loaded.model(ids).logits[0]
        want = physically_duplicated(model, order)(ids).logits[0]
        wrong = physically_duplicated(model, [*order[:-3], order[-2], order[-3], order[-1]])(ids).logits[0]
    assert float((got - want).abs().max()) <= 1e-5
    assert float((got - wrong).abs().max()) > 0.1  # a layer out of place shows
    loaded.cache_writer.wait()
    cached = load_model(str(path), device="cpu")
    assert cached.from_cache is True
    assert_same_load(loaded, cached)  # the first load's model, built from memory, is the cached load's


def test_info_reads_the_config_of_a_gguf_only_rys_search_reads(exported):
    path, _, _ = exported("olmo2")
    done = subprocess.run([sys.executable, "-m", "rys_search.cli", "info", "--model", str(path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"family": "olmo2"' in done.stdout and '"layers": 6' in done.stdout


def _drop_tensor(name):
    def edit(plan):
        plan.tensors = [t for t in plan.tensors if t.name != name]
    return edit


def _per_layer(key, values):
    def edit(plan):
        import gguf

        plan.kv = [kv for kv in plan.kv if kv[0] != key]
        plan.kv.append((key, values, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32))
    return edit


def _set(key, value):
    def edit(plan):
        import gguf

        plan.kv = [kv for kv in plan.kv if kv[0] != key] + [(key, value, gguf.GGUFValueType.STRING, None)]
    return edit


def _number(key, value):
    def edit(plan):
        import gguf

        plan.kv = [kv for kv in plan.kv if kv[0] != key] + [(key, value, gguf.GGUFValueType.UINT32, None)]
    return edit


@pytest.mark.parametrize("edits, message", [
    ((_drop_tensor("blk.3.attn_k_norm.weight"),), "missing: blk.3.attn_k_norm.weight"),
    ((_per_layer("olmo2.attention.head_count_kv", [2, 2, 2, 2, 2, 1]),),
     "has a different attention.head_count_kv per layer"),
    ((_set("olmo2.rope.scaling.type", "longrope"),), "uses 'longrope' RoPE scaling"),
    ((_number("olmo2.feed_forward_length", 96),), "tensor blk.0.ffn_gate.weight has 8192 values; the olmo2 config its metadata describes needs 6144"),
])
def test_a_gguf_the_reader_cannot_place_is_refused_in_one_line(edits, message, exported):
    path, _, _ = exported("olmo2", "f32", edits=edits)
    done = subprocess.run([sys.executable, "-m", "rys_search.cli", "export", "--model", str(path), "--schedule",
                           SCHEDULE, "--format", "hf", "--out", str(path.parent / "out")],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    from rys_search.loading import load_model

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_model(str(path), device="cpu")


@pytest.mark.slow
def test_the_real_smollm2_read_by_rys_search_equals_transformers_reading(smollm2):
    """A real quantized file (Q4_1, q/k permuted, a real tokenizer): rys-search's reader against the
    transformers reading the session's SmolLM2 came from."""
    from rys_search.ggufread import GGUFCheckpoint
    from rys_search.loading import default_gguf

    checkpoint = GGUFCheckpoint(default_gguf(), family_for("llama"))
    state, theirs = checkpoint.state(), smollm2.model.state_dict()
    assert sorted(state) == sorted(k for k in theirs if k != "lm_head.weight")  # SmolLM2 ties its output matrix
    assert [k for k in state if not torch.equal(state[k], theirs[k])] == []
    text = "What is 17*23? Answer with one number."
    assert checkpoint.tokenizer()(text).input_ids == smollm2.tokenizer(text).input_ids
    for entry in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_key_value_heads", "vocab_size",
                  "tie_word_embeddings", "bos_token_id", "eos_token_id"):
        assert getattr(checkpoint.config, entry) == getattr(smollm2.model.config, entry), entry
    # the file's float32 1e-05: transformers keeps 9.9999997e-06, rys-search the decimal it was written from
    assert checkpoint.config.rms_norm_eps == 1e-05 == pytest.approx(smollm2.model.config.rms_norm_eps, rel=1e-6)
