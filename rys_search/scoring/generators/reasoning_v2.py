"""Multi-step reasoning items of the kinds BIG-Bench-Hard tests, generated from a seed.

    >>> item = next(generate(random.Random(3), {"tasks": ["lineup"]}))
    >>> item["question"], item["options"], item["answer"]

Kinds: objects tracked through swaps, a line-up deduced from position clues (with a unique
solution, checked by trying every order), date arithmetic, navigation with turns, boolean
expressions, chains of truth-tellers and liars, counting things of one kind in a list, and
nested arithmetic. Every answer is computed here by a small evaluator (never eval()); every
item but counting and arithmetic is multiple choice. The phrasing is this project's own.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any, Iterator

NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jade", "Kofi", "Lena",
         "Marta", "Nils", "Oona", "Pavel"]
THINGS = ["a red ball", "a blue kite", "a green book", "a yellow hat", "a black pen", "a white cup",
          "an orange scarf", "a purple mug"]
SEATS = ["a dancing partner", "a seat on the bus", "a locker", "a desk", "a parking spot"]
ROW_OBJECTS = {
    "shelf": ["the vase", "the clock", "the globe", "the candle", "the plant", "the radio", "the lamp"],
    "race": ["the fox", "the hare", "the owl", "the tortoise", "the badger", "the deer", "the crow"],
    "queue": ["the baker", "the pilot", "the nurse", "the farmer", "the tailor", "the judge", "the poet"],
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh"]
ANIMALS = ["cat", "dog", "goat", "rabbit", "hamster", "parrot", "horse", "duck"]
FRUITS = ["apple", "banana", "peach", "plum", "orange", "grape", "pear", "mango"]
INSTRUMENTS = ["violin", "drum", "flute", "trumpet", "piano", "guitar", "harp", "cello"]
VEGETABLES = ["carrot", "onion", "cabbage", "potato", "leek", "turnip", "pepper", "radish"]
KINDS = {"animals": ANIMALS, "fruits": FRUITS, "musical instruments": INSTRUMENTS, "vegetables": VEGETABLES}
NUMBER_WORDS = ["a", "two", "three", "four", "five"]
PLURALS = {"potato": "potatoes", "mango": "mangoes"}
TASKS = ("swaps", "lineup", "dates", "navigation", "boolean", "truth", "counting", "arithmetic")


def swaps(rng: random.Random, size: int) -> dict[str, Any]:
    people = rng.sample(NAMES, size)
    kind = rng.choice(["things", "seats"])
    if kind == "things":
        held = rng.sample(THINGS, size)
        lines = [f"{p} starts with {t}." for p, t in zip(people, held)]
        verb = "trade what they hold"
        ask = "At the end, {who} has"
    else:
        base = rng.choice(SEATS)
        held = [f"{base} number {k + 1}" for k in range(size)]
        lines = [f"{p} is given {t}." for p, t in zip(people, held)]
        verb = "swap"
        ask = "At the end, {who} has"
    holding = dict(zip(people, held))
    steps = rng.randint(size, size + 2)
    last: set[str] = set()
    for step in range(steps):
        a, b = rng.sample(people, 2)
        while {a, b} == last:  # the same pair twice in a row undoes itself
            a, b = rng.sample(people, 2)
        last = {a, b}
        holding[a], holding[b] = holding[b], holding[a]
        lines.append(f"{'First' if step == 0 else 'Then'}, {a} and {b} {verb}.")
    who = rng.choice(people)
    question = " ".join(lines) + " " + ask.format(who=who) + " which one?"
    return {"question": question, "answer": holding[who], "options": sorted(held)}


def _clue_holds(clue: tuple, order: tuple[str, ...]) -> bool:
    kind, *args = clue
    at = {x: k for k, x in enumerate(order)}
    if kind == "before":
        return at[args[0]] < at[args[1]]
    if kind == "position":
        return at[args[0]] == args[1]
    if kind == "not_position":
        return at[args[0]] != args[1]
    if kind == "adjacent":
        return abs(at[args[0]] - at[args[1]]) == 1
    raise ValueError(kind)


def _clue_text(clue: tuple, scene: str, n: int) -> str:
    kind, *args = clue
    words = {"shelf": ("to the left of", "from the left"), "race": ("ahead of", "to finish"),
             "queue": ("in front of", "in the queue")}[scene]
    first, second = args[0].capitalize(), args[1] if len(args) > 1 else None
    if kind == "before":
        return f"{first} is {words[0]} {second}."
    if kind == "adjacent":
        return f"{first} is right next to {second}."
    pos = args[1]
    place = "last" if pos == n - 1 else ORDINALS[pos]
    if kind == "position":
        return f"{first} is {place} {words[1]}." if pos != n - 1 else f"{first} is {place}."
    return f"{first} is not {place} {words[1]}." if pos != n - 1 else f"{first} is not {place}."


def lineup(rng: random.Random, size: int) -> dict[str, Any]:
    scene = rng.choice(list(ROW_OBJECTS))
    objects = rng.sample(ROW_OBJECTS[scene], size)
    truth = tuple(rng.sample(objects, size))
    orders = list(itertools.permutations(objects))
    clues: list[tuple] = []
    while True:
        alive = [o for o in orders if all(_clue_holds(c, o) for c in clues)]
        if len(alive) == 1:
            break
        kind = rng.choice(["before", "before", "position", "not_position", "adjacent"])
        if kind in ("before", "adjacent"):
            a, b = rng.sample(objects, 2)
            clue = (kind, a, b) if kind == "adjacent" or truth.index(a) < truth.index(b) else (kind, b, a)
        else:
            x = rng.choice(objects)
            pos = truth.index(x) if kind == "position" else rng.choice([p for p in range(size) if p != truth.index(x)])
            clue = (kind, x, pos)
        if not _clue_holds(clue, truth) or clue in clues:
            continue
        if len([o for o in alive if _clue_holds(clue, o)]) < len(alive):  # only clues that narrow it down
            clues.append(clue)
    rng.shuffle(clues)
    ask = rng.randrange(size)
    intro = {"shelf": f"On a shelf stand {size} things in a row: {', '.join(sorted(objects))}.",
             "race": f"{size} animals ran a race: {', '.join(sorted(objects))}. There were no ties.",
             "queue": f"{size} people wait in a queue: {', '.join(sorted(objects))}."}[scene]
    where = {"shelf": "from the left", "race": "to finish", "queue": "in the queue"}[scene]
    place = "last" if ask == size - 1 else ORDINALS[ask]
    question = (intro + " " + " ".join(_clue_text(c, scene, size) for c in clues)
                + f" Which one is {place}{'' if ask == size - 1 else ' ' + where}?")
    return {"question": question, "answer": truth[ask], "options": sorted(objects)}


def _date(d: dt.date) -> str:
    return f"{d.month:02d}/{d.day:02d}/{d.year}"


def dates(rng: random.Random, size: int) -> dict[str, Any]:
    today = dt.date(rng.randint(1990, 2030), 1, 1) + dt.timedelta(days=rng.randrange(365))
    shape = rng.choice(["days", "weeks", "yesterday", "tomorrow_of"])
    if shape == "days":
        n = rng.randint(2, 40) * rng.choice([-1, 1])
        target = today + dt.timedelta(days=n)
        ask = f"What is the date {abs(n)} days {'from today' if n > 0 else 'ago'}?"
    elif shape == "weeks":
        n = rng.randint(1, 6) * rng.choice([-1, 1])
        target = today + dt.timedelta(weeks=n)
        ask = f"What was the date {abs(n)} week{'s' if abs(n) > 1 else ''} ago?" if n < 0 else \
            f"What will the date be {n} week{'s' if n > 1 else ''} from today?"
    elif shape == "yesterday":
        target = today - dt.timedelta(days=1)
        ask = "What was the date yesterday?"
    else:
        n = rng.randint(2, 20)
        target = today + dt.timedelta(days=n + 1)
        ask = f"What will the date be one day after the day that is {n} days from today?"
    intro = rng.choice(["Today is {d}.", "It is {d} today.", "The calendar shows {d} today."])
    spoken = f"{MONTHS[today.month - 1]} {today.day}, {today.year}"
    wrong = {
        target + dt.timedelta(days=1), target - dt.timedelta(days=1), target + dt.timedelta(days=7),
        _shift_year(target, 1), _shift_year(target, -1), _shift_month(target, 1), _shift_month(target, -1),
    } - {target}
    options = sorted([_date(target)] + [_date(d) for d in rng.sample(sorted(wrong), 4)])
    question = intro.format(d=spoken) + " " + ask + " Give it as MM/DD/YYYY."
    return {"question": question, "answer": _date(target), "options": options}


def _shift_year(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def _shift_month(d: dt.date, months: int) -> dt.date:
    month = d.month - 1 + months
    year, month = d.year + month // 12, month % 12 + 1
    for day in (d.day, 30, 29, 28):
        try:
            return dt.date(year, month, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


HEADINGS = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # north, east, south, west


def navigation(rng: random.Random, size: int) -> dict[str, Any]:
    heading, x, y = 0, 0, 0
    parts = []
    for _ in range(size + 2):
        move = rng.choice(["step", "step", "left", "right", "around"])
        if move == "step":
            n = rng.randint(1, 9)
            dx, dy = HEADINGS[heading]
            x, y = x + n * dx, y + n * dy
            parts.append(f"Walk {n} step{'s' if n > 1 else ''} forward.")
        else:
            heading = (heading + {"left": -1, "right": 1, "around": 2}[move]) % 4
            parts.append({"left": "Turn left.", "right": "Turn right.", "around": "Turn around."}[move])
    if rng.random() < 0.5 and (x, y) != (0, 0):  # walk back home along the axes, so "Yes" is common
        for axis, value in ((0, x), (1, y)):
            if value == 0:
                continue
            want = (3 if value > 0 else 1) if axis == 0 else (2 if value > 0 else 0)
            turns = (want - heading) % 4
            parts.append({0: None, 1: "Turn right.", 2: "Turn around.", 3: "Turn left."}[turns])
            heading = want
            parts.append(f"Walk {abs(value)} step{'s' if abs(value) > 1 else ''} forward.")
            x, y = (0, y) if axis == 0 else (x, 0)
    question = ("You start facing north. " + " ".join(p for p in parts if p)
                + " Do you end where you started?")
    return {"question": question, "answer": "Yes" if (x, y) == (0, 0) else "No", "options": ["No", "Yes"]}


def _expression(rng: random.Random, depth: int) -> tuple[str, bool]:
    if depth == 0:
        value = rng.random() < 0.5
        return ("true" if value else "false"), value
    if rng.random() < 0.3:
        text, value = _expression(rng, depth - 1)
        return f"not {text}", not value
    (left, lv), (right, rv) = _expression(rng, depth - 1), _expression(rng, depth - 1)
    op = rng.choice(["and", "or"])
    return f"({left} {op} {right})", (lv and rv) if op == "and" else (lv or rv)


def boolean(rng: random.Random, size: int) -> dict[str, Any]:
    text, value = _expression(rng, max(2, size - 1))
    question = f"Work out the value of this logical expression: {text}. Is it true or false?"
    return {"question": question, "answer": "true" if value else "false", "options": ["false", "true"]}


def truth(rng: random.Random, size: int) -> dict[str, Any]:
    people = rng.sample(NAMES, size + 1)
    honest = {people[0]: rng.random() < 0.5}
    lines = [f"{people[0]} {'always tells the truth' if honest[people[0]] else 'always lies'}."]
    for prev, who in zip(people, people[1:]):
        claim = rng.random() < 0.5  # who claims that prev is honest (True) or a liar (False)
        honest[who] = claim == honest[prev]
        verb = rng.choice(["says", "claims", "insists"])
        lines.append(f"{who} {verb} that {prev} {'tells the truth' if claim else 'lies'}.")
    last = people[-1]
    question = " ".join(lines) + f" Each person either always tells the truth or always lies. Does {last} tell the truth?"
    return {"question": question, "answer": "Yes" if honest[last] else "No", "options": ["No", "Yes"]}


def counting(rng: random.Random, size: int) -> dict[str, Any]:
    kind = rng.choice(list(KINDS))
    others = [k for k in KINDS if k != kind]
    chosen = [(rng.choice(KINDS[kind]), kind) for _ in range(rng.randint(2, size + 2))]
    chosen += [(rng.choice(KINDS[o]), o) for o in rng.choices(others, k=rng.randint(1, size + 1))]
    counts: dict[str, tuple[int, str]] = {}
    for thing, group in chosen:
        n = counts.get(thing, (0, group))[0] + rng.randint(1, 3)
        counts[thing] = (min(n, 5), group)
    listing = list(counts.items())
    rng.shuffle(listing)
    words = []
    for thing, (n, _) in listing:
        plural = thing if n == 1 else PLURALS.get(thing, thing + ("es" if thing.endswith(("sh", "ch")) else "s"))
        words.append(f"{NUMBER_WORDS[n - 1]} {plural}" if n > 1 else f"{'an' if thing[0] in 'aeiou' else 'a'} {thing}")
    text = ", ".join(words[:-1]) + f" and {words[-1]}"
    total = sum(n for _, (n, group) in listing if group == kind)
    question = f"In my house I have {text}. How many {kind} do I have?"
    return {"question": question, "answer": str(total), "scorer": "number"}


def _term(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(-9, 9), rng.randint(-9, 9)
    op = rng.choice("+-*")
    return f"({a} {op} {b})", a + b if op == "+" else a - b if op == "-" else a * b


def arithmetic(rng: random.Random, size: int) -> dict[str, Any]:
    (x, xv), (y, yv) = _term(rng), _term(rng)
    op = rng.choice("+-*")
    value = xv + yv if op == "+" else xv - yv if op == "-" else xv * yv
    text = f"{x} {op} {y}"
    if size > 3:
        z, zv = _term(rng)
        op2 = rng.choice("+-")
        value = value + zv if op2 == "+" else value - zv
        text = f"({text}) {op2} {z}"
    return {"question": f"Calculate {text}.", "answer": str(value), "scorer": "number"}


BUILDERS = {"swaps": swaps, "lineup": lineup, "dates": dates, "navigation": navigation, "boolean": boolean,
            "truth": truth, "counting": counting, "arithmetic": arithmetic}


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
