"""The fixed-length encoding: every decoding is a valid schedule of the space, and every schedule has one."""

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rys_search.search.config import ConfigError, SearchSpace, load_config
from rys_search.search.encoding import decode, encode, fixed_ranges, suggest_fixed
from rys_search.search.space import suggest_schedule

SPACES = [
    (SearchSpace(max_blocks=3, width=(1, 8), extra_passes=(1, 3), max_added_layers=14, region=(2, -3)), 30, 1),
    (SearchSpace(max_blocks=2, width=(1, 8), extra_passes=(1, 2), max_added_layers=16, region=(1, -2)), 28, 1),
    (SearchSpace(max_blocks=3, width=(2, 9), extra_passes=(1, 2), max_added_layers=12, region=(0, -1)), 24, 2),
    (SearchSpace(max_blocks=2, width=(1, 12), extra_passes=(1, 1), max_added_layers=12, region=(0, -1)), 18, 6),
]


def assert_in_space(schedule, n_layers, space, period):
    blocks = schedule.blocks(n_layers)
    assert blocks is not None and 1 <= len(blocks) <= space.max_blocks
    first, last = space.resolved_region(n_layers)
    for before, after in zip(blocks, blocks[1:]):
        assert before.end < after.start  # never overlapping
    for b in blocks:
        assert first <= b.start and b.end <= last
        assert b.width % period == 0 and space.width[0] <= b.width <= space.width[1]
        assert space.extra_passes[0] <= b.extra <= space.extra_passes[1]
    assert schedule.added_layers(n_layers) <= space.max_added_layers


@st.composite
def slot_values(draw, case):
    space, n_layers, period = SPACES[case]
    return {name: draw(st.integers(low, high).map(lambda v, lo=low, s=step: lo + (v - lo) // s * s))
            for name, (low, high, step) in fixed_ranges(n_layers, space, period).items()}


@pytest.mark.parametrize("case", range(len(SPACES)))
def test_every_decoding_is_a_schedule_of_the_space(case):
    space, n_layers, period = SPACES[case]

    @settings(max_examples=300, deadline=None)
    @given(slot_values(case))
    def check(values):
        assert_in_space(decode(values, n_layers, space, period), n_layers, space, period)

    check()


@pytest.mark.parametrize("case", range(len(SPACES)))
def test_every_define_by_run_schedule_is_decoded_from_its_encoding(case):
    space, n_layers, period = SPACES[case]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=case))
    ranges = fixed_ranges(n_layers, space, period)
    seen = set()
    for _ in range(400):
        trial = study.ask()
        schedule = suggest_schedule(trial, n_layers, space, period)
        study.tell(trial, 0.0)
        values = encode(schedule, n_layers, space, period)
        assert all(ranges[k][0] <= v <= ranges[k][1] for k, v in values.items())  # inside the suggested ranges
        assert decode(values, n_layers, space, period) == schedule
        seen.add(str(schedule))
    assert len(seen) > 30  # many schedules, not a few


def test_the_decoding_rules():
    space = SearchSpace(max_blocks=2, width=(1, 8), extra_passes=(1, 2), max_added_layers=10, region=(1, -2))
    off = {"s1_on": 0, "s1_start": 5, "s1_width": 4, "s1_extra": 2}
    assert str(decode({"s0_on": 1, "s0_start": 4, "s0_width": 3, "s0_extra": 1, **off}, 28, space)) == "0-3,4-6x2,7-27"
    # no slot on: slot 0 is used (a trial never proposes the unmodified model)
    assert str(decode({"s0_on": 0, "s0_start": 4, "s0_width": 3, "s0_extra": 1, **off}, 28, space)) == "0-3,4-6x2,7-27"
    # ordered by start; an overlapping block starts after the one before it, keeping its end
    both = {"s0_on": 1, "s0_start": 8, "s0_width": 4, "s0_extra": 1, "s1_on": 1, "s1_start": 6, "s1_width": 4, "s1_extra": 1}
    assert str(decode(both, 28, space)) == "0-5,6-9x2,10-11x2,12-27"
    # the budget: passes first, then width
    big = {"s0_on": 1, "s0_start": 2, "s0_width": 8, "s0_extra": 2, "s1_on": 1, "s1_start": 12, "s1_width": 6, "s1_extra": 1}
    assert str(decode(big, 28, space)) == "0-1,2-9x2,10-11,12-13x2,14-27"
    # cut at the region's end (layer 26)
    end = {"s0_on": 1, "s0_start": 24, "s0_width": 8, "s0_extra": 1, **off}
    assert str(decode(end, 28, space)) == "0-23,24-26x2,27"


def test_every_fixed_trial_has_the_same_parameters():
    space = SearchSpace(max_blocks=3)
    study = optuna.create_study(sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=8))
    names = set()
    for _ in range(30):
        trial = study.ask()
        assert_in_space(suggest_fixed(trial, 20, space), 20, space, 1)
        names.add(frozenset(trial.params))
        study.tell(trial, 0.0)
    assert names == {frozenset(fixed_ranges(20, space))}


def test_the_encoding_by_sampler_and_bad_values(tmp_path):
    for sampler, encoding in [("tpe", "define-by-run"), ("random", "define-by-run"), ("nsga2", "fixed"),
                              ("nsga3", "fixed"), ("gp", "fixed")]:
        config = load_config(overrides={"sampler": sampler})
        assert config.space.encoding == "auto" and config.encoding() == encoding
        assert config.resolve(cuda=False).space.encoding == encoding  # what the study stores
    pinned = load_config(overrides={"sampler": "nsga2", "space": SearchSpace(encoding="define-by-run")})
    assert pinned.resolve(cuda=False).space.encoding == "define-by-run"
    bad = tmp_path / "bad.toml"
    bad.write_text('[space]\nencoding = "dense"\n')
    with pytest.raises(ConfigError, match="space.encoding must be define-by-run, fixed or auto"):
        load_config(bad)
    bad.write_text('sampler = "grid"\n[space]\nmax_blocks = 1\nextra_passes = [1, 1]\nencoding = "fixed"\n')
    with pytest.raises(ConfigError, match="grid sampler sweeps its own"):
        load_config(bad)


def test_a_study_keeps_its_encoding(workdir):
    from rys_search.search.storage import open_study, stored_config

    tpe = load_config(overrides={"name": "kept", "sampler": "tpe"}).resolve(cuda=False)
    open_study(tpe)
    assert stored_config(open_study(tpe, create=False)).space.encoding == "define-by-run"
    with pytest.raises(ConfigError, match="its space.encoding is 'define-by-run', this run's 'fixed'"):
        open_study(load_config(overrides={"name": "kept", "sampler": "nsga2"}).resolve(cuda=False))
    from dataclasses import replace

    pinned = load_config(overrides={"name": "kept", "sampler": "nsga2", "space": replace(tpe.space, encoding="define-by-run")})
    assert open_study(pinned.resolve(cuda=False)).study_name == "kept"  # the same space: it may go on with NSGA-II


def _fixed_proposals(sampler_name: str, hide: bool) -> list[str]:
    """70 trials of the study's space in the fixed encoding after the enqueued unmodified trial, on a stub landscape."""
    from rys_search.search.samplers import build_sampler
    from rys_search.search.space import UNMODIFIED

    space = load_config().space
    sampler = build_sampler(sampler_name, seed=0, hide=UNMODIFIED if hide else None)
    study = optuna.create_study(directions=["maximize"] * 3, sampler=sampler)
    study.enqueue_trial({}, user_attrs={UNMODIFIED: True})
    proposals = []
    for n in range(70):
        trial = study.ask()
        key = str(suggest_fixed(trial, 28, space))
        proposals.append(key)
        study.tell(trial, [float(sum(map(ord, key)) % 13), float(len(key)), float(n % 7)])
    return proposals


@pytest.mark.parametrize("name", ["nsga2", "nsga3"])
def test_nsga_samplers_learn_in_the_fixed_encoding_beside_the_unmodified_trial(name):
    """The unmodified trial has no parameters; seen by the sampler it emptied the intersection of the
    trials' parameters, and NSGA-II and -III then proposed what random sampling with their seed does."""
    random = _fixed_proposals("random", hide=False)
    assert _fixed_proposals(name, hide=True) != random  # without the view: equal
