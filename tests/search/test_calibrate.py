"""Calibration: objectives against benchmarks across schedules, end to end on a tiny model, resumable."""

import json

import pytest
import torch

from benchfiles import write_benchmarks
from rys_search.cli import main
from rys_search.schedule import LayerSchedule
from rys_search.scoring.stats import spearman_difference
from rys_search.search.calibrate import format_table, sample_schedules, summarize, versions
from rys_search.search.config import SearchSpace

OBJECTIVES = "math@1:logprob,eq@2,fixed_point"  # eq@2 in both of its modes


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("qwen2")


def calibrate(folder, tmp_path, *extra):
    gsm, bbh, eq = write_benchmarks(tmp_path)
    return main(["calibrate", "--model", folder, "--bench", f"gsm8k:logprob={gsm}", "--bench", f"bbh={bbh}",
                 "--bench", f"eqbench={eq}", "--schedules", "3", "--limit", "2", "--bench-limit", "2",
                 "--objectives", OBJECTIVES, "--out", str(tmp_path / "cal.calibration.json"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra])


def test_calibrate_end_to_end_and_resume(tiny_folder, tmp_path, capsys):
    assert calibrate(tiny_folder, tmp_path, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    objectives = {"math@1:logprob", "eq@2:logprob", "eq@2:generate", "fixed_point", "fixed_point.kl",
                  "fixed_point.contraction", "fixed_point.seam"}
    benches = {"gsm8k:logprob", "bbh:logprob", "eqbench:generate"}
    assert {(r["objective"], r["benchmark"]) for r in out["table"]} == {(o, b) for o in objectives for b in benches}
    for row in out["table"]:
        assert row["n"] <= 3
        if row["spearman"] is not None:
            assert -1 <= row["spearman"] <= 1
        assert ("sign_agreement" in row) == (not row["objective"].startswith("fixed_point"))
    assert set(out["seconds_per_schedule"]) >= {"math@1:logprob", "eqbench:generate", "fixed_point", "all"}
    assert out["versions"] == []  # one version of each suite in each mode was asked for: nothing to compare
    path = tmp_path / "cal.calibration.json"
    state = json.loads(path.read_text())
    assert len(state["schedules"]) == 3 and set(state["baseline"]) == (objectives - {k for k in objectives
                                                                                     if k.startswith("fixed")}) | benches
    for entry in state["schedules"].values():
        assert "parse_rate" in entry["eq@2:generate"] and "parse_rate" in entry["eqbench:generate"]
        assert "parse_rate" not in entry["eq@2:logprob"]
    assert sorted(p.name for p in tmp_path.glob("cal-*.png")) == [f"cal-{b.replace(':', '-')}.png" for b in sorted(benches)]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rys-search").experiment_id],
                              "tags.`rys.kind` = 'calibration'")
    assert len(runs) == 1 and any(k.startswith("spearman/") for k in runs[0].data.metrics)

    # a stopped calibration resumes: only the schedule it lacks is scored again
    first = next(iter(state["schedules"]))
    del state["schedules"][first]
    state.pop("table")
    path.write_text(json.dumps(state))
    assert calibrate(tiny_folder, tmp_path) == 0
    err = capsys.readouterr().err
    assert err.count("calibrate: [") == 1 and "unmodified model scored" not in err
    assert first in json.loads(path.read_text())["schedules"]

    # other settings on the same file are refused, and the file is left as it was
    before = path.read_bytes()
    assert calibrate(tiny_folder, tmp_path, "--seed", "5") == 2
    assert "other settings" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_calibration_grows_by_the_objectives_and_benchmarks_it_lacks(tiny_folder, tmp_path, capsys):
    """Asked again for more (a new suite version, another benchmark) on the same schedules, a calibration
    file scores only what it lacks; what it holds stays as it was; a benchmark name on another path is
    refused and leaves the file alone."""
    gsm, bbh, _ = write_benchmarks(tmp_path)
    path = tmp_path / "grow.calibration.json"

    def run(objectives, *benches):
        return main(["calibrate", "--model", tiny_folder, *[a for b in benches for a in ("--bench", b)],
                     "--schedules", "3", "--limit", "2", "--bench-limit", "2", "--objectives", objectives,
                     "--out", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"])

    assert run("math@1:logprob", f"gsm8k:logprob={gsm}") == 0
    first = json.loads(path.read_text())
    capsys.readouterr()
    assert run("reasoning@1:logprob,reasoning@2:logprob", f"gsm8k:logprob={gsm}", f"bbh={bbh}") == 0
    captured = capsys.readouterr()
    out, err = json.loads(captured.out), captured.err
    assert err.count("calibrate: [") == 3 and "unmodified model scored" in err
    state = json.loads(path.read_text())
    assert state["settings"]["objectives"] == ["math@1:logprob", "reasoning@1:logprob", "reasoning@2:logprob"]
    assert set(state["settings"]["benchmarks"]) == {"gsm8k:logprob", "bbh:logprob"}
    for schedule, row in first["schedules"].items():  # the entries held before are kept as they were
        grown = state["schedules"][schedule]
        assert grown["math@1:logprob"] == row["math@1:logprob"] and grown["gsm8k:logprob"] == row["gsm8k:logprob"]
        assert {"reasoning@1:logprob", "reasoning@2:logprob", "bbh:logprob"} <= set(grown)
        assert grown["_seconds"] > row["_seconds"]
    assert state["baseline"]["math@1:logprob"] == first["baseline"]["math@1:logprob"]
    pairs = {(r["objective"], r["benchmark"]) for r in out["table"]}
    assert pairs == {(o, b) for o in ("math@1:logprob", "reasoning@1:logprob", "reasoning@2:logprob")
                     for b in ("gsm8k:logprob", "bbh:logprob")}
    assert {(r["newer"], r["older"]) for r in out["versions"]} == {("reasoning@2:logprob", "reasoning@1:logprob")}
    assert {"math@1:logprob", "reasoning@2:logprob", "all"} <= set(out["seconds_per_schedule"])

    assert run("math@1:logprob", f"gsm8k:logprob={gsm}") == 0  # nothing lacking: nothing scored again
    assert "calibrate: [" not in capsys.readouterr().err
    before = path.read_bytes()
    other = tmp_path / "other.jsonl"
    other.write_text(gsm.read_text())
    assert run("math@1:logprob", f"gsm8k:logprob={other}") == 2
    assert "other settings" in capsys.readouterr().err and path.read_bytes() == before


def test_calibrate_refuses_bad_requests(tiny_folder, tmp_path, capsys):
    assert main(["calibrate", "--model", tiny_folder]) == 2
    assert "name at least one benchmark" in capsys.readouterr().err
    assert main(["calibrate", "--model", tiny_folder, "--bench", "gsm8k=/no/such.jsonl"]) == 2
    assert "does not exist" in capsys.readouterr().err
    gsm, _, _ = write_benchmarks(tmp_path)
    assert main(["calibrate", "--model", tiny_folder, "--bench", f"gsm8k:sample={gsm}"]) == 2
    assert "unknown scoring mode 'sample'" in capsys.readouterr().err
    assert main(["calibrate", "--model", tiny_folder, "--bench", f"gsm8k={gsm}", "--objectives", "vibes"]) == 2
    assert "no objective 'vibes'" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()


def test_summary_statistics_by_hand():
    def entry(change, lo, hi):
        return {"change": change, "change_interval": [lo, hi]}

    state = {"settings": {"benchmarks": {"b:generate": "x"}}, "schedules": {
        "s1": {"p": entry(1.0, 0.5, 1.5), "f": {"change": 0.1}, "b:generate": entry(2.0, 1.0, 3.0)},
        "s2": {"p": entry(2.0, 1.0, 3.0), "f": {"change": 0.2}, "b:generate": entry(3.0, 2.0, 4.0)},
        "s3": {"p": entry(-1.0, -2.0, 0.0), "f": {"change": 0.3}, "b:generate": entry(-2.0, -3.0, -1.0)},
        "s4": {"p": entry(3.0, 2.0, 4.0), "f": {"change": 0.4}, "b:generate": entry(-0.5, -1.0, 0.5)},
    }}
    rows = {r["objective"]: r for r in summarize(state)}
    p = rows["p"]
    # ranks p: 2,3,1,4; b: 3,4,1,2 -> d^2 = 1+1+0+4 = 6 -> rho = 1 - 6*6 / (4*15) = 0.4
    assert p["spearman"] == pytest.approx(0.4) and p["n"] == 4
    # outside noise: s1, s2, s3 (s4's interval holds 0); signs agree in all three
    assert p["outside_noise"] == 3 and p["sign_agreement"] == 1.0 and p["sign_n"] == 3
    # ranks f: 1,2,3,4 against b: 3,4,1,2 -> d^2 = 4+4+4+4 = 16 -> rho = 1 - 6*16 / 60 = -0.6
    assert rows["f"]["spearman"] == pytest.approx(-0.6)


def test_versions_compared_on_the_same_schedules():
    """A newer suite version is compared with each older one in the same mode only: the difference of
    their Spearman correlations with the benchmark, its interval from resampling schedules together."""
    bench = [2.0, 3.0, -2.0, -0.5, 1.0]
    same = [b * 3 for b in bench]  # ranks exactly like the benchmark: +1
    opposite = [-b for b in bench]  # ranks exactly against it: -1
    other = [0.1, 0.5, 0.2, 0.4, 0.3]
    state = {"model": "m", "settings": {"benchmarks": {"b:generate": "x"}}, "schedules": {
        f"s{i}": {"m@2:logprob": {"change": same[i]}, "m@1:logprob": {"change": opposite[i]},
                  "m@1:generate": {"change": other[i]}, "fixed_point": {"change": other[i]},
                  "b:generate": {"change": bench[i]}} for i in range(5)}}
    rows = versions(state)
    assert [(r["newer"], r["older"], r["benchmark"], r["n"]) for r in rows] == [("m@2:logprob", "m@1:logprob", "b:generate", 5)]
    assert rows[0]["difference"] == pytest.approx(2.0) and rows[0]["interval"] == pytest.approx([2.0, 2.0])
    state["versions"], state["table"] = rows, summarize(state)
    assert "    m@2:logprob against m@1:logprob: Spearman difference +2.00 [+2.00, +2.00]" in format_table(state)
    # against the hand-computed correlations of the test above: p (0.4) and f (-0.6) differ by 1.0
    value, lo, hi = spearman_difference([1, 2, -1, 3], [0.1, 0.2, 0.3, 0.4], [2, 3, -2, -0.5])
    assert value == pytest.approx(1.0) and lo <= value <= hi


def test_schedule_sample_spreads_over_the_space():
    space = SearchSpace(max_blocks=2, width=(1, 8), extra_passes=(1, 2), max_added_layers=16, region=(1, -2))
    first = sample_schedules(30, space, 1, 40, seed=3)
    assert [str(s) for s in first] == [str(s) for s in sample_schedules(30, space, 1, 40, seed=3)]
    assert len({str(s) for s in first}) == 40
    blocks = [s.blocks(30) for s in first]
    singles = [b for b in blocks if len(b) == 1 and b[0].extra == 1]
    assert len(singles) >= 20 and any(len(b) == 2 for b in blocks) and any(x.extra == 2 for b in blocks for x in b)
    for schedule, bs in zip(first, blocks):
        assert not schedule.is_identity(30) and 1 <= bs[0].start and bs[-1].end <= 28
        assert schedule.added_layers(30) <= 16
    starts = {b[0].start for b in singles}
    assert len(starts) >= 10  # the thinned grid is spread out, not bunched at the first layers
    assert LayerSchedule.parse(str(first[0])).expand() == first[0].expand()


def test_calibration_retries_with_smaller_batches_when_the_gpu_is_short_of_memory(tiny_folder, tmp_path, monkeypatch):
    # another process on the GPU (a study beside it) can leave too little memory: the first baseline
    # and the first schedule run out once each, and the calibration still finishes with every schedule
    from rys_search.scoring.stage import Stage

    failed = {"baseline": 0, "measure": 0}
    for name in failed:
        original = getattr(Stage, name)

        def once(self, *args, _name=name, _original=original, **kw):
            if not failed[_name]:
                failed[_name] += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.67 GiB")
            return _original(self, *args, **kw)
        monkeypatch.setattr(Stage, name, once)
    assert calibrate(tiny_folder, tmp_path) == 0
    state = json.loads((tmp_path / "cal.calibration.json").read_text())
    assert failed == {"baseline": 1, "measure": 1} and len(state["schedules"]) == 3
