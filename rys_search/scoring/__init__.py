"""Objectives: probe suites (math, EQ, reasoning, or your own) and the fixed-point score.

    >>> from rys_search.scoring import get_objective, paired_change
    >>> math = get_objective("math", mode="logprob")
    >>> base = math.evaluate(loaded, identity)
    >>> run = math.evaluate(loaded, schedule)
    >>> run.score, run.interval, paired_change(run, base)

Every score carries a 95% bootstrap interval; changes against the unmodified model carry a
paired one (stats.py).
"""

from . import fixed_point as _fixed_point  # noqa: F401  (registers "fixed_point")
from .objective import MODES, Objective, ObjectiveResult, paired_change, parse_check
from .probes import evaluate_probes
from .registry import available_objectives, get_objective, objective_key, register
from .stats import bootstrap_interval, half_width, paired_interval

__all__ = [
    "MODES",
    "Objective",
    "ObjectiveResult",
    "available_objectives",
    "bootstrap_interval",
    "evaluate_probes",
    "get_objective",
    "half_width",
    "objective_key",
    "paired_change",
    "paired_interval",
    "parse_check",
    "register",
]
