"""Multi-step reasoning items with one right answer, generated from a seed.

Tasks: ordering deduction, tracking objects through swaps, multi-step arithmetic, boolean
expressions and navigation. Each item is multiple choice (options scored by likelihood)
except arithmetic, which is scored on its digits. Answers are computed here by small
evaluators, never by eval().
"""

from __future__ import annotations

import random
from typing import Any, Iterator

NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jade", "Kofi", "Lena"]
OBJECTS = ["a red ball", "a blue kite", "a green book", "a yellow hat", "a black pen", "a white cup", "an orange scarf"]
ORDERINGS = [("taller", "tallest", "shortest"), ("older", "oldest", "youngest"), ("faster", "fastest", "slowest")]
TASKS = ("ordering", "swaps", "arithmetic", "boolean", "navigation")


def ordering(rng: random.Random, size: int) -> dict[str, Any]:
    people = rng.sample(NAMES, size)  # people[0] ranks highest
    comparative, top, bottom = rng.choice(ORDERINGS)
    facts = [f"{people[k]} is {comparative} than {people[k + 1]}." for k in range(size - 1)]
    rng.shuffle(facts)
    rank = rng.randrange(size)
    if rank == 0:
        ask, answer = f"Who is the {top}?", people[0]
    elif rank == size - 1:
        ask, answer = f"Who is the {bottom}?", people[-1]
    else:
        ask, answer = f"Who is number {rank + 1} when ordered from {top} to {bottom}?", people[rank]
    question = " ".join(facts) + " " + ask
    return {"question": question, "answer": answer, "options": sorted(people)}


def swaps(rng: random.Random, size: int) -> dict[str, Any]:
    people = rng.sample(NAMES, size)
    things = rng.sample(OBJECTS, size)
    holding = dict(zip(people, things))
    lines = [f"{p} has {t}." for p, t in holding.items()]
    for _ in range(size + 1):
        a, b = rng.sample(people, 2)
        holding[a], holding[b] = holding[b], holding[a]
        lines.append(f"Then {a} and {b} swap what they hold.")
    who = rng.choice(people)
    question = " ".join(lines) + f" What does {who} hold at the end?"
    return {"question": question, "answer": holding[who], "options": sorted(things)}


def _term(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(-9, 9), rng.randint(-9, 9)
    op = rng.choice("+-*")
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return f"({a} {op} {b})", value


def arithmetic(rng: random.Random, size: int) -> dict[str, Any]:
    text, value = _term(rng)
    for _ in range(size - 1):
        other, other_value = _term(rng)
        op = rng.choice("+-*")
        text = f"({text} {op} {other})"
        value = value + other_value if op == "+" else value - other_value if op == "-" else value * other_value
    return {"question": f"What is {text}?", "answer": str(value), "scorer": "digits"}


def _boolean(rng: random.Random, depth: int) -> tuple[str, bool]:
    if depth == 0:
        value = rng.random() < 0.5
        return str(value), value
    if rng.random() < 0.25:
        text, value = _boolean(rng, depth - 1)
        return f"not {text}", not value
    (left, lv), (right, rv) = _boolean(rng, depth - 1), _boolean(rng, depth - 1)
    op = rng.choice(["and", "or"])
    return f"({left} {op} {right})", (lv and rv) if op == "and" else (lv or rv)


def boolean(rng: random.Random, size: int) -> dict[str, Any]:
    text, value = _boolean(rng, max(1, size - 1))
    return {"question": f"Is this expression True or False? {text}", "answer": str(value), "options": ["False", "True"]}


MOVES = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}


def navigation(rng: random.Random, size: int) -> dict[str, Any]:
    back = rng.random() < 0.5
    steps = []
    for _ in range(size + 1):
        steps.append((rng.choice(list(MOVES)), rng.randint(1, 9)))
    x = sum(MOVES[d][0] * n for d, n in steps)
    y = sum(MOVES[d][1] * n for d, n in steps)
    if back:  # close the path so that it returns to the start
        if x:
            steps.append(("left" if x > 0 else "right", abs(x)))
        if y:
            steps.append(("backward" if y > 0 else "forward", abs(y)))
        rng.shuffle(steps)
    x = sum(MOVES[d][0] * n for d, n in steps)
    y = sum(MOVES[d][1] * n for d, n in steps)
    moves = " ".join(f"Take {n} step{'s' if n > 1 else ''} {d}." for d, n in steps)
    question = f"Always face forward. {moves} Are you back at the starting point?"
    return {"question": question, "answer": "Yes" if (x, y) == (0, 0) else "No", "options": ["No", "Yes"]}


BUILDERS = {"ordering": ordering, "swaps": swaps, "arithmetic": arithmetic, "boolean": boolean, "navigation": navigation}


def generate(rng: random.Random, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    tasks = list(options.get("tasks", TASKS))
    sizes = [int(s) for s in options.get("sizes", [3, 4, 5])]
    for task in tasks:
        if task not in BUILDERS:
            raise ValueError(f"reasoning task {task!r} is not one of {', '.join(TASKS)}")
    while True:
        task, size = rng.choice(tasks), rng.choice(sizes)
        item = BUILDERS[task](rng, size)
        item["meta"] = {"task": task, "size": size}
        yield item
