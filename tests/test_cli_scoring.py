"""eval and validate end to end on a tiny model, with benchmark files written here."""

import json

from benchfiles import write_benchmarks

import pytest

from rys_search.cli import main


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("qwen2")


def test_eval_json(tiny_folder, capsys):
    assert main(["eval", "--model", tiny_folder, "--schedule", "0-2,3-4x2,5", "--limit", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["objective"]: r for r in out["objectives"]}
    assert set(rows) == {"math", "eq", "reasoning", "fixed_point"}
    assert out["schedule"] == "0-2,3-4x2,5"
    for row in rows.values():
        result = row["result"]
        lo, hi = result["interval"]
        assert lo <= result["score"] <= hi and result["noise"] == pytest.approx((hi - lo) / 2)
        change = row["change"]
        assert change["mean"] == pytest.approx(result["score"] - row["unmodified"]["score"], abs=1e-9)
        assert len(result["items"]) == 4
    assert rows["fixed_point"]["unmodified"]["score"] == 0.0


def test_eval_table_and_generate_mode(tiny_folder, capsys):
    assert main(["eval", "--model", tiny_folder, "--rys", "2,4", "--objectives", "math,eq",
                 "--mode", "generate", "--split", "heldout", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "split heldout · mode generate" in out and "math v1" in out and "eq v1" in out


def test_eval_refuses_unknown_objective_before_loading(capsys):
    assert main(["eval", "--model", "/no/such/model", "--objectives", "math,vibes"]) == 2
    assert "unknown objective 'vibes'; available: eq, eq@1, eq@2, fixed_point, math, math@1" in capsys.readouterr().err


def test_validate_reads_the_public_formats(tiny_folder, tmp_path, capsys, caplog):
    gsm, bbh, eq = write_benchmarks(tmp_path)
    args = ["validate", "--model", tiny_folder, "--schedule", "0-3,2-5", "--bench", f"gsm8k={gsm}",
            "--bench", f"bbh={bbh}", "--bench", f"eqbench={eq}", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["objective"]: r for r in out["benchmarks"]}
    assert len(rows["gsm8k"]["result"]["items"]) == 3
    assert len(rows["bbh"]["result"]["items"]) == 5
    assert len(rows["eqbench"]["result"]["items"]) == 1
    for row in rows.values():
        lo, hi = row["change"]["interval"]
        assert lo <= row["change"]["mean"] <= hi
    assert "ran out of new tokens" not in caplog.text  # logprob mode generates nothing
    assert main(args[:-1] + ["--limit", "1", "--mode", "generate"]) == 0
    assert "bbh v3" in capsys.readouterr().out
    # the random tiny model never ends a row: its answers are cut at the limit, which is said
    assert "gsm8k:generate: 100% of the unmodified model's answers ran out of new tokens" in caplog.text


def test_validate_bad_bench_arguments(tiny_folder, tmp_path, capsys):
    assert main(["validate", "--model", tiny_folder, "--bench", "mmlu=x"]) == 2
    assert "unknown benchmark 'mmlu'" in capsys.readouterr().err
    assert main(["validate", "--model", tiny_folder, "--bench", f"gsm8k={tmp_path / 'none.jsonl'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\nnot json\n')
    assert main(["validate", "--model", tiny_folder, "--bench", f"gsm8k={bad}"]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q"}\n')
    assert main(["validate", "--model", tiny_folder, "--bench", f"gsm8k={bad}"]) == 2
    assert "bad.jsonl:2: expected a JSON object with question and answer" in capsys.readouterr().err
