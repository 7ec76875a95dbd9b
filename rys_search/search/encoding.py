"""The fixed-length encoding of the search space: every trial has the same parameters.

    >>> schedule = suggest_fixed(trial, n_layers=28, space=config.space, period=1)
    >>> decode({"s0_on": 1, "s0_start": 9, "s0_width": 3, "s0_extra": 1, "s1_on": 0, ...}, 28, space)
    >>> encode(schedule, 28, space)          # slot values that decode back to schedule

The define-by-run space (space.py) asks for a block's parameters only when the block exists,
so trials differ in which parameters they have. TPE copes (it groups trials by their
parameters), but NSGA-II and NSGA-III evolve, and the GP sampler models, only the parameters
that every trial has: with define-by-run they learned n_blocks and the first block at most,
and NSGA-II behaved exactly like random. Here a schedule is max_blocks slots, each with an
on/off flag, a start, a width and extra passes, all suggested in every trial with fixed ranges.

Decoding is deterministic and always gives a valid schedule: the slots that are on, ordered
by start (then slot), are laid left to right; a block that would overlap the one before it
starts right after it, keeping its end; a block is cut to the layer region, its width to a
multiple of the family's repeat period, and its passes (then its width) to the added-layer
budget left; a block cut below the smallest width is dropped. With no slot on, slot 0 is used,
so no trial proposes the unmodified model (trial 0 is that). Any schedule of the define-by-run
space is the decoding of its own encoding (encode), so both encodings cover the same space.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..schedule import Block, LayerSchedule
from .config import SearchSpace

__all__ = ["ENCODINGS", "decode", "encode", "fixed_ranges", "suggest_fixed"]

ENCODINGS = ("define-by-run", "fixed")


def _round_up(value: int, period: int) -> int:
    return -(-value // period) * period


def fixed_ranges(n_layers: int, space: SearchSpace, period: int = 1) -> dict[str, tuple[int, int, int]]:
    """Each slot's parameters as name -> (low, high, step): the same for every trial."""
    first, last = space.resolved_region(n_layers)
    min_width = _round_up(space.width[0], period)
    max_width = min(space.width[1], last - first + 1)
    max_width -= max_width % period
    if max_width < min_width:
        max_width = min_width  # no block fits the region: decode drops every block
    ranges = {}
    for s in range(space.max_blocks):
        ranges[f"s{s}_on"] = (0, 1, 1)
        ranges[f"s{s}_start"] = (first, max(first, last - min_width + 1), 1)
        ranges[f"s{s}_width"] = (min_width, max_width, period)
        ranges[f"s{s}_extra"] = (space.extra_passes[0], space.extra_passes[1], 1)
    return ranges


def suggest_fixed(trial: Any, n_layers: int, space: SearchSpace, period: int = 1) -> LayerSchedule:
    from .space import UNMODIFIED

    if trial.user_attrs.get(UNMODIFIED):  # trial 0, enqueued: the unmodified model, no parameters
        return LayerSchedule.identity(n_layers)
    values = {name: trial.suggest_int(name, low, high, step=step)
              for name, (low, high, step) in fixed_ranges(n_layers, space, period).items()}
    return decode(values, n_layers, space, period)


def decode(values: Mapping[str, int], n_layers: int, space: SearchSpace, period: int = 1) -> LayerSchedule:
    """The schedule of one trial's slot values (see the module docstring for the rules)."""
    first, last = space.resolved_region(n_layers)
    min_width = _round_up(space.width[0], period)
    slots = [s for s in range(space.max_blocks) if values[f"s{s}_on"]] or [0]
    slots.sort(key=lambda s: (values[f"s{s}_start"], s))
    blocks: list[Block] = []
    budget = space.max_added_layers
    at = first
    for s in slots:
        start, width, extra = values[f"s{s}_start"], values[f"s{s}_width"], values[f"s{s}_extra"]
        end = min(start + width - 1, last)
        start = max(start, at)
        width = min(end - start + 1, space.width[1])
        width -= width % period
        extra = max(space.extra_passes[0], min(extra, space.extra_passes[1]))
        if width * extra > budget:
            extra = max(space.extra_passes[0], budget // max(width, 1))
            width = min(width, budget // extra)
            width -= width % period
        if width < min_width:
            continue  # nothing of this slot fits: dropped
        blocks.append(Block(start, start + width - 1, extra))
        budget -= width * extra
        at = start + width
    return LayerSchedule.from_blocks(n_layers, blocks)


def encode(schedule: LayerSchedule, n_layers: int, space: SearchSpace, period: int = 1) -> dict[str, int]:
    """Slot values that decode to schedule (a schedule of the space: at most max_blocks blocks)."""
    blocks = schedule.blocks(n_layers) or []
    if len(blocks) > space.max_blocks:
        raise ValueError(f"{schedule} has {len(blocks)} blocks; the space allows {space.max_blocks}")
    first, _ = space.resolved_region(n_layers)
    values: dict[str, int] = {}
    for s in range(space.max_blocks):
        b = blocks[s] if s < len(blocks) else None
        values[f"s{s}_on"] = int(b is not None)
        values[f"s{s}_start"] = b.start if b else first
        values[f"s{s}_width"] = b.width if b else _round_up(space.width[0], period)
        values[f"s{s}_extra"] = b.extra if b else space.extra_passes[0]
    return values
