"""The confirmation stage: which trials are confirmed, the gain rule, once per schedule (also with two
workers and after a kill), `pareto --bench` caching, and export limited to members that hold."""

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from benchfiles import write_benchmarks
from rys_search.cli import main
from rys_search.search.config import Confirm, load_config
from rys_search.search.confirm import Confirmer, paced_budget, verdict
from rys_search.search.storage import open_study
from rys_search.search.study import run_study

# cheap to generate on a tiny model: math@1 answers in 24 tokens, eq@2 in 64
CONFIRM = {"limit": 2, "max_confirmed": 2, "objectives": {"math": "math@1", "eq": "eq@2"}}


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")


def config(folder, **overrides):
    confirm = overrides.pop("confirm", CONFIRM)
    return load_config(overrides={"model": folder, "limit": 3, "trials": 6, "name": "conf", "objectives": "math,eq",
                                  "sampler": "random", "confirm": confirm, **overrides})


def entry(change, lo, hi, **extra):
    return {"score": 50 + change, "change": change, "change_interval": [lo, hi], **extra}


@pytest.mark.parametrize("confirmed, expected", [
    (None, "unconfirmed"),
    ({}, "unconfirmed"),
    ({"a": entry(2, 0.5, 3.5), "b": entry(0, -1, 1)}, "gain"),
    ({"a": entry(2, 0.5, 3.5), "b": entry(-2, -3, -1)}, "mixed"),
    ({"a": entry(-2, -3, -1), "b": entry(0, -1, 1)}, "worse"),
    ({"a": entry(0.5, -0.1, 1.0), "b": entry(0, -1, 1)}, "no change"),
    ({"a": entry(9, 5, 12, broken_output=True), "b": entry(0, -1, 1)}, "broken output"),
    ({"a": entry(2, 0.5, 3.5, parse_rate=0.99, broken_output=False), "fixed_point.kl": {"change": 0.3}}, "gain"),
    ({"a": entry(9, 5, 12, parse_rate=0.45, parse_shift=True), "b": entry(0, -1, 1)}, "no change"),  # more parsed, not better
    ({"a": entry(9, 5, 12, parse_shift=True), "b": entry(-2, -3, -1)}, "worse"),
])
def test_the_gain_rule(confirmed, expected):
    assert verdict(confirmed) == expected
    assert verdict(confirmed, unmodified=True) == "unmodified"


def fake(number, values, confirmed=False, unmodified=False):
    attrs = {"confirmed": {"x": {}}} if confirmed else {}
    if unmodified:
        attrs["unmodified"] = True
    return SimpleNamespace(number=number, values=values, user_attrs=attrs, state=SimpleNamespace(name="COMPLETE"))


def test_which_trials_are_confirmed():
    study = SimpleNamespace(directions=[SimpleNamespace(name="MAXIMIZE")] * 2)
    confirmer = Confirmer.__new__(Confirmer)
    confirmer.study = study
    confirmer.config = SimpleNamespace(confirm=Confirm(top_k=1, max_confirmed=2), trials=4)
    others = [fake(0, [10, 10], confirmed=True, unmodified=True), fake(1, [12, 8], confirmed=True), fake(2, [9, 9])]
    me = SimpleNamespace(number=9)
    assert confirmer.wanted(me, [11, 11], others)  # on the front
    assert not confirmer.wanted(me, [8, 8], others)  # dominated, and no objective's best
    assert confirmer.wanted(me, [13, 1], others)  # the best math so far (top 1), dominated by nothing either way
    assert not confirmer.wanted(me, [11.5, 7], others)  # dominated by #1, second best math: not top 1
    confirmer.config = SimpleNamespace(confirm=Confirm(top_k=2, max_confirmed=2), trials=4)
    assert confirmer.wanted(me, [11.5, 7], others)  # ... but top 2
    full = others + [fake(4, [1, 1], confirmed=True)]  # two confirmed besides the unmodified model: the budget is spent
    assert not confirmer.wanted(me, [20, 20], full)
    confirmer.config = SimpleNamespace(confirm=Confirm(top_k=1, max_confirmed=2), trials=40)
    assert not confirmer.wanted(me, [11, 11], others)  # on the front, but 4 of 40 trials may use 1 of the 2


def test_the_confirmation_budget_is_spread_over_the_study():
    assert [paced_budget(15, n, 300) for n in (1, 20, 21, 150, 280, 300, 400)] == [1, 1, 2, 8, 14, 15, 15]
    assert [paced_budget(2, n, 7) for n in (1, 4, 7)] == [1, 2, 2]


def test_a_study_confirms_its_front_once_per_schedule(tiny_folder, workdir, capsys):
    cfg = config(tiny_folder, trials=7, seed=2)
    summary = run_study(cfg, progress=False)
    assert summary["finished_trials"] == 7
    study = open_study(cfg, create=False)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    confirmed = [t for t in complete if "confirmed" in t.user_attrs]
    assert complete[0].user_attrs["verdict"] == "unmodified" and "confirmed" in complete[0].user_attrs
    assert 2 <= len(confirmed) <= 3  # the unmodified model plus at most max_confirmed = 2
    schedules = [t.user_attrs["schedule"] for t in confirmed]
    assert len(schedules) == len(set(schedules))
    for t in confirmed:
        assert set(t.user_attrs["confirmed"]) == {"math@1:generate", "eq@2:generate"}
        assert all("parse_rate" in e for e in t.user_attrs["confirmed"].values())
        assert t.user_attrs["verdict"] == verdict(t.user_attrs["confirmed"], t.number == complete[0].number)
    for t in complete:
        if "confirmed" not in t.user_attrs:
            assert t.user_attrs["verdict"] == "unconfirmed"
    baseline = study.user_attrs["confirm_baseline"]
    assert set(baseline) == {"math@1:generate", "eq@2:generate"} and len(baseline["eq@2:generate"]["items"]) == 2
    for row in summary["pareto"]:
        assert row["verdict"] in ("gain", "mixed", "worse", "no change", "broken output", "unconfirmed", "unmodified")
        assert (row["front"] == "cheap") == (row["verdict"] == "unconfirmed")
    from rys_search.tracking import Tracker

    runs = {int(r.data.tags["rys.trial"]): r for r in Tracker(cfg.tracking_location()).trial_runs(cfg.name)}
    for t in confirmed:
        assert any("confirmed" in k for k in runs[t.number].data.metrics), runs[t.number].data.metrics.keys()

    # the same command again: nothing confirmed twice
    run_study(config(tiny_folder, trials=9, seed=2), progress=False)
    again = [t.user_attrs["schedule"] for t in open_study(cfg, create=False).trials if "confirmed" in t.user_attrs]
    assert len(again) == len(set(again)) and len(again) <= 3


def test_no_unconfirmed_change_is_called_a_gain(tiny_folder, workdir, capsys):
    cfg = config(tiny_folder, trials=4, seed=5, name="cheap", confirm={"enabled": False})
    run_study(cfg, progress=False)
    assert main(["pareto", "--study", "cheap", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["pareto"]
    assert rows and {r["verdict"] for r in rows} <= {"unconfirmed", "unmodified"}
    assert main(["status", "--study", "cheap"]) == 0
    out = capsys.readouterr().out
    assert "gains        none confirmed" in out and "with a gain" not in out
    assert main(["pareto", "--study", "cheap"]) == 0
    assert "no confirmed gain on this front" in capsys.readouterr().out


def test_two_workers_confirm_each_schedule_once(tiny_folder, workdir, overlapping_workers):
    path = workdir / "two.toml"
    path.write_text(f'name = "two"\nmodel = "{tiny_folder}"\nobjectives = ["math", "eq"]\nlimit = 2\ntrials = 8\n'
                    'sampler = "random"\n[confirm]\nlimit = 2\nmax_confirmed = 4\n'
                    'objectives = { math = "math@1", eq = "eq@2" }\n')
    done = subprocess.run([sys.executable, "-m", "rys_search.cli", "run", "--config", str(path), "--workers", "2"],
                          capture_output=True, text=True, timeout=900, env=overlapping_workers(2))
    assert done.returncode == 0, done.stderr[-2000:]
    study = open_study(load_config(path), create=False)
    confirmed = [t for t in study.trials if "confirmed" in t.user_attrs]
    workers = {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}
    assert len(workers) == 2
    schedules = [t.user_attrs["schedule"] for t in confirmed]
    assert confirmed and len(schedules) == len(set(schedules))


def test_pareto_bench_caches_and_export_takes_members_that_hold(tiny_folder, workdir, capsys, monkeypatch):
    cfg = config(tiny_folder, trials=5, seed=3, name="bench", confirm={"enabled": False})
    run_study(cfg, progress=False)
    gsm, bbh, _ = write_benchmarks(workdir)
    args = ["pareto", "--study", "bench", "--bench", f"gsm8k:logprob={gsm}", "--bench", f"bbh={bbh}", "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["pareto"]
    for row in rows:
        assert set(row["bench"]) == {"gsm8k:logprob", "bbh:logprob"}
        if row["verdict"] != "unmodified":
            assert row["holds"] in (True, False)
    from rys_search.search import study as study_module

    def no_load(config):
        raise AssertionError("the cached benchmark results should not need the model")

    monkeypatch.setattr(study_module, "load_study_model", no_load)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["pareto"] == rows

    # export --holds: only members that hold; none holding is a one-line refusal
    study = open_study(cfg, create=False)
    members = [r for r in rows if r["verdict"] != "unmodified"]
    assert members
    from rys_search.search.validation import cache_key, _digest
    from rys_search.search.calibrate import bench_specs

    gsm_spec, bbh_spec = bench_specs([f"gsm8k:logprob={gsm}", f"bbh={bbh}"])
    for r in members:  # hand-made results: the first member holds (bbh up, gsm8k within noise), the others do not
        better = r is members[0]
        study.set_user_attr(cache_key(bbh_spec, _digest(bbh_spec), r["schedule"]),
                            entry(5 if better else -5, 1 if better else -9, 9 if better else -1))
        study.set_user_attr(cache_key(gsm_spec, _digest(gsm_spec), r["schedule"]), entry(0, -1, 1))
    out = workdir / "exports"
    assert main(["export", "--study", "bench", "--pareto", "--holds", "--format", "hf", "--out", str(out),
                 "--no-verify"]) == 0
    exported = sorted(p.name for p in out.iterdir())
    assert len(exported) == 1 and members[0]["schedule"].replace(",", "_") in exported[0]
    card = (out / exported[0] / "README.md").read_text()
    assert "Verdict" in card and "Benchmark checks" in card


def test_concurrent_pareto_bench_calls_keep_every_entry(tiny_folder, workdir):
    cfg = config(tiny_folder, trials=4, seed=4, name="twice", confirm={"enabled": False})
    run_study(cfg, progress=False)
    gsm, _, _ = write_benchmarks(workdir)
    command = [sys.executable, "-m", "rys_search.cli", "pareto", "--study", "twice", "--bench", f"gsm8k:logprob={gsm}",
               "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    first, second = (json.loads(o[0])["pareto"] for o in outs)
    assert first == second and all("gsm8k:logprob" in r["bench"] for r in first)
    study = open_study(cfg, create=False)
    keys = [k for k in study.user_attrs if k.startswith("bench:gsm8k:logprob:")]
    assert len(keys) == len(first) + 1  # one per member and the unmodified model's baseline


def test_holds_needs_a_gain_that_is_not_a_parse_shift():
    from rys_search.search.validation import bench_entries, holds

    assert holds({"g": entry(5, 1, 9)}) is True
    assert holds({"g": entry(5, 1, 9, parse_shift=True)}) is False
    assert holds({"g": entry(5, 1, 9, parse_shift=True), "b": entry(1, 0.2, 2)}) is True
    assert holds({"g": entry(5, 1, 9), "b": entry(-1, -2, -0.2)}) is False
    assert holds({"g": entry(5, 1, 9, broken_output=True)}) is False
    assert holds({}) is None
    # an entry cached before the check existed is judged against the stored baseline's parse flags
    items = [{"id": str(k), "score": 0.0, "parsed": float(k < 12)} for k in range(100)]  # 12% parsed
    attrs = {"bench:gsm8k:generate:abc:baseline": {"items": items},
             "bench:gsm8k:generate:abc:0-1,2x2": {**entry(20, 15, 25), "parse_rate": 0.45},
             "bench:gsm8k:generate:abc:0-2x2": {**entry(2, 0.5, 4), "parse_rate": 0.13}}
    assert bench_entries(attrs, "0-1,2x2")["gsm8k:generate"]["parse_shift"] is True
    assert holds(bench_entries(attrs, "0-1,2x2")) is False
    assert holds(bench_entries(attrs, "0-2x2")) is True


def test_a_gain_must_clear_zero_family_wise_when_several_changes_are_judged_together():
    from rys_search.scoring.stage import above_zero, as_result
    from rys_search.scoring.stage import entry as stage_entry
    from rys_search.scoring.stats import bootstrap_interval, family_level
    from rys_search.search.validation import holds

    # 200 items: 30 improve by a point, 14 get worse by one; a gain at 95% alone, not at 99%
    base = {"score": 0.0, "interval": [0.0, 0.0], "items": [{"id": str(i), "score": 0.0} for i in range(200)]}
    moved = {**base, "items": [{"id": str(i), "score": 1.0 if i < 30 else -1.0 if i < 44 else 0.0} for i in range(200)]}
    lucky = stage_entry(as_result(moved), as_result(base))
    assert lucky["diffs"] == [1.0] * 30 + [-1.0] * 14 + [0.0] * 156
    assert lucky["change"] == pytest.approx(0.08)
    assert lucky["change_interval"][0] > 0 >= bootstrap_interval(lucky["diffs"], level=family_level(5))[0]
    assert above_zero(lucky, 1) and not above_zero(lucky, 5)
    others = {f"o{n}": entry(0, -1, 1) for n in range(4)}
    assert verdict({"a": lucky}) == "gain"
    assert verdict({"a": lucky, **others}) == "no change"  # one of five just above 0 is what chance gives
    assert holds({"g": lucky}) is True and holds({"g": lucky, **others}) is False
    strong = {**lucky, "diffs": [1.0] * 60 + [0.0] * 140, "change_interval": [0.2, 0.36]}
    assert verdict({"a": strong, **others}) == "gain"
    # entries stored before the differences were kept are judged by their own 95% interval
    assert verdict({"a": {k: v for k, v in lucky.items() if k != "diffs"}, **others}) == "gain"


def test_results_read_with_another_answer_reading_are_not_reused(tmp_path, monkeypatch):
    """A baseline or benchmark result stored before worked answers were also read from \\boxed{}
    (or before GSM8K answers had 512 tokens) is scored again, never compared with results read the
    new way."""
    import rys_search.scoring.benchmarks as benchmarks
    import rys_search.scoring.scorers as scorers
    from rys_search.search.validation import _digest

    class Study:
        def __init__(self, attrs):
            self.user_attrs = dict(attrs)

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

    def confirmer(study):
        made = Confirmer.__new__(Confirmer)
        made._baseline, made.study, made.loaded = None, study, None
        made.stage = SimpleNamespace(baseline=lambda loaded: {"math@2:generate": {"score": 50.0}})
        return made

    old = Study({"confirm_baseline": {"math@2:generate": {"score": 4.0}}})  # stored by the marker-only reading
    assert confirmer(old).baseline() == {"math@2:generate": {"score": 50.0}}
    assert old.user_attrs["confirm_reading"] == benchmarks.reading()
    current = Study({"confirm_baseline": {"math@2:generate": {"score": 7.0}}, "confirm_reading": benchmarks.reading()})
    assert confirmer(current).baseline() == {"math@2:generate": {"score": 7.0}}
    before_budget = Study({"confirm_baseline": {"math@2:generate": {"score": 7.0}}, "confirm_answer_reading": 2})
    assert confirmer(before_budget).baseline() == {"math@2:generate": {"score": 50.0}}

    path = tmp_path / "gsm8k.jsonl"
    path.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    spec = SimpleNamespace(path=str(path), limit=None)
    now = _digest(spec)
    monkeypatch.setattr(scorers, "ANSWER_READING", 1)
    assert _digest(spec) != now
    monkeypatch.setattr(scorers, "ANSWER_READING", 2)
    assert _digest(spec) == now
    monkeypatch.setattr(benchmarks, "VERSION", 2)
    assert _digest(spec) != now


def test_what_the_paced_budget_left_goes_to_the_front_at_the_end(tiny_folder, workdir, monkeypatch):
    """When the last trial is in, the rest of the budget confirms unconfirmed front members, the most
    convincing cheap change first, never more than the budget in all."""
    done = SimpleNamespace(state=SimpleNamespace(name="COMPLETE"))
    trials = [SimpleNamespace(user_attrs={"confirmed": {}, "unmodified": True}, **vars(done)),
              SimpleNamespace(user_attrs={"confirmed": {"x": {}}}, **vars(done)),
              SimpleNamespace(user_attrs={}, **vars(done))]
    study = SimpleNamespace(get_trials=lambda deepcopy: trials, user_attrs={"confirmed:0-3,4x2,5": {}})
    confirmer = Confirmer.__new__(Confirmer)
    confirmer.study, confirmer.loaded = study, SimpleNamespace(n_layers=8)
    confirmer.config = SimpleNamespace(confirm=Confirm(max_confirmed=4), trials=3)
    asked = []
    confirmer.confirm_later = lambda schedule: asked.append(str(schedule))

    def row(schedule, lows, verdict="unconfirmed"):
        return {"schedule": schedule, "verdict": verdict,
                **{f"o{k}_change_interval": [lo, lo + 2] for k, lo in enumerate(lows)}}

    rows = [row("0-1,2x2,3-7", [0.1, -3]), row("0-2,3x2,4-7", [-1, 2.0]), row("0-3,4x3,5-7", [-2, -2]),
            row("0-4,5x2,6-7", [9, 9], verdict="no change")]
    assert confirmer.confirm_rest(rows) == 2 and asked == ["0-2,3x2,4-7", "0-1,2x2,3-7"]  # 4 - 2 used: two more
    confirmer.config = SimpleNamespace(confirm=Confirm(max_confirmed=2), trials=3)
    asked.clear()
    assert confirmer.confirm_rest(rows) == 0 and not asked  # the budget is spent

    calls = []
    monkeypatch.setattr(Confirmer, "confirm_rest", lambda self, rows: calls.append(rows) or time.sleep(2) or 0)
    summary = run_study(config(tiny_folder, trials=4, seed=3, name="rest"), progress=False)
    assert len(calls) == 1 and summary["confirmed_at_end"] == 0  # once, with the front as it stands at the end
    assert [r["trial"] for r in calls[0]] == [r["trial"] for r in summary["pareto"]]
    seconds = summary["seconds"]  # the end's confirmations count as evaluation, and take nothing from the sampler's
    assert seconds["evaluation"] >= 2 and seconds["sampler"] > 0
