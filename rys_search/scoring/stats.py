"""Bootstrap intervals: every score carries one, every change against the baseline a paired one.

    >>> lo, hi = bootstrap_interval([0.2, 0.5, 0.9, 0.4])
    >>> delta, lo, hi = paired_interval(schedule_scores, baseline_scores)

Percentile bootstrap over items with a fixed seed, so the same scores always give the same
interval. The noise floor printed beside a score is the interval's half-width.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = ["bootstrap_interval", "family_level", "paired_interval", "half_width", "ranks", "spearman", "spearman_difference",
           "spearman_interval"]

N_BOOT = 2000
LEVEL = 0.95


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _resampled_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    n = values.shape[0]
    if n_boot * n <= _KEPT_DRAW:  # the same draw for every call with this (n, n_boot, seed): counted once
        return _resample_counts(n, n_boot, seed) @ values / n
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, _ONE_DRAW // max(n, 1))  # bound memory for large item sets
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        means[start : start + idx.shape[0]] = values[idx].mean(axis=1)
    return means


_ONE_DRAW = 2_000_000  # indices drawn at once (16 MB)
_KEPT_DRAW = 2**19  # items of a draw that is kept: 4 MB, up to 262 items (the default probes score 200 and 20)


@lru_cache(maxsize=8)  # at most 32 MB
def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each item is drawn in each resample of the seed's generator (n_boot x n, read-only):
    a resample's mean is its row's product with the values over n, all of them one matrix-vector
    product. A study scores the same item sets under every schedule, and drawing them was the largest
    part of the probes' own host time: SmolLM2's default objectives with the engine's results given
    (no forward), evaluate_probes took 24.1 ms a schedule on a 2-core CPU, 17.0 ms with the draws
    kept; the product takes 0.10 ms where gathering the 2000 x 200 drawn values and averaging took
    0.53. The same draw as at every call, so the same intervals up to the order of a sum (1e-14)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    cells = (np.arange(n_boot)[:, None] * n + idx).ravel()
    counts = np.bincount(cells, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def bootstrap_interval(
    values: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    return _percentiles(_resampled_means(arr, n_boot, seed), level)


def paired_interval(
    values: Sequence[float], baseline: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """Mean change (values - baseline) over the same items, with its paired bootstrap interval."""
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same items: {a.shape} vs {b.shape}")
    diff = a - b
    lo, hi = bootstrap_interval(diff, n_boot=n_boot, level=level, seed=seed)
    return float(diff.mean()) if diff.size else float("nan"), lo, hi


def family_level(k: int, level: float = LEVEL) -> float:
    """The level of each of k intervals judged together so that all k hold jointly at `level`
    (Bonferroni): 0.99 each for five changes at 95%."""
    return 1.0 - (1.0 - level) / max(1, k)


def half_width(interval: tuple[float, float]) -> float:
    return (interval[1] - interval[0]) / 2.0


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of values, ties given the mean of the ranks they span."""
    arr = np.asarray(values, dtype=np.float64)
    order = np.argsort(arr, kind="mergesort")
    sorted_values = arr[order]
    out = np.empty(arr.size)
    start = 0
    while start < arr.size:
        stop = start + 1
        while stop < arr.size and sorted_values[stop] == sorted_values[start]:
            stop += 1
        out[order[start:stop]] = (start + stop + 1) / 2.0  # mean of ranks start+1 .. stop
        start = stop
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (nan when either side is constant)."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs: {len(x)} vs {len(y)} values")
    if len(x) < 2:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def spearman_difference(a: Sequence[float], b: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT,
                        level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """How much better a ranks like y than b does: spearman(a, y) - spearman(b, y), with a percentile
    bootstrap interval that resamples the triples together (a, b and y measured on the same units)."""
    aa, ab, ay = (np.asarray(v, dtype=np.float64) for v in (a, b, y))
    if not aa.size == ab.size == ay.size:
        raise ValueError(f"spearman_difference needs triples: {aa.size}, {ab.size}, {ay.size} values")
    lo, hi = _resampled(lambda i: spearman(aa[i], ay[i]) - spearman(ab[i], ay[i]), aa.size, n_boot, level, seed)
    return spearman(aa, ay) - spearman(ab, ay), lo, hi


def spearman_interval(x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's correlation, resampling the pairs."""
    ax, ay = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return _resampled(lambda i: spearman(ax[i], ay[i]), ax.size, n_boot, level, seed)


def _resampled(statistic, size: int, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(indices) over resamples of `size` units (nan below
    3 units, or when most resamples give no finite value: constant columns)."""
    if size < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        value = statistic(rng.integers(0, size, size=size))
        if math.isfinite(value):
            values.append(value)
    if len(values) < n_boot // 2:  # most resamples constant: no interval worth the name
        return float("nan"), float("nan")
    return _percentiles(np.asarray(values), level)
