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
