"""Multi-step word problems with whole-number answers, generated from templates written for rys-search.

    >>> rng = random.Random(7)
    >>> item = next(generate(rng, {}))
    >>> item["question"], item["answer"], item["meta"]["template"]

Each template draws its numbers from the seed, states them as digits in the text, and computes
the answer from the same numbers: two to four operations, everyday units (money, time, distance,
weight, volume), percentages, fractions, rates and rounding up or down. Numbers are drawn so that
every intermediate and final value is a whole number and makes sense (no negative stock, no
fractional people). The phrasing is this project's own; no benchmark item or template is copied.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator

NAMES = ["Lena", "Omar", "Priya", "Tomas", "Aiko", "Kwame", "Sofia", "Mateo", "Ines", "Ravi", "Greta", "Yusuf",
         "Hana", "Felix", "Nadia", "Jonas"]
GOODS = [("muffins", "cookies"), ("notebooks", "pencils"), ("tickets", "programmes"), ("plants", "pots"),
         ("sandwiches", "juices"), ("candles", "soaps")]
PLACES = ["bakery", "stall", "shop", "kiosk", "market stand"]


def _name(rng: random.Random, *exclude: str) -> str:
    return rng.choice([n for n in NAMES if n not in exclude])


def sales(rng: random.Random) -> tuple[str, int]:
    (a_item, b_item), place = rng.choice(GOODS), rng.choice(PLACES)
    a, b = rng.randint(2, 9), rng.randint(1, 6)
    c, d = rng.randint(12, 60), rng.randint(10, 80)
    q = (f"A {place} sells {a_item} for ${a} each and {b_item} for ${b} each. On Saturday it sold {c} {a_item} "
         f"and {d} {b_item}. How many dollars did the {place} take in on Saturday?")
    return q, a * c + b * d


def wages(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, b, c = rng.randint(12, 30), rng.randint(3, 8), rng.randint(4, 6)
    d = rng.choice([10, 20, 25, 30, 40, 50])
    total = a * b * c
    while total * d % 100:
        c += 1
        total = a * b * c
    q = (f"{name} earns ${a} an hour and works {b} hours a day for {c} days. {name} puts {d}% of the money "
         f"into savings and spends the rest. How many dollars does {name} spend?")
    return q, total * (100 - d) // 100


def two_legs(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(40, 90), rng.randint(2, 5)
    c, d = rng.randint(20, 60), rng.randint(1, 4)
    vehicle = rng.choice(["train", "bus", "ferry", "truck"])
    q = (f"A {vehicle} travels at {a} kilometres per hour for {b} hours, then at {c} kilometres per hour for "
         f"{d} hours. How many kilometres does it travel in all?")
    return q, a * b + c * d


def library(rng: random.Random) -> tuple[str, int]:
    a = rng.randint(300, 900)
    b, c = rng.randint(20, 90), rng.randint(20, 90)
    d = rng.randint(5, b + c)
    q = (f"A library has {a} books on its shelves. It lends out {b} books on Monday and {c} books on Tuesday, and "
         f"{d} of the lent books come back on Wednesday. How many books are on the shelves on Wednesday evening?")
    return q, a - b - c + d


def buses(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(60, 240), rng.randint(4, 15), rng.choice([20, 24, 30, 35, 40, 45, 50])
    while (a + b) % c == 0:
        a += 1
    q = (f"A school trip has {a} students and {b} teachers. Each bus holds {c} people. How many buses are needed "
         f"so that everyone has a seat?")
    return q, -(-(a + b) // c)


def harvest(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    b = rng.choice([3, 4, 5, 6, 8])
    a = b * rng.randint(20, 90)
    c = rng.randint(5, a - a // b - 5)
    fruit = rng.choice(["apples", "pears", "plums", "potatoes"])
    q = (f"{name} harvests {a} kilograms of {fruit}. {name} sells 1/{b} of them at the market and gives {c} "
         f"kilograms to the neighbours. How many kilograms are left?")
    return q, a - a // b - c


def discount(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    b = rng.choice([10, 20, 25, 30, 40, 50])
    a = rng.randint(4, 30) * (100 // _gcd(100, 100 - b))
    sale = a * (100 - b) // 100
    c = rng.randint(2, max(3, sale // 4))
    thing = rng.choice(["jacket", "lamp", "backpack", "pair of boots", "chair"])
    q = (f"A {thing} costs ${a}. It is on sale for {b}% off, and {name} also uses a coupon that takes ${c} off the "
         f"sale price. How many dollars does {name} pay?")
    return q, sale - c


def ages(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, b, c, d = rng.randint(3, 12), rng.randint(2, 6), rng.randint(2, 3), rng.randint(2, 9)
    q = (f"{name} is {a} years old. {name}'s cousin is {b} years older, and their grandfather is {c} times as old "
         f"as the cousin. How old will the grandfather be in {d} years?")
    return q, c * (a + b) + d


def recipe(rng: random.Random) -> tuple[str, int]:
    b = rng.choice([4, 6, 8, 10, 12])
    per = rng.randint(15, 40)
    a = per * b
    c = b * rng.randint(2, 5)
    d = rng.randint(10, per * c - 10)
    dish = rng.choice(["pancakes", "biscuits", "dumplings", "flatbreads"])
    q = (f"A recipe uses {a} grams of flour for {b} {dish}. Aunt Mira wants to make {c} {dish} and already has {d} "
         f"grams of flour in the bowl. How many more grams of flour does she need?")
    return q, a * c // b - d


def reading(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, b, c = rng.randint(8, 30), rng.randint(20, 60), rng.randint(2, 6)
    q = (f"{name} reads {a} pages on every weekday and {b} pages on each day of the weekend. How many pages does "
         f"{name} read in {c} weeks?")
    return q, (5 * a + 2 * b) * c


def tank(rng: random.Random) -> tuple[str, int]:
    a = rng.randint(3, 15)
    minutes = rng.randint(8, 60)
    c = rng.randint(10, 200)
    b = c + a * minutes
    q = (f"A pump moves {a} litres of water a minute. A tank holds {b} litres and already has {c} litres in it. "
         f"How many minutes does the pump need to fill the tank?")
    return q, minutes


def stickers(rng: random.Random) -> tuple[str, int]:
    x, y, z = _name(rng), None, None
    y = _name(rng, x)
    z = _name(rng, x, y)
    a, b = rng.randint(5, 40), rng.randint(3, 20)
    q = (f"{x} has {a} stickers. {y} has {b} more stickers than {x}, and {z} has twice as many stickers as {y}. "
         f"How many stickers do the three of them have together?")
    return q, a + (a + b) + 2 * (a + b)


def rope(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, b = rng.randint(3, 25), rng.choice([15, 25, 30, 35, 40, 45, 60, 70, 80])
    while a * 100 % b == 0:
        b += 5
    q = (f"{name} has a rope {a} metres long and cuts it into pieces of {b} centimetres each. How many whole "
         f"pieces can {name} cut?")
    return q, a * 100 // b


def average(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    e = rng.randint(70, 90)
    scores = [rng.randint(60, 100) for _ in range(4)]
    need = 5 * e - sum(scores)
    while not 0 <= need <= 100:
        scores = [rng.randint(60, 100) for _ in range(4)]
        need = 5 * e - sum(scores)
    a, b, c, d = scores
    q = (f"In four tests {name} scored {a}, {b}, {c} and {d} points. How many points does {name} need in the fifth "
         f"test to average {e} points over all five tests?")
    return q, need


def crates(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, c, d = rng.randint(4, 20), rng.randint(12, 40), rng.randint(1, 3)
    b = rng.randint(5, c * d - 2)
    fruit = rng.choice(["oranges", "melons", "mangoes", "lemons"])
    q = (f"{name} buys {a} crates of {fruit} for ${b} a crate. Each crate holds {c} {fruit}, and {name} sells every "
         f"one for ${d}. How many dollars of profit does {name} make after selling all of them?")
    return q, a * c * d - a * b


def ride(rng: random.Random) -> tuple[str, int]:
    b, c = rng.randint(12, 25), rng.randint(2, 5)
    a = b * c + rng.randint(10, 120)
    q = (f"Two towns are {a} kilometres apart. A cyclist leaves one town and rides at {b} kilometres per hour for "
         f"{c} hours before stopping for lunch. How many kilometres are still left to ride?")
    return q, a - b * c


def change(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, b, c, d = rng.randint(2, 6), rng.randint(2, 9), rng.randint(2, 8), rng.randint(1, 4)
    cost = a * b + c * d
    e = next(bill for bill in (20, 50, 100) if bill > cost)
    q = (f"{name} buys {a} notebooks at ${b} each and {c} pens at ${d} each, and pays with a ${e} bill. How many "
         f"dollars of change does {name} get?")
    return q, e - cost


def plant(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(10, 40), rng.randint(2, 9), rng.randint(3, 10)
    d = rng.randint(5, a + b * c - 5)
    q = (f"A sunflower is {a} centimetres tall and grows {b} centimetres every week. After {c} weeks a storm breaks "
         f"off the top {d} centimetres. How tall is the sunflower now, in centimetres?")
    return q, a + b * c - d


def minutes(rng: random.Random) -> tuple[str, int]:
    name = _name(rng)
    a, b, c = rng.randint(2, 5), rng.randint(10, 50), rng.randint(2, 4)
    d = rng.randint(5, 20)
    q = (f"{name} practises piano {a} times a week for {b} minutes each time, plus {d} minutes of warm-up each "
         f"time. How many minutes does {name} spend at the piano in {c} weeks?")
    return q, a * (b + d) * c


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


TEMPLATES: dict[str, Callable[[random.Random], tuple[str, int]]] = {
    f.__name__: f
    for f in (sales, wages, two_legs, library, buses, harvest, discount, ages, recipe, reading, tank, stickers,
              rope, average, crates, ride, change, plant, minutes)
}


def generate(rng: random.Random, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    names = list(options.get("templates", TEMPLATES))
    for name in names:
        if name not in TEMPLATES:
            raise ValueError(f"word-problem template {name!r} is not one of {', '.join(TEMPLATES)}")
    while True:
        template = rng.choice(names)
        question, answer = TEMPLATES[template](rng)
        if answer < 0:
            raise AssertionError(f"template {template} drew a negative answer")  # a template bug, not user input
        yield {"question": question, "answer": str(answer), "meta": {"template": template}}
