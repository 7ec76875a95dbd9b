"""Scorers: partial credit on digits, the EQ-Bench v2 formula, answer parsing.

    >>> digit_credit("391", "391"), digit_credit("381", "391"), digit_credit("39", "391")
    (1.0, 0.6666666666666666, 0.6666666666666666)
    >>> round(eq_bench_score({"Angry": 7, "Sad": 2, "Calm": 0, "Glad": 1},
    ...                      {"Angry": 7, "Sad": 2, "Calm": 0, "Glad": 1}), 1)
    100.0

All pure functions of strings and numbers; nothing here touches a model.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

__all__ = [
    "ANSWER_CHAR",
    "ANSWER_MARK",
    "ANSWER_READING",
    "BOXED",
    "boxed",
    "closing_brace",
    "digit_credit",
    "eq_bench_expected_score",
    "eq_bench_score",
    "eq_bench_worst_score",
    "final_answer",
    "parse_choice",
    "parse_eq_ratings",
    "parse_final_number",
    "parse_number",
]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
EQ_ADJUST = 0.7477  # EQ-Bench v2: the constant that puts random answers at zero


def parse_number(text: str) -> str | None:
    """The first number in text, with thousands separators removed ('1,234' -> '1234')."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    number = match.group(0).replace(",", "")
    if "." in number:
        whole, frac = number.split(".", 1)
        number = whole if set(frac) <= {"0"} else number
    return number


def parse_final_number(text: str) -> str | None:
    """The number after the last 'answer' (as in 'The answer is 42'), else the last number."""
    lowered = text.lower()
    at = lowered.rfind("answer")
    if at >= 0:
        found = parse_number(text[at:])
        if found is not None:
            return found
    numbers = _NUMBER.findall(text)
    return parse_number(numbers[-1]) if numbers else None


def digit_credit(prediction: str | None, answer: str) -> float:
    """Partial credit, RYS style: matching characters from the left over the longer length.

    Exact answers score 1; a wrong length costs in proportion; the sign counts as a character.
    """
    if not prediction:
        return 0.0
    if prediction == answer:
        return 1.0
    matches = sum(1 for p, a in zip(prediction, answer) if p == a)
    return matches / max(len(prediction), len(answer))


def eq_bench_score(ratings: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """The EQ-Bench v2 (full-scale) score of one item, 0-100 (random answers score about 0).

    For each emotion the difference d = |rating - reference| is scaled: 0 stays 0, d <= 5
    goes through the S-curve 6.5 / (1 + e^(-1.2 (d - 4))), larger d stays d; the item scores
    (10 - 0.7477 * sum) * 10. Ratings must name exactly the reference's four emotions.
    """
    if set(ratings) != set(reference):
        raise ValueError(f"ratings name {sorted(ratings)} but the item asks for {sorted(reference)}")
    return _item_score(sum(_scaled(abs(float(ratings[e]) - float(ref))) for e, ref in reference.items()))


def _scaled(d: float) -> float:
    """EQ-Bench v2's penalty for one emotion rated d away from its reference."""
    if d == 0:
        return 0.0
    if d <= 5:
        return 6.5 * (1.0 / (1.0 + math.e ** (-1.2 * (d - 4))))
    return d


def _item_score(tally: float) -> float:
    return (10.0 - tally * EQ_ADJUST) * 10.0


def eq_bench_expected_score(distributions: Mapping[str, Mapping[float, float]], reference: Mapping[str, float]) -> float:
    """The expected EQ-Bench v2 item score when each emotion's rating is drawn from its distribution.

    distributions[emotion] maps each rating to its probability (they must sum to 1). The item
    score is affine in the sum of the emotions' penalties, so its expectation is the score of
    the summed expected penalties: E[score] = (10 - 0.7477 * sum_e E[scaled(|r_e - ref_e|)]) * 10.
    Unlike the score of the expected rating, this does not reward a spread-out distribution:
    by Jensen's inequality spreading mass away from the reference can only cost.
    """
    if set(distributions) != set(reference):
        raise ValueError(f"ratings name {sorted(distributions)} but the item asks for {sorted(reference)}")
    tally = 0.0
    for emotion, ref in reference.items():
        dist = distributions[emotion]
        total = sum(dist.values())
        if not math.isclose(total, 1.0, rel_tol=1e-6, abs_tol=1e-6):
            raise ValueError(f"the rating probabilities of {emotion!r} sum to {total}, not 1")
        tally += sum(p * _scaled(abs(float(r) - float(ref))) for r, p in dist.items())
    return _item_score(tally)


def eq_bench_worst_score(reference: Mapping[str, float], scale: tuple[float, float] = (0.0, 10.0)) -> float:
    """The lowest score an answer to this item can get: every emotion rated at the far end of the scale.

    An answer that cannot be parsed is scored this way (EQ v2), so breaking the format never
    beats a wrong but readable answer.
    """
    lo, hi = scale
    return _item_score(sum(_scaled(max(float(ref) - lo, hi - float(ref))) for ref in reference.values()))


# 'Answer: 42', '**Answer:** 7', 'The answer is (B).': the word, then a colon or "is", then the answer
ANSWER_MARK = re.compile(r"\banswer\s*(?::|\bis\b)[\s*:]*", re.IGNORECASE)
# what an answer holds at least: a letter or digit ('\[' alone opens a display, its answer still to come)
ANSWER_CHAR = r"[^\W_]"
# How worked answers are read, for caches and stored baselines: 1 = after the last answer marker;
# 2 = also from a \boxed{...} that comes after it. Results read differently are never compared.
ANSWER_READING = 2
# '\boxed{78}': the LaTeX convention that many models (Qwen, DeepSeek, ...) answer in, whatever they are asked
BOXED = re.compile(r"\\boxed\s*\{")


def closing_brace(text: str, start: int) -> int | None:
    """The index just past the brace that closes one opened right before `start` (None: not closed)."""
    depth = 1
    for at in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0:
            return at + 1
    return None


def boxed(text: str) -> tuple[int, str] | None:
    """Where the last \\boxed{...} of text begins and what it holds (braces matched); None when the
    text has none or its last one is not closed yet."""
    marks = list(BOXED.finditer(text))
    end = closing_brace(text, marks[-1].end()) if marks else None
    return None if end is None else (marks[-1].start(), text[marks[-1].end():end - 1].strip())


def final_answer(text: str) -> str | None:
    """The text after the last answer marker ('Answer:', 'answer is') to the end of its line, or what
    the last \\boxed{...} holds when that comes later; None when the text has neither, or nothing
    follows the marker on its line.

    Answers with working are parsed from here only: a number or option named in the working
    does not count as the answer, nor does a sentence that merely uses the word ('To answer this').
    """
    marks = list(ANSWER_MARK.finditer(text))
    box = boxed(text)
    if box is not None and (not marks or box[0] >= marks[-1].start()):
        return box[1] or None
    if not marks:
        return None
    rest = text[marks[-1].end():]
    line = rest.split("\n", 1)[0].strip(" \t*")
    return line if re.search(ANSWER_CHAR, line) else None


def parse_eq_ratings(text: str, emotions: Sequence[str]) -> dict[str, float] | None:
    """'Emotion: 7' lines for exactly the given emotions; the last rating of each wins
    (EQ-Bench answers give first-pass and revised scores). None unless all four are found."""
    found: dict[str, float] = {}
    wanted = {e.lower(): e for e in emotions}
    for name, value in re.findall(r"([A-Za-z][A-Za-z \-']*?)\s*:\s*(\d+(?:\.\d+)?)", text):
        key = name.strip().lower()
        if key in wanted:
            found[wanted[key]] = min(10.0, float(value))
    return found if len(found) == len(wanted) else None


def parse_choice(text: str, options: Sequence[str]) -> int | None:
    """The option the text names first (whole words, case-insensitive), or an option letter '(B)'."""
    letter = re.match(r"\s*\(?([A-Z])\)", text)
    if letter is not None:
        index = ord(letter.group(1)) - ord("A")
        if 0 <= index < len(options):
            return index
    best: tuple[int, int] | None = None
    lowered = text.lower()
    for index, option in enumerate(options):
        match = re.search(r"(?<!\w)" + re.escape(option.lower()) + r"(?!\w)", lowered)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), index)
    return None if best is None else best[1]
