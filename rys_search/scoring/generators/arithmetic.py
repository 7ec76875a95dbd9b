"""Hard arithmetic answered without working, in the style of the RYS probes.

Kinds: multi-digit products, square and cube roots of perfect powers, integer powers and
mixed expressions. Level 1 is a few digits, level 3 up to 6 x 6-digit products and cube
roots of 11-12-digit cubes. Every answer is an integer.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

# per level: digits of product factors, root sizes, power bases/exponents, mixed-term digits
LEVELS = {
    1: dict(product=(3, 2), sqrt=(100, 999), cbrt=(20, 99), power=((11, 30), (3, 4)), mixed=2),
    2: dict(product=(4, 4), sqrt=(1000, 9999), cbrt=(100, 999), power=((31, 99), (3, 5)), mixed=3),
    3: dict(product=(6, 6), sqrt=(10000, 99999), cbrt=(2000, 9999), power=((101, 999), (3, 4)), mixed=4),
}
KINDS = ("product", "sqrt", "cbrt", "power", "mixed")


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _one(rng: random.Random, kind: str, level: int) -> tuple[str, int]:
    spec = LEVELS[level]
    if kind == "product":
        a, b = (_digits(rng, n) for n in spec["product"])
        return f"What is {a} * {b}?", a * b
    if kind == "sqrt":
        root = rng.randint(*spec["sqrt"])
        return f"What is the square root of {root * root}?", root
    if kind == "cbrt":
        root = rng.randint(*spec["cbrt"])
        return f"What is the cube root of {root ** 3}?", root
    if kind == "power":
        (lo, hi), (elo, ehi) = spec["power"]
        base, exp = rng.randint(lo, hi), rng.randint(elo, ehi)
        return f"What is {base} to the power of {exp}?", base**exp
    n = spec["mixed"]
    a, b, c, d, e = (_digits(rng, n) for _ in range(5))
    return f"What is {a} * {b} - {c} * {d} + {e}?", a * b - c * d + e


def generate(rng: random.Random, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    levels = [int(x) for x in options.get("levels", [1, 2, 3])]
    kinds = list(options.get("kinds", KINDS))
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"arithmetic level {level} is not one of {sorted(LEVELS)}")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"arithmetic kind {kind!r} is not one of {', '.join(KINDS)}")
    while True:
        level, kind = rng.choice(levels), rng.choice(kinds)
        question, answer = _one(rng, kind, level)
        yield {"question": question, "answer": str(answer), "meta": {"level": level, "kind": kind}}
