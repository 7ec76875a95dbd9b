"""Procedural item generators, by the name a suite's `source = "generator:NAME"` uses.

A generator takes a seeded random.Random and the suite's [options] table and yields item
dicts (question, answer, options, meta) forever; the suite loader dedupes and splits them.
"""

from . import arithmetic, reasoning, reasoning_v2, word_problems

__all__ = ["GENERATORS"]

GENERATORS = {
    "arithmetic": arithmetic.generate,
    "reasoning": reasoning.generate,
    "reasoning_v2": reasoning_v2.generate,
    "word_problems": word_problems.generate,
}
