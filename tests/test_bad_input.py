"""Bad input: one line naming the problem, exit status 2, no traceback, nothing left behind."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from rys_search.loading import default_gguf


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("mistral")


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "rys_search.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=None if env is None else {**os.environ, **env})


def assert_one_line(done, message):
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rys-search: error:") and message in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("", "schedule is empty"),
        ("0-9,,10-29", "empty item"),
        ("12-10", "is reversed"),
        ("0-9,10-12x0,13-29", "must run at least once"),
        ("abc", "cannot read 'abc'"),
        ("0-9;10-29", "cannot read '0-9;10-29'"),
        ("1.5-3", "cannot read '1.5-3'"),
        ("-1-5", "cannot read '-1-5'"),
        ("0-9,10-12x,13-29", "cannot read '10-12x'"),
        ("0--9", "cannot read '0--9'"),
        ("0-9 10-29", "cannot read '0-9 10-29'"),
    ],
)
def test_malformed_schedules(tiny_folder, schedule, message):
    assert_one_line(cli("chat", "--model", tiny_folder, f"--schedule={schedule}", "hi"), message)


def test_a_compile_mode_with_cuda_graphs_is_refused(tiny_folder):
    assert_one_line(cli("eval", "--model", tiny_folder, "--schedule", "0-3", env={"RYS_SEARCH_COMPILE": "reduce-overhead"}),
                    "RYS_SEARCH_COMPILE=reduce-overhead: this torch.compile mode captures CUDA graphs")


def test_out_of_range_unsupported_and_bad_files(tiny_folder, tmp_path):
    assert_one_line(cli("eval", "--model", tiny_folder, "--schedule", "0-9"), "layer 9 in schedule 0-9 is out of range")
    gpt2 = tmp_path / "gpt2"
    from transformers import AutoConfig

    AutoConfig.for_model("gpt2", n_layer=2).save_pretrained(gpt2)
    assert_one_line(cli("chat", "--model", str(gpt2), "hi"), "'gpt2' is not supported; supported families:")
    assert_one_line(cli("info", "--model", str(tmp_path / "missing.gguf")), "does not exist")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a gguf at all")
    assert_one_line(cli("chat", "--model", str(junk), "hi"), "is not a GGUF file")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_gguf().read_bytes()[:3_000_000])
    assert_one_line(cli("chat", "--model", str(cut), "hi"), "is truncated")


def test_corrupt_gguf_headers(tmp_path):
    from rys_search.ggufio import ModelFileError, inspect_gguf

    good = default_gguf().read_bytes()[:4096]
    cases = {
        "magic": b"GGUX" + good[4:],
        "version": good[:4] + b"\xff\xff\xff\xff" + good[8:],
        "counts": good[:8] + b"\xff" * 16 + good[24:],
        "header only": good[:24],
        "empty": b"",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.gguf"
        path.write_bytes(data)
        with pytest.raises(ModelFileError):
            inspect_gguf(path)


def test_suite_problems(tiny_folder, tmp_path):
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "s.toml").write_text('name = "s"\nversion = 1\nsource = "gone.jsonl"\nscorer = "digits"\nprompt = "{question}"\n')
    assert_one_line(cli("eval", "--model", tiny_folder, "--suites", str(missing), "--objectives", "s"), "gone.jsonl does not exist")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "s.toml").write_text('name = "s"\nversion = 1\nsource = "s.jsonl"\nscorer = "digits"\nprompt = "{question}"\n')
    (bad / "s.jsonl").write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n{broken\n")
    assert_one_line(cli("eval", "--model", tiny_folder, "--suites", str(bad), "--objectives", "s"), "s.jsonl:2: not valid JSON")
    assert_one_line(cli("eval", "--model", tiny_folder, "--objectives", "vibes"), "unknown objective 'vibes'")


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_runs_leave_the_stored_study_untouched(tiny_folder, tmp_path):
    first = cli("run", "--model", tiny_folder, "--trials", "1", "--limit", "2", "--study", "kept", "--no-confirm",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "studies" / "kept.db"
    before = digest(db)
    config = tmp_path / "bad.toml"
    config.write_text('name = "kept"\ncolour = "red"\n')
    assert_one_line(cli("run", "--config", str(config), cwd=tmp_path), "unknown keys colour")
    config.write_text('name = "kept"\nsampler = "grid"\n[space]\nmax_blocks = 3\n')
    assert_one_line(cli("run", "--config", str(config), cwd=tmp_path), "grid sampler sweeps single blocks")
    assert_one_line(cli("run", "--model", tiny_folder, "--study", "kept", "--objectives", "math,vibes", cwd=tmp_path),
                    "unknown objective 'vibes'")
    assert_one_line(cli("run", "--model", tiny_folder, "--study", "kept", "--limit", "2", "--objectives", "math",
                        cwd=tmp_path), "created with other settings for objectives")
    assert digest(db) == before
    assert_one_line(cli("run", "--model", tiny_folder, "--study", "elsewhere", "--storage",
                        "postgresql://rys:rys@127.0.0.1:1/none", cwd=tmp_path), "cannot open storage")
    assert_one_line(cli("run", "--model", tiny_folder, "--study", "nowhere", "--storage",
                        f"sqlite:///{tmp_path}/no/such/folder/x.db", cwd=tmp_path), "cannot open storage")
    assert not (tmp_path / "no").exists()
    assert sorted(p.name for p in (tmp_path / "studies").iterdir()) == [".kept.db.kept.lock", "kept.db"]  # the first run's


def test_first_line_of_an_exception():
    from rys_search.errors import first_line

    assert first_line(ValueError("  cannot read it\nTraceback ...\n")) == "cannot read it"
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("  "), "") == ""
