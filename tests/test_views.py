"""What users see: MLflow names and saved views, the ui links, the report page, the layer view."""

import io
import json
import math
import re
from types import SimpleNamespace

import pytest

from rys_search.errors import UserError
from rys_search.report import export_command, render_report
from rys_search.ui import links_for, parse_compare, serve
from rys_search.views import (GROUPS, VIEW_TAG_PREFIX, compare_url, pareto_markdown, runs_url, saved_views,
                              trial_metrics, trial_run_name, view_id)


def trial(**attrs):
    return SimpleNamespace(user_attrs=attrs)


SCORES = {
    "math": {"score": 23.456789, "interval": [20.1, 26.9], "noise": 3.4, "change": 1.23456, "change_interval": [-0.5, 2.9],
             "seconds": 1.0},
    "eq": {"score": 55.0, "interval": [47.0, 63.0], "noise": 8.0, "change": -4.0, "change_interval": [-5.0, -3.0],
           "seconds": 1.0},
}


def test_metrics_are_grouped_ordered_rounded_and_finite():
    metrics = trial_metrics(trial(scores=SCORES, seconds=2.0, tokens=1000,
                                  fixed_point={"score": -0.1, "kl": 0.05, "blocks": 2.0, "block0_contraction": 0.8,
                                               "block1_contraction": 1.3, "block0_seam": 0.2, "block1_seam": float("nan")}))
    keys = list(metrics)
    assert keys[:2] == ["1_score/math", "1_score/eq"]  # the compare view's default metric is the first logged
    assert keys[2:4] == ["2_change/math", "2_change/eq"]
    assert all(k.split("/")[0] in GROUPS for k in keys)
    assert [k.split("/")[0] for k in keys] == sorted(k.split("/")[0] for k in keys)  # grouped in UI order
    assert metrics["1_score/math"] == 23.4568 and metrics["2_change/math"] == 1.2346
    assert metrics["3_interval/eq_change_lo"] == -5.0 and metrics["3_interval/math_noise"] == 3.4
    assert metrics["4_fixed_point/contraction_max"] == 1.3 and metrics["4_fixed_point/seam_max"] == 0.2
    assert metrics["5_cost/tokens_per_second"] == 500.0
    assert all(math.isfinite(v) for v in metrics.values())
    confirmed = trial_metrics(trial(scores=SCORES, seconds=1.0, confirmed={"math": {"score": 24.0, "change": 0.6}, "eq": "?"}))
    assert list(confirmed)[-2:] == ["6_confirmed/math", "6_confirmed/math_change"]
    assert confirmed["6_confirmed/math"] == 24.0 and confirmed["6_confirmed/math_change"] == 0.6
    assert not any(k.startswith("6_confirmed/eq") for k in confirmed)


def test_the_unmodified_trial_logs_no_block_figures_and_nothing_empty():
    metrics = trial_metrics(trial(scores=SCORES, seconds=0.0, fixed_point={"score": 0.0, "kl": 0.0, "blocks": 0.0}))
    assert not any("contraction" in k or "seam" in k for k in metrics)
    assert "5_cost/tokens_per_second" not in metrics  # no division by zero seconds
    pruned = trial_metrics(trial(seconds=1.5, fixed_point={"score": float("nan"), "kl": 3.2, "blocks": 1.0}))
    assert pruned == {"4_fixed_point/kl": 3.2, "4_fixed_point/blocks": 1.0, "5_cost/seconds": 1.5}


def test_run_names_carry_number_and_schedule():
    assert trial_run_name(3, "0-9,10-12x2,13-29") == "#3 0-9,10-12x2,13-29"
    assert trial_run_name(0, "0-29", unmodified=True) == "#0 unmodified (0-29)"


def test_pareto_markdown_has_two_decimals_and_one_line_per_member():
    rows = [{"trial": 4, "schedule": "0-4,5-9x2,10-11", "added_layers": 5, "math": 0.95422435, "math_interval": [0.8, 1.1],
             "math_change": 0.04368272907393564, "math_change_interval": [0.000123, 0.0812345], "within_noise": False},
            {"trial": 9, "schedule": "0-11", "added_layers": 0, "math": 0.91, "math_interval": [0.8, 1.0],
             "math_change": 0.0, "math_change_interval": [0.0, 0.0], "within_noise": True}]
    text = pareto_markdown(rows, ["math"])
    lines = text.strip().splitlines()
    assert len(lines) == 4
    assert "0.95 (+0.04 [+0.00, +0.08])" in lines[2] and "within noise" in lines[3]
    assert not re.search(r"\d\.\d{3}", text)  # nothing with more than two decimals
    assert pareto_markdown([]) == "(empty Pareto front)\n"


def test_saved_views_filter_the_study_and_show_its_scores():
    keys = ["1_score/math", "1_score/eq", "2_change/math", "2_change/eq", "3_interval/math_lo", "4_fixed_point/kl"]
    tags = saved_views("demo", ["math", "eq"], keys)
    assert set(tags) == {VIEW_TAG_PREFIX + "rys-demo-pareto", VIEW_TAG_PREFIX + "rys-demo-trials"}
    envelope = json.loads(tags[VIEW_TAG_PREFIX + "rys-demo-pareto"])
    assert envelope["name"] == "demo: Pareto front" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert "tags.`rys.study` = 'demo'" in state["searchFilter"] and "tags.`rys.pareto` = 'true'" in state["searchFilter"]
    assert state["orderByKey"] == "metrics.`1_score/math`" and state["runsHiddenMode"] == "SHOW_ALL"
    assert state["selectedColumns"][:4] == ["params.`schedule`", "params.`added_layers`", "metrics.`1_score/math`",
                                            "metrics.`1_score/eq`"]
    parallel = [c for c in state["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel and parallel[0]["selectedMetrics"][:2] == ["1_score/math", "1_score/eq"]
    scatter = [c for c in state["compareRunCharts"] if c["type"] == "SCATTER"]
    assert [(c["xaxis"]["key"], c["yaxis"]["key"]) for c in scatter] == [("1_score/math", "1_score/eq")]
    bars = {c["metricKey"] for c in state["compareRunCharts"] if c["type"] == "BAR"}
    assert bars == set(keys)
    sections = {s["uuid"] for s in state["compareRunSections"]}
    assert all(c["metricSectionId"] in sections for c in state["compareRunCharts"])
    trials = json.loads(json.loads(tags[VIEW_TAG_PREFIX + "rys-demo-trials"])["state"])
    assert "rys.pareto" not in trials["searchFilter"]


def test_view_ids_are_safe_for_odd_study_names():
    odd = view_id("my study/ä'", "pareto")
    assert re.fullmatch(r"rys-[0-9a-f]{12}-pareto", odd)
    state = json.loads(json.loads(saved_views("it's", ["math"], ["1_score/math"])[VIEW_TAG_PREFIX + view_id("it's", "pareto")])["state"])
    assert "'it\\'s'" in state["searchFilter"]


FACTS = {"study": "demo", "study_id": 1, "tracking_uri": "http://127.0.0.1:9", "parent_run": "p0",
         "objectives": ["math"], "pareto": [0, 4], "runs": {0: "r0", 4: "r4", 7: "r7"}, "complete": [0, 4, 7]}


def test_links_point_at_the_views_and_the_compared_runs():
    links = links_for("http://h:5000", "3", FACTS, "pareto").links
    assert links["Pareto front, table"] == runs_url("http://h:5000", "3", "rys-demo-pareto")
    assert "viewStateShareKey=rys-demo-pareto" in links["Pareto front, table"]
    assert "workflowType=machine_learning" in links["Pareto front, table"]
    assert "compareRunsMode=CHART" in links["Pareto front, charts"]
    assert links["Compare the Pareto members"] == compare_url("http://h:5000", "3", ["r0", "r4"])
    named = links_for("http://h:5000", "3", FACTS, [7, 4]).links
    assert "%22r7%22%2C%22r4%22" in named["Compare trials 7,4"]
    with pytest.raises(UserError, match="no MLflow run for trial"):
        links_for("http://h:5000", "3", FACTS, [5])


def test_compare_option():
    assert parse_compare("pareto") == "pareto" and parse_compare("3, 5,8") == [3, 5, 8]
    for bad in ("best", "3,x", "-1", ","):
        with pytest.raises(UserError):
            parse_compare(bad)


def test_a_tracking_server_is_pointed_at_not_started():
    out = io.StringIO()
    links = serve(FACTS, "3", "sqlite:///x.db", out=out, hold=0)
    assert links.mlflow == "http://127.0.0.1:9"
    assert "http://127.0.0.1:9/#/experiments/3/runs?" in out.getvalue() and "starting" not in out.getvalue()


SUMMARY = {
    "study": "demo<x>", "config": {"model": "org/Model<b>", "mode": "logprob", "split": "search", "limit": 24,
                                    "sampler": "tpe", "seed": 0, "trials": 12, "space": {"max_blocks": 2}},
    "objectives": ["math", "eq"], "directions": ["maximize", "maximize"], "states": {"COMPLETE": 11, "PRUNED": 1},
    "finished": 12, "n_layers": 30,
    "unmodified": {"trial": 0, "schedule": "0-29", "scores": SCORES, "fixed_point": {}},
    "heldout_baseline": {},
    "pareto": [
        {"trial": 0, "schedule": "0-29", "added_layers": 0, "math": 23.45, "math_change": 0.0,
         "math_change_interval": [0.0, 0.0], "eq": 55.0, "eq_change": 0.0, "eq_change_interval": [0.0, 0.0],
         "within_noise": True},
        {"trial": 5, "schedule": "0-9,10-12x2,13-29", "added_layers": 3, "math": 26.1, "math_change": 2.65,
         "math_change_interval": [0.4, 4.9], "eq": 51.0, "eq_change": -4.0, "eq_change_interval": [-6.0, -2.0],
         "within_noise": False},
    ],
    "bench": {}, "calibration": [], "tracking_uri": None,
}


def test_the_report_is_one_page_and_leaves_out_what_is_absent():
    page = render_report(SUMMARY, {"pareto_front.png": b"\x89PNG fake", "layers.png": b"\x89PNG 2"})
    assert page.startswith("<!doctype html>") and "http" not in page.replace("http-equiv", "")  # nothing fetched
    assert page.count("src=\"data:image/png;base64,") == 2
    for heading in ("Model and config", "The unmodified model", "Pareto front", "Where the search went", "Export"):
        assert f"<h2>{heading}" in page
    for absent in ("<h2>Calibration", "<h2>Benchmark validation", "<h2>Search values against confirmed", "<th>verdict"):
        assert absent not in page
    assert "org/Model&lt;b&gt;" in page and "<b>" not in page.split("<main>")[1].replace("<br>", "")
    import html

    assert export_command("demo<x>", 5) in html.unescape(page)
    assert "--trial 0 " not in page  # the unmodified model is not exported
    assert "+2.65" in page and "[+0.40, +4.90]" in page


def test_the_report_shows_confirmation_benchmarks_and_calibration_where_they_exist():
    data = json.loads(json.dumps(SUMMARY))
    data["pareto"][1]["confirmed"] = {"math": {"score": 24.0, "interval": [22, 26], "change": 0.6,
                                               "change_interval": [-0.4, 1.6], "parse_rate": 0.97, "broken_output": 0.01}}
    data["pareto"][1]["verdict"] = "unconfirmed"
    data["bench"] = {"0-9,10-12x2,13-29": {"gsm8k": {"score": 31.0, "change": -6.8, "change_interval": [-9.0, -4.5],
                                                      "parse_rate": 0.99}}}
    data["calibration"] = [{"objective": "math", "benchmark": "gsm8k", "spearman": 0.12, "interval": [-0.2, 0.4],
                            "sign_agreement": 0.55, "n": 40}]
    page = render_report(data, {})
    assert "Search values against confirmed values" in page and "unconfirmed" in page and "97.0%" in page
    assert "Benchmark validation" in page and "gsm8k" in page and "-6.80" in page
    assert "Calibration" in page and "+0.12" in page and "55.0%" in page
    assert "Where the search went" not in page  # no figures given


def test_layer_view_counts_against_a_hand_count():
    from rys_search.search.plots import change_by_block, good_trials, layer_counts, trial_blocks

    a = trial(blocks="2-3x2,6x3", scores={"math": {"change": 2.0}})
    b = trial(blocks="2-3x2", scores={"math": {"change": -1.0}})
    c = trial(blocks="none", scores={"math": {"change": 0.0}})
    assert trial_blocks(a) == [(2, 2, 1), (6, 1, 2)] and trial_blocks(c) == []
    assert list(layer_counts([a, b], 8)) == [0, 0, 1, 1, 0, 0, 0.5, 0]
    assert good_trials([a, b, c], "math") == [a]  # the top quarter of the modified trials, at least one
    mean, count = change_by_block([a, b, c], "math", 8)
    assert count[1, 2] == 2 and mean[1, 2] == 0.5  # width 2 at layer 2: (2 - 1) / 2
    assert count[0, 6] == 1 and mean[0, 6] == 2.0
    assert math.isnan(mean[0, 0])


def test_a_trial_note_is_a_short_table():
    from rys_search.search.publish import trial_note

    note = trial_note(SimpleNamespace(number=5, state=SimpleNamespace(name="COMPLETE"),
                                      user_attrs={"schedule": "0-9,10-12x2,13-29", "added_layers": 3, "scores": SCORES,
                                                  "fixed_point": {"score": -0.1, "kl": 0.05, "block0_contraction": 0.8}}),
                      member=True)
    assert note.splitlines()[0] == "**#5** `0-9,10-12x2,13-29`, +3 layers · Pareto member"
    assert "| math | 23.46 | [20.10, 26.90] | +1.23 | [-0.50, +2.90] |" in note
    assert "worst block contraction 0.80" in note
    assert "confirmed" not in note


def test_a_trial_note_shows_the_confirmed_values_its_verdict_rests_on():
    from rys_search.search.publish import trial_note

    confirmed = {"gsm8k:generate": {"score": 40.0, "change": 6.5, "change_interval": [2.0, 11.0], "parse_rate": 0.42,
                                    "parse_shift": True, "broken_output": False},
                 "bbh:logprob": {"score": 35.1, "change": -1.2, "change_interval": [-2.0, -0.4]}}
    note = trial_note(SimpleNamespace(number=7, state=SimpleNamespace(name="COMPLETE"),
                                      user_attrs={"schedule": "0-9,10x2,11", "added_layers": 1, "scores": SCORES,
                                                  "confirmed": confirmed, "verdict": "worse"}), member=False)
    assert note.splitlines()[0].endswith("· verdict: worse")
    assert "| gsm8k:generate | 40.00 | +6.50 | [+2.00, +11.00] | 42% (parse shift) |" in note
    assert "| bbh:logprob | 35.10 | -1.20 | [-2.00, -0.40] |  |" in note


def test_versioned_objectives_get_names_mlflow_takes_and_views_that_match():
    metrics = trial_metrics(trial(scores={"math@2": SCORES["math"]}))
    assert "1_score/math_v2" in metrics and not any("@" in k for k in metrics)
    state = json.loads(json.loads(saved_views("d", ["math@2"], list(metrics))[VIEW_TAG_PREFIX + "rys-d-pareto"])["state"])
    assert state["orderByKey"] == "metrics.`1_score/math_v2`"
    assert "metrics.`1_score/math_v2`" in state["selectedColumns"]
