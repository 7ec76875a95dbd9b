"""The benchmark scripts' own arithmetic (the figures they print depend on it)."""

import importlib.util
import itertools
from pathlib import Path

import numpy as np


def load(name):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def monte_carlo_hv(points, ref, n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    points = np.array(points)
    top = points.max(axis=0)
    samples = rng.uniform(ref, top, size=(n, len(ref)))
    dominated = (samples[:, None, :] <= points[None, :, :]).all(axis=2).any(axis=1)
    return dominated.mean() * np.prod(top - np.array(ref))


def test_hypervolume_by_hand_and_against_sampling():
    hv = load("search_efficiency").hypervolume
    assert hv([(2.0, 3.0)], (0.0, 0.0)) == 6.0
    assert hv([(2.0, 1.0), (1.0, 2.0)], (0.0, 0.0)) == 3.0
    assert hv([(1.0, 1.0, 1.0)], (0.0, 0.0, 0.0)) == 1.0
    assert hv([(-1.0, 5.0, 5.0)], (0.0, 0.0, 0.0)) == 0.0  # below the reference in one objective
    rng = np.random.default_rng(1)
    points = [tuple(p) for p in rng.uniform(0, 1, size=(12, 3))]
    exact = hv(points, (0.0, 0.0, 0.0))
    assert abs(exact - monte_carlo_hv(points, (0.0, 0.0, 0.0))) < 0.01
    for a, b in itertools.combinations(points, 2):  # adding points never lowers it
        assert hv([a, b], (0, 0, 0)) >= max(hv([a], (0, 0, 0)), hv([b], (0, 0, 0))) - 1e-12


def test_random_schedules_of_the_speed_benchmark_are_valid():
    speed = load("objectives_speed")
    for schedule in speed.random_schedules(36, 20, seed=4):
        blocks = schedule.blocks(36)
        assert blocks and all(3 <= b.width <= 8 for b in blocks)


def test_gsm8k_stop_of_the_generation_benchmark_is_the_scorers():
    """--stop times the rows the GSM8K reader really generates: its stop rule is the scorer's
    (tested on every prefix in tests/scoring/test_scorers.py), boxed answers included."""
    from rys_search.scoring.probes import answered

    stop = load("generation_speed").answered
    assert stop is answered
    assert stop("so the answer is \\boxed{126}") and not stop("so the answer is \\boxed{12")


def test_the_study_loop_stub_finishes_a_study(tmp_path, monkeypatch, capsys):
    """The stub objective scores the study's pinned objectives: a short run finishes its trials."""
    import sys

    from rys_search.search.runner import StudyRunner

    for name in ("_evaluate", "on_finished"):  # the script replaces them for good: put them back afterwards
        monkeypatch.setattr(StudyRunner, name, getattr(StudyRunner, name))
    monkeypatch.setattr(sys, "argv", ["study_loop.py", "--trials", "4", "--items", "3", "--workdir", str(tmp_path)])
    load("study_loop").main()
    out = capsys.readouterr().out
    assert "4 finished trials" in out and "0 failed" in out and "status complete" in out, out[-800:]


def test_throughput_times_schedules_without_its_flop_counting_hook(saved_tiny, monkeypatch):
    """A global module hook changes what torch.compile builds (guard failures, recompiles), so the
    throughput script times every schedule with none installed and counts FLOPs in a second pass;
    its figures leave out the first schedule (the one that compiles)."""
    from torch.nn.modules import module as torch_module

    from rys_search.loading import load_model
    from rys_search.schedule import LayerSchedule

    throughput = load("throughput")
    loaded = load_model(saved_tiny("llama"), device="cpu")
    hooks_when_timed, times = [], iter([0.5, 0.25, 0.75])
    real_timed = throughput.timed

    def spy(fn, cuda):
        hooks_when_timed.append(len(torch_module._global_forward_pre_hooks))
        return next(times, 0.0), real_timed(fn, cuda)[1]

    monkeypatch.setattr(throughput, "timed", spy)
    workload = throughput.Synthetic(loaded, count=4, length=8)
    schedules = [LayerSchedule.parse("0-2,3x2,4-5"), LayerSchedule.parse("0-1,2-3x2,4-5")]
    row = throughput.measure(loaded, workload, schedules, "engine")
    assert hooks_when_timed == [0, 0, 0]  # the warm-up and both schedules
    assert row["per_schedule"] == [0.25, 0.75] and row["seconds"] == 0.75 and row["first"] == 0.25
    assert row["flops"] > 0 and not torch_module._global_forward_pre_hooks


def test_the_study_breakdown_times_what_this_code_has(monkeypatch):
    """Every piece it names exists here (a renamed one would drop out of its table unnoticed), and
    a wrapped function returns what it returned, its calls counted."""
    import sys
    import types

    breakdown = load("study_breakdown")
    for module, attr in breakdown.TIMED:
        owner = importlib.import_module(module)
        for part in attr.split("."):
            owner = getattr(owner, part)
    fake = types.ModuleType("fake_pieces")
    fake.twice = lambda x: 2 * x
    monkeypatch.setitem(sys.modules, "fake_pieces", fake)
    spent = {}
    assert breakdown.wrap("fake_pieces", "twice", spent) and not breakdown.wrap("fake_pieces", "gone", spent)
    assert fake.twice(3) == 6 and fake.twice(4) == 8
    assert spent["twice"][1] == 2 and spent["twice"][0] >= 0.0
