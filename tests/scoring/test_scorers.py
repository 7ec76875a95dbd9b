import math

import pytest

from rys_search.scoring.scorers import (
    digit_credit, eq_bench_score, parse_choice, parse_eq_ratings, parse_final_number, parse_number,
)


@pytest.mark.parametrize(
    "prediction, answer, credit",
    [
        ("391", "391", 1.0),
        ("381", "391", 2 / 3),
        ("39", "391", 2 / 3),  # a digit short
        ("3910", "391", 3 / 4),  # a digit too many
        ("-391", "391", 0.0),  # the sign shifts every digit
        ("", "391", 0.0),
        (None, "391", 0.0),
        ("123456", "123999", 0.5),
    ],
)
def test_digit_credit(prediction, answer, credit):
    assert digit_credit(prediction, answer) == pytest.approx(credit)


def test_eq_bench_formula_by_hand():
    ref = {"A": 7, "B": 2, "C": 0, "D": 5}
    assert eq_bench_score(ref, ref) == pytest.approx(100.0)
    # one emotion off by 2: 6.5 / (1 + e^(-1.2 * (2 - 4))) = 0.5626...; (10 - 0.7477 * that) * 10
    off = 6.5 / (1 + math.e ** (2.4))
    assert eq_bench_score({**ref, "A": 9}, ref) == pytest.approx((10 - 0.7477 * off) * 10)
    # beyond 5 the difference counts as it is
    assert eq_bench_score({**ref, "C": 7}, ref) == pytest.approx((10 - 0.7477 * 7) * 10)
    # fractional ratings (the logprob mode's expected intensities) go through the same curve
    d = 0.5
    assert eq_bench_score({**ref, "B": 2.5}, ref) == pytest.approx((10 - 0.7477 * 6.5 / (1 + math.e ** (-1.2 * (d - 4)))) * 10)
    with pytest.raises(ValueError, match="ratings name"):
        eq_bench_score({"A": 1}, ref)


def test_parsers():
    assert parse_number("The product is 1,234,567.") == "1234567"
    assert parse_number("-42 degrees") == "-42"
    assert parse_number("7.0") == "7" and parse_number("2.5") == "2.5"
    assert parse_number("no digits") is None
    assert parse_final_number("First 3 apples, then 5. The answer is 8.") == "8"
    assert parse_final_number("3 + 5 = 8") == "8"
    assert parse_choice("Bruno, clearly.", ["Alice", "Bruno"]) == 1
    assert parse_choice("(B) The quail", ["(A)", "(B)", "(C)"]) == 1
    assert parse_choice("It is False.", ["False", "True"]) == 0
    assert parse_choice("Alicea", ["Alice", "Bruno"]) is None  # whole words only
    text = "First pass scores:\nSad: 3\nAngry: 1\nCalm: 0\nGlad: 9\n\nRevised scores:\nSad: 4\nAngry: 1\nCalm: 0\nGlad: 8"
    assert parse_eq_ratings(text, ["Sad", "Angry", "Calm", "Glad"]) == {"Sad": 4, "Angry": 1, "Calm": 0, "Glad": 8}
    assert parse_eq_ratings("Sad: 4\nAngry: 1", ["Sad", "Angry", "Calm", "Glad"]) is None


def test_eq_v2_expected_score_by_hand():
    from rys_search.scoring.scorers import eq_bench_expected_score

    ref = {"A": 7, "B": 2, "C": 0, "D": 5}
    certain = {e: {float(r): 1.0} for e, r in ref.items()}
    assert eq_bench_expected_score(certain, ref) == pytest.approx(100.0)
    # A is 7 or 9 with even odds, the rest right: E[penalty] = 0.5 * 0 + 0.5 * S(2), S(2) = 6.5 / (1 + e^2.4)
    s2 = 6.5 / (1 + math.exp(2.4))
    spread = {**certain, "A": {7.0: 0.5, 9.0: 0.5}}
    assert eq_bench_expected_score(spread, ref) == pytest.approx((10 - 0.7477 * 0.5 * s2) * 10)
    # the v1 readout scores the expected rating (8): one emotion off by 1, S(1) = 6.5 / (1 + e^3.6)
    s1 = 6.5 / (1 + math.exp(3.6))
    assert eq_bench_score({**ref, "A": 8.0}, ref) == pytest.approx((10 - 0.7477 * s1) * 10)
    # v2 never rewards spreading: a flat distribution scores below the right answer, and below v1's readout of it
    flat = {e: {float(v): 1 / 11 for v in range(11)} for e in ref}
    expected = {e: 5.0 for e in ref}
    assert eq_bench_expected_score(flat, ref) < eq_bench_score(expected, ref) < 100.0
    with pytest.raises(ValueError, match="sum to"):
        eq_bench_expected_score({**certain, "A": {7.0: 0.5}}, ref)


def test_eq_worst_score_by_hand():
    from rys_search.scoring.scorers import eq_bench_worst_score

    ref = {"A": 7, "B": 2, "C": 0, "D": 5}
    # far ends: A at 0 (d 7), B at 10 (d 8), C at 10 (d 10), D at 0 or 10 (d 5: S(5) = 6.5 / (1 + e^-1.2))
    tally = 7 + 8 + 10 + 6.5 / (1 + math.exp(-1.2))
    assert eq_bench_worst_score(ref) == pytest.approx((10 - 0.7477 * tally) * 10)
    assert eq_bench_worst_score(ref) == pytest.approx(eq_bench_score({"A": 0, "B": 10, "C": 10, "D": 0}, ref))
    for a, b, c, d in [(7, 2, 0, 5), (0, 0, 0, 0), (10, 10, 10, 10), (3, 9, 4, 1)]:
        assert eq_bench_score({"A": a, "B": b, "C": c, "D": d}, ref) >= eq_bench_worst_score(ref)


@pytest.mark.parametrize(
    "text, final",
    [
        ("Answer: 42", "42"),
        ("6 * 7 = 42.\nThe answer is $42.\nThanks!", "$42."),
        ("**Answer:** (B) the owl", "(B) the owl"),
        ("first answer 3, then the final answer is 7", "7"),
        ("I worked out 42 but never said it", None),
        ("Answer:", None),
        ("ANSWER: 5", "5"),
        ("To answer this, add 2 and 3: 5.", None),  # the word alone is no answer marker
        ("Answer: 42. I hope this answer helps.", "42. I hope this answer helps."),
        # the LaTeX convention: the last \\boxed{...}, braces matched, when no answer marker follows it
        ("So he needs \\(\\boxed{78}\\) minutes.", "78"),
        ("Answer: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Answer: 5\nOn second thought: \\boxed{7}", "7"),
        ("We get \\boxed{7}, so the answer is 8.", "8."),
        ("first \\boxed{3}, then \\boxed{4", None),  # the last box is not closed: no answer yet
        ("\\boxed{}", None),
        ("Therefore, the final answer is:\n\\[\n\\boxed{10}\n\\]", "10"),
        ("Therefore, the final answer is:\n\\[\n", None),  # a display opened, its answer not written yet
    ],
)
def test_final_answer(text, final):
    from rys_search.scoring.scorers import final_answer

    assert final_answer(text) == final


def test_parse_rate_and_the_broken_output_flag():
    from rys_search.scoring.objective import ObjectiveResult, parse_check

    def result(flags):
        items = [{"id": str(k), "score": 0.0, "parsed": float(f)} for k, f in enumerate(flags)]
        return ObjectiveResult("x", 2, "maximize", "generate", "search", "s", 0.0, (0.0, 0.0), items)

    base = result([1] * 49 + [0])  # 98%
    same = parse_check(result([1] * 49 + [0]), base)
    assert same["parse_rate"] == pytest.approx(0.98) and not same["broken_output"]
    one_less = parse_check(result([1] * 48 + [0, 0]), base)  # inside the noise of a 98% baseline
    assert not one_less["broken_output"]
    broken = parse_check(result([1] * 37 + [0] * 13), base)  # 74%
    assert broken["broken_output"] and broken["parse_change_interval"][1] < 0 and not broken["parse_shift"]
    rare = result([1] * 6 + [0] * 44)  # a model that seldom answers in the asked format: 12%
    shifted = parse_check(result([1] * 22 + [0] * 28), rare)  # 44%: more parsed answers, not better ones
    assert shifted["parse_shift"] and not shifted["broken_output"]
    assert not parse_check(result([1] * 7 + [0] * 43), rare)["parse_shift"]
    assert broken["unmodified_parse_rate"] == pytest.approx(0.98)
    logprob = ObjectiveResult("x", 2, "maximize", "logprob", "search", "s", 0.0, (0.0, 0.0), [{"id": "0", "score": 1}])
    assert parse_check(logprob, logprob) is None


def test_a_row_stops_after_its_complete_answer_line():
    from rys_search.scoring.probes import answered
    from rys_search.scoring.scorers import final_answer

    assert answered("Working: 6 * 7.\nAnswer: 42\n") and not answered("Working: 6 * 7.\nAnswer: 42")
    assert answered("So the answer is $18.\nThanks") and answered("**Answer:** 7\n")
    assert not answered("Answer:\n") and not answered("To answer this, we add.\nThen 5.\n")
    text = "Step 1.\nAnswer: 42\n"  # what a stopped row ends with: its answer is the last marker
    assert final_answer(text) == "42"
    assert answered("so \\(\\boxed{78}\\)") and not answered("so \\(\\boxed{7") and not answered("\\boxed{\\frac{1}{2}")
    text = "Add: 16 + 23 = 39. Double: \\(\\boxed{78}\\) minutes.\nQuestion: more"
    flags = [answered(text[:k]) for k in range(len(text) + 1)]
    assert flags == sorted(flags) and flags[-1]  # once true, true for every longer text
    stopped = text[:flags.index(True)]  # where generation cuts the row
    assert stopped.endswith("\\boxed{78}") and final_answer(stopped) == "78"
    text = "74 - 64 = 10\nTherefore, the final answer is:\n\\[\n\\boxed{10}\n\\]\n"  # as Qwen2.5-Coder writes it
    flags = [answered(text[:k]) for k in range(len(text) + 1)]
    assert flags == sorted(flags) and final_answer(text[:flags.index(True)]) == "10"


def test_a_boxed_final_answer_is_parsed_for_numbers_and_options():
    from rys_search.scoring.probes import ProbeObjective
    from rys_search.scoring.suites import Item

    objective = ProbeObjective("x", 2, lambda split: [], mode="generate", working=True, unparsed="worst")
    number = Item(id="n", split="all", scorer="number", prompt="q", answer="78")
    assert objective._score_text(number, "16 + 23 = 39, doubled \\(\\boxed{78}\\)") == {
        "score": 100.0, "exact": 1.0, "parsed": 1.0}
    assert objective._score_text(number, "16 + 23 = 39, doubled 78")["parsed"] == 0.0  # a number in the working is no answer
    choice = Item(id="c", split="all", scorer="choice", prompt="q", answer="(B)", options=("(A)", "(B)"))
    assert objective._score_text(choice, "so it must be \\boxed{(B)}")["correct"] == 1.0


def test_answers_cut_off_at_the_token_limit_are_counted_and_a_baseline_with_many_is_warned_about(monkeypatch, caplog):
    """cut: no answer read and the row used every new token without an end token (the limit, not the
    model, ended it); an answer that fits, or a row the model ended, is never cut."""
    from types import SimpleNamespace

    import rys_search.scoring.probes as probes
    from rys_search.schedule import LayerSchedule
    from rys_search.scoring.probes import ProbeObjective
    from rys_search.scoring.stage import Stage
    from rys_search.scoring.suites import Item

    words = {0: "", 5: "so ", 7: "Answer: 78\n"}  # 0 is the end token
    tokenizer = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: "".join(words[i] for i in ids))
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=0), config=None)
    loaded = SimpleNamespace(tokenizer=tokenizer, model=model)
    rows = [[5, 5, 5], [5, 0], [5, 7], [5, 5, 7]]  # cut / ended by the model / answered early / answered at the limit
    monkeypatch.setattr(probes, "generate_ids", lambda loaded, prompts, max_new, stop=None: rows)
    objective = ProbeObjective("x", 2, lambda split: [], mode="generate", max_new_tokens=3, working=True, unparsed="worst")
    monkeypatch.setattr(objective, "_prompt_ids", lambda tokenizer, item: [1, 2])
    items = [Item(id=str(k), split="all", scorer="number", prompt="q", answer="78") for k in range(4)]
    results, metrics, tokens = objective._score_generated(loaded, items)
    assert [r["cut"] for r in results] == [1.0, 0.0, 0.0, 0.0] and [r["parsed"] for r in results] == [0, 0, 1, 1]
    assert metrics["cut"] == 0.25 and metrics["parsed"] == 0.5 and tokens == 4 * 2 + 10

    def result(cut):
        return SimpleNamespace(score=50.0, interval=(40.0, 60.0), version=2, items=[], seconds=1.0,
                               metrics={"parsed": 0.9, "cut": cut})

    stage = Stage.__new__(Stage)
    for cut, warned in ((0.25, True), (0.0, False)):
        monkeypatch.setattr(Stage, "evaluate", lambda self, loaded, schedule: {"gsm8k:generate": result(cut)})
        caplog.clear()
        stored = stage.baseline(SimpleNamespace(n_layers=4))
        assert stored["gsm8k:generate"]["cut_rate"] == cut
        assert ("ran out of new tokens" in caplog.text) == warned
