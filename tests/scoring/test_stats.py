import numpy as np
import pytest

from rys_search.scoring.stats import bootstrap_interval, half_width, paired_interval


def test_interval_covers_the_mean_of_a_known_distribution():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for t in range(trials):
        sample = rng.normal(5.0, 2.0, size=100)
        lo, hi = bootstrap_interval(sample, n_boot=1000, seed=t)
        covered += lo <= 5.0 <= hi
    assert 0.88 <= covered / trials <= 0.99  # a 95% interval: about 190 of 200


def test_interval_width_shrinks_with_more_items_and_is_deterministic():
    rng = np.random.default_rng(2)
    small, large = rng.uniform(size=25), rng.uniform(size=400)
    assert half_width(bootstrap_interval(large)) < half_width(bootstrap_interval(small))
    assert bootstrap_interval(small) == bootstrap_interval(small)


def test_paired_interval_sees_a_small_consistent_gain_that_unpaired_noise_hides():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 100, size=200)
    better = base + 1.0 + rng.normal(0, 0.5, size=200)
    delta, lo, hi = paired_interval(better, base)
    assert abs(delta - 1.0) < 0.2 and lo > 0
    assert half_width(bootstrap_interval(base)) > 2  # the unpaired interval is far wider than the gain
    same, lo, hi = paired_interval(base, base)
    assert same == lo == hi == 0.0


def test_kept_resamples_give_the_intervals_a_fresh_draw_gives():
    from rys_search.scoring import stats

    rng = np.random.default_rng(3)
    for n in (2, 7, 50, 300):  # 300: past what is kept, drawn at every call
        values = rng.normal(size=n)
        fresh = np.random.default_rng(0).integers(0, n, size=(stats.N_BOOT, n))  # the draw made at every call
        expected = stats._percentiles(values[fresh].mean(axis=1), stats.LEVEL)
        kept = stats.bootstrap_interval(values)
        assert kept == expected if n == 300 else np.allclose(kept, expected, rtol=0, atol=1e-12)
        assert stats.bootstrap_interval(values) == kept  # kept: the same again
        assert n == 2 or not np.allclose(stats.bootstrap_interval(values, seed=1), expected)  # (two items: min to max)
    with pytest.raises(ValueError):  # nobody can change a kept draw
        stats._resample_counts(7, stats.N_BOOT, 0)[0, 0] = 1
