"""Layer schedules: which decoder layers run, in which order.

A schedule is the sequence of source layers a forward pass runs through (its *path*).
It has one canonical string form, used everywhere (CLI, logs, MLflow params, GGUF
metadata), and three ways in::

    >>> s = LayerSchedule.parse("0-9,10-12x2,13-29")      # count suffix: 10-12 runs twice
    >>> s == LayerSchedule.parse("0-12,10-12,13-29")       # a general layer path
    True
    >>> s == LayerSchedule.from_blocks(30, [Block(10, 12, extra=1)])
    True
    >>> s == LayerSchedule.rys(30, 10, 13)                  # the RYS pair (i, j): i..j-1 twice
    True
    >>> str(s)
    '0-9,10-12x2,13-29'

Ranges are inclusive. Invalid input raises ScheduleError with a message that says what
is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import UserError

__all__ = ["Block", "LayerSchedule", "ScheduleError"]


class ScheduleError(UserError, ValueError):
    """A schedule string or block list that cannot describe a valid layer order."""


@dataclass(frozen=True, order=True)
class Block:
    """Layers start..end (inclusive) run 1 + extra times in a row."""

    start: int
    end: int
    extra: int = 1

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ScheduleError(f"block {self.start}-{self.end}: layer {self.start} is negative")
        if self.end < self.start:
            raise ScheduleError(f"block {self.start}-{self.end} is reversed; write {self.end}-{self.start}")
        if self.extra < 1:
            raise ScheduleError(f"block {self.start}-{self.end}: extra passes must be at least 1, got {self.extra}")

    @property
    def width(self) -> int:
        return self.end - self.start + 1

    @property
    def added_layers(self) -> int:
        return self.width * self.extra

    def __str__(self) -> str:
        return f"{_range(self.start, self.end)}x{self.extra + 1}"


_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?(?:x(\d+))?$")


def _range(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


@dataclass(frozen=True)
class LayerSchedule:
    """The path of source layer indices a forward pass runs, e.g. (0, 1, 2, 1, 2, 3)."""

    path: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.path:
            raise ScheduleError("schedule is empty: name at least one layer")
        for layer in self.path:
            if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
                raise ScheduleError(f"layer {layer!r} is not a non-negative integer")

    # ---- ways in -------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, n_layers: int | None = None) -> "LayerSchedule":
        """Read 'A-B,C-DxN,E' (inclusive ranges, xN = run N times in a row).

        With n_layers, every layer is checked to exist in a model of that depth.
        """
        if not isinstance(text, str):
            raise ScheduleError(f"schedule must be a string, got {type(text).__name__}")
        stripped = text.strip()
        if not stripped:
            raise ScheduleError("schedule is empty: name at least one layer, e.g. 0-9,10-12x2,13-29")
        path: list[int] = []
        for raw in stripped.split(","):
            token = raw.strip()
            if not token:
                raise ScheduleError(f"empty item in schedule {text!r} (two commas in a row, or a trailing comma?)")
            match = _TOKEN.match(token)
            if match is None:
                raise ScheduleError(
                    f"cannot read {token!r} in schedule {text!r}: expected A, A-B or A-BxN with whole numbers"
                )
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) is not None else start
            count = int(match.group(3)) if match.group(3) is not None else 1
            if end < start:
                raise ScheduleError(f"range {start}-{end} in schedule {text!r} is reversed; write {end}-{start}")
            if count < 1:
                raise ScheduleError(f"{token!r} in schedule {text!r}: a range must run at least once (x1 or more)")
            path.extend(list(range(start, end + 1)) * count)
        schedule = cls(tuple(path))
        if n_layers is not None:
            schedule.check(n_layers)
        return schedule

    @classmethod
    def identity(cls, n_layers: int) -> "LayerSchedule":
        if n_layers < 1:
            raise ScheduleError(f"a model needs at least one layer, got {n_layers}")
        return cls(tuple(range(n_layers)))

    @classmethod
    def from_blocks(cls, n_layers: int, blocks: Iterable[Block | tuple[int, int, int]]) -> "LayerSchedule":
        """The identity path with each block (start, end inclusive, extra passes) repeated."""
        parsed = sorted(b if isinstance(b, Block) else Block(*b) for b in blocks)
        for block in parsed:
            if block.end >= n_layers:
                raise ScheduleError(
                    f"block {_range(block.start, block.end)} is out of range for a model with "
                    f"{n_layers} layers (0-{n_layers - 1})"
                )
        for left, right in zip(parsed, parsed[1:]):
            if right.start <= left.end:
                raise ScheduleError(
                    f"blocks {_range(left.start, left.end)} and {_range(right.start, right.end)} overlap"
                )
        path = list(range(n_layers))
        for block in reversed(parsed):  # right to left, so earlier indices stay valid
            at = block.end + 1
            path[at:at] = list(range(block.start, block.end + 1)) * block.extra
        return cls(tuple(path))

    @classmethod
    def rys(cls, n_layers: int, i: int, j: int) -> "LayerSchedule":
        """The RYS literature's pair (i, j): layers i..j-1 run twice."""
        if not 0 <= i < j <= n_layers:
            raise ScheduleError(
                f"RYS pair ({i}, {j}) needs 0 <= i < j <= {n_layers} for a model with {n_layers} layers"
            )
        return cls.from_blocks(n_layers, [Block(i, j - 1, 1)])

    # ---- checks and views ----------------------------------------------------------

    def check(self, n_layers: int) -> "LayerSchedule":
        """Raise ScheduleError unless every layer exists in a model with n_layers layers."""
        bad = max(self.path)
        if bad >= n_layers:
            raise ScheduleError(
                f"layer {bad} in schedule {self} is out of range for a model with {n_layers} layers (0-{n_layers - 1})"
            )
        return self

    def expand(self) -> tuple[int, ...]:
        """The source layer index of each virtual layer, in execution order."""
        return self.path

    def __len__(self) -> int:
        return len(self.path)

    def is_identity(self, n_layers: int) -> bool:
        return self.path == tuple(range(n_layers))

    def blocks(self, n_layers: int) -> tuple[Block, ...] | None:
        """The structured blocks this path repeats, or None if it is not identity-plus-repeats."""
        pieces = _pieces(self.path)
        blocks: list[Block] = []
        next_layer = 0
        for (a, b), count in pieces:
            if a != next_layer:
                return None
            if count > 1:
                blocks.append(Block(a, b, count - 1))
            next_layer = b + 1
        if next_layer != n_layers:
            return None
        return tuple(blocks)

    def repeats(self) -> list[tuple[int, int, int]]:
        """Each run of a range repeated in a row: (first virtual position, width, passes).

        For 0-9,10-12x2,13-29 that is [(10, 3, 2)]: layers 10-12 start at position 10 and run twice.
        """
        found, pos = [], 0
        for (a, b), count in _pieces(self.path):
            width = b - a + 1
            if count > 1:
                found.append((pos, width, count))
            pos += width * count
        return found

    def added_layers(self, n_layers: int) -> int:
        return len(self.path) - n_layers

    # ---- canonical form ------------------------------------------------------------

    def __str__(self) -> str:
        return ",".join(_range(a, b) + (f"x{count}" if count > 1 else "") for (a, b), count in _pieces(self.path))

    def __repr__(self) -> str:
        return f"LayerSchedule('{self}')"


def _pieces(path: Sequence[int]) -> list[tuple[tuple[int, int], int]]:
    """Split a path into inclusive ranges, merging identical neighbours into (range, count).

    The path is cut wherever it does not step by +1. A backward step from e to s marks a
    repeat of s..e, so the run before it is also cut just before s and the run after it
    just after e; that is what turns 0..12,10..29 into 0-9, 10-12 x2, 13-29.
    """
    n = len(path)
    cuts = {0, n}
    runs: list[tuple[int, int]] = []  # [start position, end position) of maximal +1 runs
    start = 0
    for k in range(1, n + 1):
        if k == n or path[k] != path[k - 1] + 1:
            runs.append((start, k))
            cuts.add(k)
            start = k
    run_of = {}
    for r, (lo, hi) in enumerate(runs):
        for k in range(lo, hi):
            run_of[k] = r
    for k in range(n - 1):
        e, s = path[k], path[k + 1]
        if s <= e and s != e + 1:
            lo, hi = runs[run_of[k]]
            if path[lo] < s:  # cut the run before the jump just before layer s
                cuts.add(lo + (s - path[lo]))
            lo, hi = runs[run_of[k + 1]]
            if path[hi - 1] > e:  # cut the run after the jump just after layer e
                cuts.add(lo + (e - path[lo]) + 1)
    ordered = sorted(cuts)
    ranges = [(path[a], path[b - 1]) for a, b in zip(ordered, ordered[1:])]
    merged: list[tuple[tuple[int, int], int]] = []
    for rng in ranges:
        if merged and merged[-1][0] == rng:
            merged[-1] = (rng, merged[-1][1] + 1)
        else:
            merged.append((rng, 1))
    return merged
