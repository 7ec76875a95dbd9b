import json
import subprocess
import sys

import pytest

from rys_search.cli import main
from rys_search.schedule import LayerSchedule
from tiny import physically_duplicated, save_tiny, tiny_tokenizer


def run_cli(*args):
    return subprocess.run(["rys-search", *args], capture_output=True, text=True, timeout=600)


def test_help_is_instant_and_imports_nothing_heavy():
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from rys_search.cli import main, build_parser; build_parser();"
         "print(sorted(m for m in ('torch', 'transformers', 'gguf') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "[]"
    assert run_cli("--help").returncode == 0


def test_info_json_on_a_folder(tmp_path, capsys):
    model = save_tiny(tmp_path, "qwen3")
    assert main(["info", "--model", str(tmp_path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["family"] == "qwen3" and facts["supported"] is True
    assert facts["layers"] == 6 and facts["hidden_size"] == 64
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())


def test_info_lists_the_families(capsys):
    from rys_search.architectures import families

    assert main(["info", "--families", "--json"]) == 0
    rows = {r["family"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(families()) and {"phi3", "gemma2", "qwen3_moe", "gpt_oss"} <= set(rows)
    assert rows["qwen2_moe"]["per_layer_config"] == ["layer_types", "mlp_only_layers"]
    assert rows["gemma2"]["gguf_repeat_period"] == 2 and rows["mixtral"]["gguf_arch"] == "llama"
    for name in ("gpt_oss", "granite", "mixtral", "olmo2"):  # architectures transformers does not read as GGUF
        assert rows[name]["gguf_from_hf"] and rows[name]["gguf_reader"] == "rys-search"
    assert rows["llama"]["gguf_reader"] == "transformers" and not rows["gemma3"]["gguf_from_hf"]
    assert main(["info", "--families"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("family") and len(lines) == len(rows) + 1
    assert any(line.split()[:3] == ["gpt_oss", "gpt_oss", "gpt-oss"] for line in lines)
    assert any(line.split()[:6] == ["olmo2", "olmo2", "olmo2", "yes", "rys-search", "1"] for line in lines)


def test_info_says_unsupported(tmp_path, capsys):
    from transformers import AutoConfig

    AutoConfig.for_model("gpt2", n_layer=3, n_embd=32, n_head=2).save_pretrained(tmp_path)
    assert main(["info", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gpt2 (not supported)" in out and "layers       3" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "12-10"], "range 12-10 in schedule '12-10' is reversed"),
        (["--schedule", "0-9,x,10"], "cannot read 'x'"),
        (["--rys", "10"], "--rys takes two whole numbers"),
        (["--model", "/no/such/model.gguf"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = run_cli("chat", *args, "hello")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("rys-search: error:")


def test_out_of_range_schedule_after_load(tmp_path):
    save_tiny(tmp_path, "llama")
    done = run_cli("chat", "--model", str(tmp_path), "--schedule", "0-6", "w5")
    assert done.returncode == 2
    assert "layer 6 in schedule 0-6 is out of range for a model with 6 layers" in done.stderr


def test_chat_applies_the_schedule(tmp_path, capsys):
    model = save_tiny(tmp_path, "gemma3")
    schedule = LayerSchedule.rys(6, 2, 4)
    assert main(["chat", "--model", str(tmp_path), "--rys", "2,4", "--max-new-tokens", "6", "w5 w9 w11"]) == 0
    answer = capsys.readouterr().out.strip()
    tok = tiny_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "w5 w9 w11"}], add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")["input_ids"]
    reference = physically_duplicated(model, schedule.expand())
    out = reference.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert answer == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert answer  # the tiny model does say something


@pytest.mark.slow
def test_chat_on_the_default_model(smollm2):
    done = run_cli("chat", "--schedule", "0-9,10-12x2,13-29", "--max-new-tokens", "24", "What is 17*23?")
    assert done.returncode == 0, done.stderr
    assert "schedule 0-9,10-12x2,13-29, 33 layers (+3)" in done.stderr
    assert done.stdout.strip()
