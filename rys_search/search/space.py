"""The search space, define-by-run: how many blocks, then each block's start, width and passes.

    >>> schedule = suggest_schedule(trial, n_layers=30, space=config.space, period=1)

Blocks are proposed left to right, so they never overlap; each one's ranges shrink to what
the layer region and the added-layer budget still allow, and a family's repeat period (from
its data file) is honoured by stepping widths in multiples of it. The unmodified model is
enqueued as trial 0 (marked by a user attribute, with no parameters); samplers propose one
block or more. The grid sampler sweeps the RYS
literature's (i, j) pairs instead: one block i..j-1, run twice.
"""

from __future__ import annotations

from typing import Any

from ..schedule import Block, LayerSchedule
from .config import SearchSpace

__all__ = ["UNMODIFIED", "grid_pairs", "suggest_schedule"]

UNMODIFIED = "unmodified"  # user attr of the enqueued trial 0
GRID_PARAM = "rys"


def _round_up(value: int, period: int) -> int:
    return -(-value // period) * period


def suggest_schedule(trial: Any, n_layers: int, space: SearchSpace, period: int = 1) -> LayerSchedule:
    if trial.user_attrs.get(UNMODIFIED):  # trial 0, enqueued: the unmodified model, no parameters
        return LayerSchedule.identity(n_layers)
    first, last = space.resolved_region(n_layers)
    n_blocks = trial.suggest_int("n_blocks", 1, space.max_blocks)
    min_width = _round_up(space.width[0], period)
    blocks: list[Block] = []
    budget = space.max_added_layers
    at = first
    for b in range(n_blocks):
        room = last - at + 1
        if room < min_width or budget < min_width * space.extra_passes[0]:
            break  # no block fits any more: the schedule keeps the blocks so far
        max_width = min(space.width[1], room, budget // space.extra_passes[0])
        max_width -= max_width % period
        if max_width < min_width:
            break
        start = trial.suggest_int(f"b{b}_start", at, last - min_width + 1)
        max_width = min(max_width, last - start + 1)
        max_width -= max_width % period
        if max_width < min_width:
            break
        width = trial.suggest_int(f"b{b}_width", min_width, max_width, step=period)
        extra = trial.suggest_int(f"b{b}_extra", space.extra_passes[0], max(space.extra_passes[0], min(space.extra_passes[1], budget // width)))
        blocks.append(Block(start, start + width - 1, extra))
        budget -= width * extra
        at = start + width
    return LayerSchedule.from_blocks(n_layers, blocks)


def grid_pairs(n_layers: int, space: SearchSpace, period: int = 1) -> list[str]:
    """Every (i, j) with i..j-1 inside the region and j - i a width the space allows, as 'i,j'."""
    first, last = space.resolved_region(n_layers)
    pairs = ["none"]
    for i in range(first, last + 1):
        for width in range(space.width[0], space.width[1] + 1):
            j = i + width
            if j - 1 <= last and width % period == 0 and width <= space.max_added_layers:
                pairs.append(f"{i},{j}")
    return pairs


def suggest_grid(trial: Any, n_layers: int, pairs: list[str]) -> LayerSchedule:
    choice = trial.suggest_categorical(GRID_PARAM, pairs)
    if choice == "none":
        return LayerSchedule.identity(n_layers)
    i, j = (int(x) for x in choice.split(","))
    return LayerSchedule.rys(n_layers, i, j)
