"""Export round trips: tiny models of every family, GGUF and Hugging Face, checked against an
independently built physical duplicate, llama.cpp's own greedy choices and the GGUF bytes."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rys_search.cli import main
from rys_search.schedule import LayerSchedule
from tiny import GGUF_SAFE, TINY, physically_duplicated, save_tiny

SCHEDULE = "0-1,2-3x3,4,5x2"
PATH = LayerSchedule.parse(SCHEDULE).expand()
GGUF_FAMILIES = ["gemma2", "llama", "mistral", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe"]
# GGUFs of these families are read by rys-search's own reader (ggufread), which shares the exporter's
# map: llama.cpp is the independent check of that map (test_gguf_from_hf_read_by_rys_search_...).
RYS_READ = ["gpt_oss", "granite", "mixtral", "olmo2"]
# A GGUF decides Gemma 2's and gpt-oss's attention kind by position (period 2): blocks of even length.
GGUF_SCHEDULE = {"gemma2": "0-1,2-3x3,4-5", "gpt_oss": "0-1,2-3x3,4-5"}


def gguf_overrides(family: str) -> dict:
    return GGUF_SAFE[family]


@pytest.fixture(scope="module")
def bpe_tiny(tmp_path_factory):
    """bpe_tiny(family) -> (folder, model): a tiny model with a byte-level BPE tokenizer, sharp logits."""
    made: dict[str, tuple[str, object]] = {}

    def get(family: str):
        if family not in made:
            # (the folder's name becomes the GGUF's general.name: transformers reads a "llama" GGUF named
            # mistral as Mistral, and llama.cpp looks up Phi-3's own special tokens in a model named phi3,
            # which the tiny tokenizer lacks)
            folder = tmp_path_factory.mktemp(f"bpe-{family.replace('phi3', 'phi')}")
            model = save_tiny(folder, family, bpe=True, sharpen=30.0, **gguf_overrides(family))
            made[family] = (str(folder), model.eval())
        return made[family]

    return get


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RYS_SEARCH_CACHE", str(tmp_path / "cache"))


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


IDS = [1, 70, 71, 72, 73, 80, 90, 100, 110, 5, 6, 7, 250, 260, 270, 9]


def exported(out: Path) -> Path:
    (entry,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return entry


# ---- Hugging Face export --------------------------------------------------------------


def test_hf_export_matches_a_physical_duplicate(family, saved_tiny, tmp_path, capsys):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tiny import tiny_model

    folder = saved_tiny(family)
    out = tmp_path / "out"
    assert main(["export", "--model", folder, "--schedule", SCHEDULE, "--format", "hf", "--out", str(out), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    # fp32 weights as the source ran them: equal up to the order of float sums, which on the CPU can
    # follow the weights' memory alignment (MoE expert kernels: up to 6e-7 between two copies)
    assert result["verification"]["transformers"]["max_abs_logit_diff"] <= 1e-5
    target = exported(out)
    config = AutoConfig.from_pretrained(target)
    assert config.num_hidden_layers == len(PATH)
    source_types = getattr(tiny_model(family).config, "layer_types", None)
    if source_types:  # gemma3's attention pattern, qwen3's sliding layers follow their source layer
        assert config.layer_types == [source_types[s] for s in PATH]
    reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    duplicate = physically_duplicated(tiny_model(family), PATH)
    ids = [5, 9, 14, 20, 33, 40, 41, 42, 60, 70, 80, 90]
    assert torch.allclose(logits_of(reloaded, ids), logits_of(duplicate, ids), atol=1e-5)
    card = (target / "README.md").read_text()
    assert SCHEDULE in card and "Verification" in card and "from_pretrained" in card
    assert (target / "tokenizer.json").is_file() and "chat_template" in json.dumps(
        json.loads((target / "tokenizer_config.json").read_text())) or (target / "chat_template.jinja").is_file()


def test_hf_export_in_bf16_is_checked_with_the_bf16_tolerance(saved_tiny, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["export", "--model", saved_tiny("llama"), "--schedule", SCHEDULE, "--format", "hf", "--out", str(out),
            "--dtype", "bfloat16", "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    check = result["verification"]["transformers"]
    assert result["written_as"] == "bfloat16" and check["tolerance_kind"] == "bf16"
    assert 0 < check["max_abs_logit_diff"] <= check["tolerance"]


# ---- GGUF from a Hugging Face model, and GGUF from that GGUF ----------------------------


@pytest.mark.parametrize("family", GGUF_FAMILIES + RYS_READ)
def test_gguf_from_hf_loads_in_transformers_and_llama_cpp(family, bpe_tiny, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from rys_search.architectures import family_for
    from rys_search.ggufread import read_model

    folder, model = bpe_tiny(family)
    schedule = GGUF_SCHEDULE.get(family, SCHEDULE)
    out = tmp_path / "out"
    args = ["export", "--model", folder, "--schedule", schedule, "--format", "gguf", "--type", "f32",
            "--out", str(out), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    llama = result["verification"]["llama_cpp"]
    assert llama["passed"] and llama["mismatches"] == 0 and llama["greedy_tokens_checked"] >= 32
    assert llama["near_ties"] < llama["greedy_tokens_checked"] / 4  # sharp logits: the check has teeth
    assert llama["prompts_tokenized_alike"] == llama["prompts_tokenized"] == 4
    assert result["verification"]["transformers"]["max_abs_logit_diff"] <= 1e-4
    target = exported(out)
    if family in RYS_READ:
        reloaded, _ = read_model(target, family_for(family))
    else:
        reloaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=target.name, dtype=torch.float32).eval()
    duplicate = physically_duplicated(model, LayerSchedule.parse(schedule).expand())
    assert torch.allclose(logits_of(reloaded, IDS), logits_of(duplicate, IDS), atol=1e-4)


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    # an f32 KV cache (type 0): with llama.cpp's default f16 one, logits differ by up to 0.06
    llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1, seed=0, type_k=0,
                type_v=0)
    try:
        llm.eval(ids)
        return np.asarray(llm.scores[: len(ids)]).copy()
    finally:
        llm.close()


@pytest.mark.parametrize("family", RYS_READ)
def test_gguf_from_hf_read_by_rys_search_runs_in_llama_cpp_like_a_duplicate(family, bpe_tiny, tmp_path, capsys):
    """rys-search's reader shares the exporter's map, so reading the export back cannot tell a wrong map
    (a q/k permutation, a split) from a right one; llama.cpp's logits on the f32 export can: they are
    compared with a physical duplicate here."""
    folder, model = bpe_tiny(family)
    schedule = GGUF_SCHEDULE.get(family, SCHEDULE)
    path = LayerSchedule.parse(schedule).expand()
    out = tmp_path / "out"
    args = ["export", "--model", folder, "--schedule", schedule, "--format", "gguf", "--type", "f32",
            "--out", str(out), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    llama = result["verification"]["llama_cpp"]
    assert llama["passed"] and llama["mismatches"] == 0 and llama["greedy_tokens_checked"] >= 32
    assert llama["near_ties"] < llama["greedy_tokens_checked"] / 4
    got = llama_cpp_logits(exported(out), IDS)
    want = logits_of(physically_duplicated(model, path), IDS).numpy()
    assert float(np.abs(got - want).max()) <= 1e-3  # measured: 2e-5 to 7e-5 on logits of 25 to 50
    wrong = [*path[:-3], path[-2], path[-3], path[-1]]  # one layer moved: the comparison tells it apart
    assert float(np.abs(got - logits_of(physically_duplicated(model, wrong), IDS).numpy()).max()) > 0.1


@pytest.mark.parametrize("family", RYS_READ)
def test_a_wrong_layer_map_fails_the_check_of_a_gguf_rys_search_reads(family, bpe_tiny, tmp_path, capsys,
                                                                       monkeypatch):
    """An export whose blocks follow another order than the schedule's fails its check and leaves nothing."""
    from rys_search.export import gguf as gguf_export

    real = gguf_export.tensor_plan
    monkeypatch.setattr(gguf_export, "tensor_plan", lambda model, fam, order: real(model, fam, list(order)[::-1]))
    folder, _ = bpe_tiny(family)
    out = tmp_path / "out"
    assert main(["export", "--model", folder, "--schedule", GGUF_SCHEDULE.get(family, SCHEDULE), "--format", "gguf",
                 "--type", "f32", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "verification failed, nothing kept: through transformers the export's logits differ" in err
    assert list(out.iterdir()) == []


def test_llama_cpp_reading_text_otherwise_than_the_tokenizer_is_reported(tmp_path, capsys, caplog):
    """A GGUF names its pre-tokenizer, and llama.cpp splits text by it before the merges; a tokenizer
    that splits otherwise (here not at all, so its merges cross spaces) is read differently by
    llama.cpp. That is reported with a warning, not failed: the schedule's check is on token ids."""
    from tiny import tiny_bpe_tokenizer

    folder = tmp_path / "whole"
    save_tiny(folder, "llama", bpe=True, sharpen=30.0)
    tiny_bpe_tokenizer(split=False).save_pretrained(folder)
    out = tmp_path / "out"
    args = ["export", "--model", str(folder), "--schedule", SCHEDULE, "--format", "gguf", "--type", "f32",
            "--out", str(out), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    llama = result["verification"]["llama_cpp"]
    assert llama["passed"] and llama["prompts_tokenized"] == 4 and llama["prompts_tokenized_alike"] < 4
    assert "into other tokens than the model's tokenizer" in caplog.text


def test_gpt_oss_yarn_without_truncation_is_exported_with_a_warning(tmp_path, capsys, caplog):
    """gpt-oss's own configs say truncate = false, which llama.cpp cannot run (it rounds YaRN's correction
    range); the export says so and llama.cpp's greedy check decides, as for llama.cpp's own conversions."""
    from rys_search.export.gguf import gguf_fields

    folder = tmp_path / "gpt-oss"
    model = save_tiny(folder, "gpt_oss", bpe=True, sharpen=30.0)
    assert model.config.rope_parameters["truncate"] is False
    out = tmp_path / "out"
    args = ["export", "--model", str(folder), "--schedule", GGUF_SCHEDULE["gpt_oss"], "--format", "gguf", "--type",
            "f32", "--out", str(out), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "rounds YaRN's correction range" in caplog.text
    llama = result["verification"]["llama_cpp"]
    assert llama["passed"] and llama["greedy_tokens_checked"] >= 32
    fields = gguf_fields(exported(out))
    assert fields["gpt-oss.rope.scaling.type"] == "yarn" and fields["gpt-oss.rope.scaling.factor"] == 32.0
    assert fields["gpt-oss.rope.scaling.original_context_length"] == 4096
    # read back, the GGUF runs YaRN rounded, as llama.cpp does: not the source's logits (so that comparison is
    # not run, and says why), but those of the same model with truncate = true
    assert "truncate = false" in result["verification"]["transformers"]["skipped"]
    from rys_search.architectures import family_for
    from rys_search.ggufread import read_model

    reloaded, _ = read_model(exported(out), family_for("gpt_oss"))
    path = LayerSchedule.parse(GGUF_SCHEDULE["gpt_oss"]).expand()
    unrounded = logits_of(physically_duplicated(model, path), IDS)
    model.config.rope_parameters["truncate"] = True
    rounded = logits_of(physically_duplicated(model, path), IDS)
    assert float((logits_of(reloaded, IDS) - rounded).abs().max()) <= 1e-4
    assert float((logits_of(reloaded, IDS) - unrounded).abs().max()) > 1e-3


def test_granite_multipliers_are_written_as_llama_cpp_reads_them(tmp_path):
    """float32 under llama.cpp's names, even where the config holds a whole number."""
    import gguf

    from rys_search.export.gguf import plan_from_hf
    from rys_search.loading import load_model

    save_tiny(tmp_path, "granite", bpe=True, logits_scaling=2, embedding_multiplier=4.0)
    loaded = load_model(str(tmp_path), device="cpu")
    plan = plan_from_hf(loaded.model, loaded.tokenizer, loaded.family, list(range(6)), "f32", {}, "tiny")
    kv = {key: (value, vtype) for key, value, vtype, _ in plan.kv}
    F32 = gguf.GGUFValueType.FLOAT32
    assert kv["granite.logit_scale"] == (2.0, F32) and kv["granite.embedding_scale"] == (4.0, F32)
    assert kv["granite.residual_scale"] == (0.5, F32) and kv["granite.attention.scale"] == (0.125, F32)


@pytest.mark.parametrize("kind", ["f16", "bf16", "q8_0"])
def test_gguf_types_from_hf(kind, bpe_tiny, tmp_path, capsys):
    from rys_search.export.gguf import gguf_fields

    folder, _ = bpe_tiny("llama")
    out = tmp_path / "out"
    args = ["export", "--model", folder, "--schedule", SCHEDULE, "--format", "gguf", "--type", kind,
            "--out", str(out), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["verification"]["transformers"]["tolerance_kind"] == kind
    assert result["verification"]["llama_cpp"]["passed"]
    import gguf

    reader = gguf.GGUFReader(exported(out))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.3.ffn_down.weight"] == kind.upper() and types["blk.3.attn_norm.weight"] == "F32"
    fields = gguf_fields(exported(out))
    assert fields["llama.block_count"] == len(PATH) and fields["rys.schedule"] == SCHEDULE
    assert fields["tokenizer.ggml.model"] == "gpt2" and "<|im_start|>" in fields["tokenizer.chat_template"]


def write_source_gguf(folder: str, path: Path, per_layer: list[int] | None = None, kind: str = "f16") -> None:
    """The tiny model as a GGUF (identity order), optionally with a per-layer metadata array."""
    import gguf

    from rys_search.export.gguf import plan_from_hf, write_gguf
    from rys_search.loading import load_model

    loaded = load_model(folder, device="cpu")
    plan = plan_from_hf(loaded.model, loaded.tokenizer, loaded.family, list(range(6)), kind, {}, "tiny")
    if per_layer is not None:
        plan.kv = [kv for kv in plan.kv if kv[0] != "llama.attention.head_count_kv"]
        plan.kv.append(("llama.attention.head_count_kv", per_layer, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32))
    write_gguf(plan, path)


# llama.cpp multiplies f16 weights by activations rounded to f16; in an MoE layer that can tip a
# nearly tied router to another expert, a difference the near-tie rule (on the final logits) does
# not cover: MoE sources are written in f32.
COPY_SOURCE_TYPE = {"qwen2_moe": "f32", "qwen3_moe": "f32", "mixtral": "f32", "gpt_oss": "f32"}
# The copy is the same code for every family; what is the family's own (transformers and llama.cpp
# reading its GGUF) the test above checks. Qwen2-MoE's tiny model is large (transformers' reader
# wants the default expert sizes), so its copy runs only with RYS_SEARCH_TEST_ALL_FAMILIES=1;
# Gemma 2 has its own test below.
COPY_FAMILIES = [f for f in GGUF_FAMILIES + RYS_READ if f != "gemma2" and (f != "qwen2_moe" or os.environ.get(
    "RYS_SEARCH_TEST_ALL_FAMILIES"))]


@pytest.mark.parametrize("family", COPY_FAMILIES)
def test_gguf_copy_is_byte_for_byte_and_verified(family, bpe_tiny, tmp_path, capsys):
    folder, _ = bpe_tiny(family)
    schedule = GGUF_SCHEDULE.get(family, SCHEDULE)
    source = tmp_path / "tiny.gguf"
    write_source_gguf(folder, source, kind=COPY_SOURCE_TYPE.get(family, "f16"))
    out = tmp_path / "out"
    args = ["export", "--model", str(source), "--schedule", schedule, "--format", "gguf", "--out", str(out), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["written_as"] == "bytes copied from the source GGUF"
    # the same weights in fp32: equal up to the order of float sums (MoE kernels follow memory alignment)
    assert result["verification"]["transformers"]["max_abs_logit_diff"] <= 1e-4
    assert result["verification"]["llama_cpp"]["mismatches"] == 0
    assert_blocks_copied(source, exported(out), LayerSchedule.parse(schedule).expand())


def test_gemma2_gguf_copy_runs_in_llama_cpp_like_the_schedule(bpe_tiny, tmp_path):
    """transformers reads a Gemma 2 GGUF's tokenizer only as SentencePiece, so the tiny one (BPE) cannot be
    loaded as a source: the copy is written without the tool's check, then checked the same way here,
    against the weight-shared run of the Hugging Face model."""
    from transformers import AutoModelForCausalLM

    from rys_search.export.verify import Reference, verify_llama_cpp
    from rys_search.loading import load_model

    folder, model = bpe_tiny("gemma2")
    schedule = GGUF_SCHEDULE["gemma2"]
    path = LayerSchedule.parse(schedule).expand()
    source = tmp_path / "tiny.gguf"
    write_source_gguf(folder, source, kind="f32")
    out = tmp_path / "out"
    assert main(["export", "--model", str(source), "--schedule", schedule, "--format", "gguf", "--out", str(out),
                 "--no-verify"]) == 0
    target = exported(out)
    assert_blocks_copied(source, target, path)
    check = verify_llama_cpp(Reference.build(load_model(folder, device="cpu"), LayerSchedule.parse(schedule)), target)
    assert check["passed"] and check["near_ties"] < check["greedy_tokens_checked"] / 4
    reloaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=target.name, dtype=torch.float32).eval()
    assert torch.allclose(logits_of(reloaded, IDS), logits_of(physically_duplicated(model, path), IDS), atol=1e-4)


def assert_blocks_copied(source: Path, target: Path, path: list[int]) -> None:
    """Every tensor of the export is its source tensor's bytes, blocks following path."""
    import gguf

    src = {t.name: t for t in gguf.GGUFReader(source).tensors}
    dst = {t.name: t for t in gguf.GGUFReader(target).tensors}
    per_block = sum(1 for n in src if n.startswith("blk.0."))
    assert len(dst) == sum(1 for n in src if not n.startswith("blk.")) + per_block * len(path)
    for name, t in dst.items():
        if name.startswith("blk."):
            k, rest = name[4:].split(".", 1)
            original = src[f"blk.{path[int(k)]}.{rest}"]
        else:
            original = src[name]
        assert t.tensor_type == original.tensor_type
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(original.data).view(np.uint8))


def test_per_layer_metadata_arrays_are_remapped(bpe_tiny, tmp_path):
    from rys_search.export.gguf import gguf_fields, plan_from_gguf, write_gguf

    folder, _ = bpe_tiny("llama")
    source = tmp_path / "tiny.gguf"
    write_source_gguf(folder, source, per_layer=[10, 11, 12, 13, 14, 15])
    plan = plan_from_gguf(source, PATH, ["attention.head_count_kv"], {"schedule": SCHEDULE, "trial": 7}, "(RYS)")
    write_gguf(plan, tmp_path / "x.gguf")
    fields = gguf_fields(tmp_path / "x.gguf")
    assert fields["llama.attention.head_count_kv"] == [10 + s for s in PATH]
    assert fields["llama.block_count"] == len(PATH)
    assert fields["rys.schedule"] == SCHEDULE and fields["rys.trial"] == 7
    assert fields["general.name"] == "tiny (RYS)"


def test_gemma3_gguf_keeps_the_attention_pattern_or_refuses(tmp_path, capsys):
    from rys_search.export import check_period
    from rys_search.architectures import family_for

    gemma = family_for("gemma3_text")
    check_period(gemma, LayerSchedule.parse("0-11,6-11,12-17").expand(), "gguf")  # a block of 6: fine
    check_period(gemma, PATH, "hf")  # an HF config carries layer types: anything goes
    from rys_search.errors import UserError

    with pytest.raises(UserError, match="period 6"):
        check_period(gemma, LayerSchedule.parse("0-9,8-9,10-17").expand(), "gguf")


@pytest.mark.parametrize("family", ["gemma2", "gpt_oss"])
def test_an_odd_block_is_refused_where_a_gguf_decides_attention_by_position(family, saved_tiny, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["export", "--model", saved_tiny(family), "--schedule", SCHEDULE, "--format", "gguf", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "period 2" in err and "position 10 would run layer 5" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_gguf_that_cannot_say_what_the_model_does_is_refused(tmp_path, capsys):
    """Dense layers among Qwen MoE expert layers, or routing weights llama.cpp would treat otherwise."""
    for k, (family, overrides, message) in enumerate([
        ("qwen3_moe", {"norm_topk_prob": True}, "cannot hold mlp_only_layers (this model's: [2])"),
        ("qwen2_moe", {"mlp_only_layers": [], "decoder_sparse_step": 1, "norm_topk_prob": True},
         "assumes norm_topk_prob = False and this model has True"),
        ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}},
         "supports plain RoPE only; this model uses 'linear' scaling"),
        ("gpt_oss", {"swiglu_limit": 5.0}, "assumes swiglu_limit = 7.0 and this model has 5.0"),
        ("gpt_oss", {"rope_parameters": {"rope_type": "yarn", "factor": 32.0, "attention_factor": 2.0,
                                         "rope_theta": 150000.0}},
         "cannot hold the YaRN settings ['attention_factor']"),
    ]):
        folder = tmp_path / f"{family}-{k}"
        save_tiny(folder, family, bpe=True, **overrides)
        out = tmp_path / "out"
        args = ["export", "--model", str(folder), "--schedule", GGUF_SCHEDULE.get(family, SCHEDULE), "--format", "gguf",
                "--out", str(out)]
        assert main(args) == 2, family
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() or not list(out.iterdir())


# ---- the real model ------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_gguf_export_answers_like_rys_search_chat(smollm2, tmp_path, capsys):
    from llama_cpp import Llama

    from rys_search.chat import greedy_answer

    schedule = "0-9,10-12x2,13-29"
    out = tmp_path / "out"
    assert main(["export", "--schedule", schedule, "--format", "gguf", "--out", str(out), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["verification"]["transformers"]["max_abs_logit_diff"] == 0.0
    assert result["verification"]["llama_cpp"]["passed"]
    target = exported(out)
    prompt = "Name three primary colours."
    with smollm2.runtime.using(LayerSchedule.parse(schedule)):
        expected = greedy_answer(smollm2, prompt, max_new_tokens=24)
    llm = Llama(model_path=str(target), n_ctx=256, verbose=False, seed=0)
    ids = smollm2.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=True)["input_ids"]
    got = []
    for token in llm.generate(ids, top_k=1, temp=0.0):
        if token == llm.token_eos() or len(got) == 24:
            break
        got.append(token)
    assert smollm2.tokenizer.decode(got, skip_special_tokens=True).strip() == expected.strip()


# ---- refusals and failures -------------------------------------------------------------------


def test_existing_target_is_never_overwritten_without_force(saved_tiny, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["export", "--model", saved_tiny("llama"), "--schedule", SCHEDULE, "--format", "hf", "--out", str(out),
            "--no-verify"]
    assert main(args) == 0
    target = exported(out)
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --force" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert main(args + ["--force"]) == 0
    assert [p.name for p in out.iterdir()] == [target.name]


def test_truncated_source_gguf_is_reported(bpe_tiny, tmp_path, capsys):
    folder, _ = bpe_tiny("llama")
    source = tmp_path / "tiny.gguf"
    write_source_gguf(folder, source)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert main(["export", "--model", str(cut), "--schedule", SCHEDULE, "--format", "gguf", "--out",
                 str(tmp_path / "out")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failed_verification_leaves_nothing(saved_tiny, tmp_path, capsys, monkeypatch):
    from rys_search.export import verify

    monkeypatch.setitem(verify.TOLERANCES, "exact", (-1.0, 0.0))  # no export can meet this
    out = tmp_path / "out"
    assert main(["export", "--model", saved_tiny("llama"), "--schedule", SCHEDULE, "--format", "hf",
                 "--out", str(out)]) == 1
    assert "verification failed, nothing kept" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_full_disk_is_reported_and_leaves_nothing(saved_tiny, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    out = tmp_path / "out"
    args = ["export", "--model", saved_tiny("llama"), "--schedule", SCHEDULE, "--format", "hf", "--out", str(out)]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    assert main(args) == 2
    assert "not enough free disk space" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    monkeypatch.undo()

    from rys_search.export import hf

    real = hf.write_hf

    def fill_up(model, tokenizer, family, order, folder, **kw):
        (Path(folder) / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hf, "write_hf", fill_up)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []
    assert real is not fill_up


def test_model_card_escapes_what_came_from_outside():
    from rys_search.export.card import model_card

    facts = {"schedule": "0-3,2-3x2", "source": "evil\n---\ninjected: true <script>x</script> [a](http://x)",
             "version": "0.1.0", "layer_map": [0, 1, 2, 3, 2, 3], "source_block_count": 4, "study": "s|tudy*",
             "trial": 3,
             "scores": {"math <b>": {"score": 1.0, "interval": [0.5, 1.5], "change": 0.2, "change_interval": [0.1, 0.3]}}}
    card = model_card(facts, "gguf", "x.gguf")
    header = card.split("---\n")[1]
    assert "injected: true" not in header.splitlines()  # only JSON-quoted inside base_model
    assert "<script>" not in card and "<b>" not in card and "](http" not in card
    assert "s\\|tudy\\*" in card
    assert card.count("\n---\n") == 1  # the header's end, nothing a name could add


def test_bad_export_requests(saved_tiny, tmp_path, capsys):
    folder = saved_tiny("llama")
    cases = [
        (["--model", folder, "--schedule", SCHEDULE, "--format", "onnx"], "unknown export format"),
        (["--model", folder, "--format", "gguf"], "name what to export"),
        (["--model", folder, "--schedule", "0-5", "--format", "hf"], "repeats nothing"),
        (["--model", folder, "--schedule", "0-9", "--format", "hf"], "out of range"),
        (["--model", folder, "--trial", "3", "--format", "hf"], "need --study"),
        (["--model", folder, "--schedule", SCHEDULE, "--format", "gguf", "--dtype", "bf16"], "--dtype is for --format hf"),
    ]
    for extra, message in cases:
        assert main(["export", *extra, "--out", str(tmp_path / "out")]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "out").exists()


def test_export_from_a_study_is_logged_to_the_trial_run(saved_tiny, tmp_path, monkeypatch, capsys):
    from rys_search.search.config import load_config
    from rys_search.search.study import open_study, pareto_rows, run_study
    from rys_search.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides={"model": saved_tiny("llama"), "limit": 3, "trials": 5, "name": "exp", "seed": 2,
                                 "confirm": {"enabled": False}})
    run_study(cfg, progress=False)
    study = open_study(cfg, create=False)
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs["schedule"] != "0-5"]
    trial = done[0]
    out = tmp_path / "exports"
    assert main(["export", "--study", "exp", "--trial", str(trial.number), "--format", "hf", "--out", str(out)]) == 0
    target = exported(out)
    assert target.name.endswith(trial.user_attrs["schedule"].replace(",", "_"))
    card = (target / "README.md").read_text()
    assert "study: exp, trial " + str(trial.number) in card and "cheap search stage and confirmation stage" in card
    assert "Verdict: unconfirmed" in card  # the study ran without confirmation: nothing there is called a gain
    run = Tracker(cfg.tracking_location()).client.get_run(trial.user_attrs["mlflow_run"])
    assert run.data.tags["rys.export.hf"] == str(target)
    members = [r for r in pareto_rows(study) if r["schedule"] != "0-5"]
    capsys.readouterr()
    code = main(["export", "--study", "exp", "--pareto", "--format", "hf", "--out", str(out), "--no-verify", "--force"])
    if members:
        assert code == 0 and len([p for p in out.iterdir()]) >= len(members)
    else:
        assert code == 2 and "only the unmodified model" in capsys.readouterr().err
    assert main(["export", "--study", "exp", "--trial", "999", "--format", "hf", "--out", str(out)]) == 2
