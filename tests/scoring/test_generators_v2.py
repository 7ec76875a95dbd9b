"""The v2 suites' generated items, each checked by a solver written here independently of the generator:
it reads the numbers and facts back from the question text and works the answer out another way."""

import ast
import itertools
import re

import pytest

from rys_search.scoring.suites import load_suites

# per template: the answer from the numbers as they appear in the question, left to right
WORD_PROBLEMS = {
    "sales": lambda n: n[0] * n[2] + n[1] * n[3],
    "wages": lambda n: n[0] * n[1] * n[2] - n[0] * n[1] * n[2] * n[3] // 100,
    "two_legs": lambda n: n[0] * n[1] + n[2] * n[3],
    "library": lambda n: n[0] - n[1] - n[2] + n[3],
    "buses": lambda n: -(-(n[0] + n[1]) // n[2]),
    "harvest": lambda n: n[0] - n[0] * n[1] // n[2] - n[3],  # "1/b": n[1] is the 1
    "discount": lambda n: n[0] - n[0] * n[1] // 100 - n[2],
    "ages": lambda n: (n[0] + n[1]) * n[2] + n[3],
    "recipe": lambda n: n[0] * n[2] // n[1] - n[3],
    "reading": lambda n: (n[0] * 5 + n[1] * 2) * n[2],
    "tank": lambda n: (n[1] - n[2]) // n[0],
    "stickers": lambda n: n[0] + (n[0] + n[1]) * 3,
    "rope": lambda n: n[0] * 100 // n[1],
    "average": lambda n: n[4] * 5 - sum(n[:4]),
    "crates": lambda n: n[0] * (n[2] * n[3] - n[1]),
    "ride": lambda n: n[0] - n[1] * n[2],
    "change": lambda n: n[4] - n[0] * n[1] - n[2] * n[3],
    "plant": lambda n: n[0] + n[1] * n[2] - n[3],
    "minutes": lambda n: n[0] * (n[1] + n[2]) * n[3],
}


def items(key):
    suite = load_suites()[key]
    return suite.items("search") + suite.items("heldout")


def test_word_problems_solved_from_their_text():
    found = items("math@2")
    assert len(found) == 400 and len({i.prompt for i in found}) == 400
    assert {i.meta["template"] for i in found} == set(WORD_PROBLEMS)  # every template is used and checked
    for item in found:
        numbers = [int(x) for x in re.findall(r"\d+", item.prompt)]
        assert WORD_PROBLEMS[item.meta["template"]](numbers) == int(item.answer), item.prompt
        assert int(item.answer) >= 0


def test_word_problem_divisions_are_exact():
    for item in items("math@2"):
        numbers = [int(x) for x in re.findall(r"\d+", item.prompt)]
        template = item.meta["template"]
        if template == "tank":
            assert (numbers[1] - numbers[2]) % numbers[0] == 0
        if template == "recipe":
            assert numbers[0] * numbers[2] % numbers[1] == 0
        if template == "harvest":
            assert numbers[0] % numbers[2] == 0
        if template == "discount":
            assert numbers[0] * numbers[1] % 100 == 0


def _lineup_solutions(question, options):
    """Every order of the options that satisfies the clues, by trying them all."""
    clues = re.findall(r"([A-Z][a-z]+ [a-z]+) is (not )?(.+?)\.", question.split(". ", 1)[1])
    names = {o.lower(): o for o in options}
    ordinals = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh"]
    solutions = []
    for order in itertools.permutations(options):
        at = {x: k for k, x in enumerate(order)}
        ok = True
        for subject, negated, rest in clues:
            subject = names.get(subject.lower())
            if subject is None:
                continue
            other = next((names[o] for o in names if rest.endswith(o)), None)
            if rest.startswith(("to the left of", "ahead of", "in front of")):
                holds = at[subject] < at[other]
            elif rest.startswith("right next to"):
                holds = abs(at[subject] - at[other]) == 1
            elif rest.startswith("last"):
                holds = at[subject] == len(order) - 1
            else:
                holds = at[subject] == ordinals.index(rest.split()[0])
            ok &= holds != bool(negated)
        if ok:
            solutions.append(order)
    return solutions


def _days_in(month, year):
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _add_days(day, month, year, n):
    """Walk the calendar one day at a time (no datetime)."""
    step = 1 if n > 0 else -1
    for _ in range(abs(n)):
        day += step
        if day > _days_in(month, year):
            day, month = 1, month + 1
            if month > 12:
                month, year = 1, year + 1
        elif day < 1:
            month -= 1
            if month < 1:
                month, year = 12, year - 1
            day = _days_in(month, year)
    return f"{month:02d}/{day:02d}/{year}"


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _date_answer(q):
    month, day, year = re.search(r"(\w+) (\d+), (\d{4})", q).groups()
    day, month, year = int(day), MONTHS.index(month) + 1, int(year)
    if "yesterday" in q:
        return _add_days(day, month, year, -1)
    if "one day after the day that is" in q:
        return _add_days(day, month, year, int(re.search(r"is (\d+) days", q).group(1)) + 1)
    n = int(re.search(r"(\d+) (?:days|weeks?)", q.split(str(year), 1)[1]).group(1))
    n *= 7 if "week" in q else 1
    return _add_days(day, month, year, -n if "ago" in q else n)


def _walk(q):
    position, heading = 0j, 1j  # north
    for move in re.findall(r"Turn left|Turn right|Turn around|Walk \d+", q):
        if move.startswith("Walk"):
            position += heading * int(move.split()[1])
        else:
            heading *= {"Turn left": 1j, "Turn right": -1j, "Turn around": -1}[move]
    return "Yes" if position == 0 else "No"


def _boolean(q):
    expr = q.split(": ", 1)[1].rsplit(". Is it", 1)[0]

    def value(node):
        if isinstance(node, ast.Name):
            return {"true": True, "false": False}[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not value(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [value(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        raise AssertionError(ast.dump(node))

    return "true" if value(ast.parse(expr, mode="eval").body) else "false"


def _truth(q):
    """Try every assignment of honest/liar and keep the one consistent with all statements."""
    people = list(dict.fromkeys(re.findall(r"\b([A-Z][a-z]+)\b (?:always|says|claims|insists)", q)))
    answers = set()
    for honest in itertools.product([True, False], repeat=len(people)):
        h = dict(zip(people, honest))
        ok = h[people[0]] == ("always tells the truth" in q.split(".")[0])
        for speaker, target, claim in re.findall(r"([A-Z][a-z]+) (?:says|claims|insists) that ([A-Z][a-z]+) "
                                                 r"(tells the truth|lies)", q):
            ok &= h[speaker] == (h[target] == (claim == "tells the truth"))
        if ok:
            answers.add("Yes" if h[people[-1]] else "No")
    assert len(answers) == 1
    return answers.pop()


WORDS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}
GROUPS = {
    "animals": {"cat", "dog", "goat", "rabbit", "hamster", "parrot", "horse", "duck"},
    "fruits": {"apple", "banana", "peach", "plum", "orange", "grape", "pear", "mango"},
    "musical instruments": {"violin", "drum", "flute", "trumpet", "piano", "guitar", "harp", "cello"},
    "vegetables": {"carrot", "onion", "cabbage", "potato", "leek", "turnip", "pepper", "radish"},
}


def _count(q):
    listing = q.split("I have ", 1)[1].split(". How many", 1)[0]
    kind = q.split("How many ", 1)[1].split(" do I have")[0]
    total = 0
    for count, thing in re.findall(r"\b(an|a|two|three|four|five) ([a-z]+)", listing):
        singular = next(s for s in GROUPS[kind] | set().union(*GROUPS.values()) if thing in (s, s + "s", s + "es"))
        total += WORDS[count] if singular in GROUPS[kind] else 0
    return str(total)


def _arithmetic(q):
    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}
        return ops[type(node.op)](value(node.left), value(node.right))

    return str(value(ast.parse(q.removeprefix("Calculate ").rstrip("."), mode="eval").body))


def _swap(q):
    held = dict(re.findall(r"([A-Z][a-z]+) (?:starts with|is given) (.+?)\.", q))
    for a, b in re.findall(r"([A-Z][a-z]+) and ([A-Z][a-z]+) (?:trade what they hold|swap)", q):
        held[a], held[b] = held[b], held[a]
    return held[re.search(r"At the end, ([A-Z][a-z]+) has", q).group(1)]


def test_reasoning_v2_items_solved_independently():
    found = items("reasoning@2")
    tasks = {i.meta["task"] for i in found}
    assert tasks == {"swaps", "lineup", "dates", "navigation", "boolean", "truth", "counting", "arithmetic"}
    for item in found:
        q, task = item.prompt.split("\nOptions:")[0], item.meta["task"]
        if task == "lineup":
            solutions = _lineup_solutions(q, list(item.options))
            assert len(solutions) == 1, q  # the clues pin down exactly one order
            ordinals = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh"]
            asked = re.search(r"Which one is (\w+)", q).group(1)
            position = len(item.options) - 1 if asked == "last" else ordinals.index(asked)
            assert solutions[0][position] == item.answer, q
        elif task == "dates":
            assert _date_answer(q) == item.answer, q
        else:
            solver = {"swaps": _swap, "navigation": _walk, "boolean": _boolean, "truth": _truth,
                      "counting": _count, "arithmetic": _arithmetic}[task]
            assert solver(q) == item.answer, q
        if item.scorer == "choice":
            assert item.answer in item.options and len(set(item.options)) == len(item.options)


def test_v2_suites_ask_for_working_only_in_generate_mode():
    suites = load_suites()
    assert suites["math@2"].modes == ("generate",) and suites["math@2"].working
    reasoning = suites["reasoning@2"]
    assert "answer only" in reasoning.instructions["logprob"] and "Answer:" in reasoning.instructions["generate"]
    assert suites["eq@2"].eq_logprob == "expected_score" and suites["eq@2"].unparsed == "worst"
    assert [i.prompt for i in suites["eq@2"].items("search")] == [i.prompt for i in suites["eq@1"].items("search")]
    assert suites["math"].version == suites["reasoning"].version == suites["eq"].version == 1


@pytest.mark.parametrize("name,tokens", [("math", 320), ("reasoning", 384)])
def test_v3_suites_are_v2_with_a_longer_answer_budget(name, tokens):
    """v3 changes only the new-token budget: the same items, prompts, instructions and reading as v2."""
    suites = load_suites()
    v2, v3 = suites[f"{name}@2"], suites[f"{name}@3"]
    assert (v2.max_new_tokens, v3.max_new_tokens) == (tokens, 512)
    for split in ("search", "heldout"):
        assert [(i.prompt, i.answer) for i in v3.items(split)] == [(i.prompt, i.answer) for i in v2.items(split)]
    assert (v3.modes, v3.working, v3.unparsed, v3.instructions) == (v2.modes, v2.working, v2.unparsed, v2.instructions)


@pytest.mark.parametrize("key", ["math@2", "reasoning@2"])
def test_v2_generated_suites_are_deterministic_and_split_cleanly(key):
    suite = load_suites()[key]
    first = [(i.prompt, i.answer) for i in suite.items("search")]
    assert first == [(i.prompt, i.answer) for i in load_suites()[key].items("search")]
    assert not {p for p, _ in first} & {i.prompt for i in suite.items("heldout")}
