import optuna
import pytest

from rys_search.search.config import SearchSpace
from rys_search.search.space import UNMODIFIED, grid_pairs, suggest_grid, suggest_schedule


@pytest.mark.parametrize("period", [1, 2, 6])
def test_proposals_respect_region_budget_and_period(period):
    space = SearchSpace(max_blocks=3, width=(1, 8), extra_passes=(1, 3), max_added_layers=14, region=(2, -3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=period))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        schedule = suggest_schedule(trial, 30, space, period)
        study.tell(trial, 0.0)
        blocks = schedule.blocks(30)
        assert blocks is not None
        assert schedule.added_layers(30) <= 14
        for b in blocks:
            assert 2 <= b.start and b.end <= 27
            assert b.width % period == 0 and 1 <= b.extra <= 3
        seen.add(str(schedule))
    assert len(seen) > 50  # the space is explored, not collapsed


def test_the_enqueued_unmodified_trial_and_a_fixed_proposal():
    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={UNMODIFIED: True})
    trial = study.ask()
    assert suggest_schedule(trial, 30, SearchSpace()).is_identity(30) and trial.params == {}
    later = study.ask()
    assert later.user_attrs == {} and not suggest_schedule(later, 30, SearchSpace()).is_identity(30)
    fixed = optuna.trial.FixedTrial({"n_blocks": 1, "b0_start": 10, "b0_width": 3, "b0_extra": 1})
    assert str(suggest_schedule(fixed, 30, SearchSpace())) == "0-9,10-12x2,13-29"


def test_grid_is_the_contiguous_ij_sweep():
    space = SearchSpace(max_blocks=1, width=(1, 3), extra_passes=(1, 1), region=(0, -1))
    pairs = grid_pairs(6, space)
    assert pairs[0] == "none" and "0,1" in pairs and "3,6" in pairs and "4,7" not in pairs
    assert len(pairs) == 1 + 6 + 5 + 4
    trial = optuna.trial.FixedTrial({"rys": "2,5"})
    assert str(suggest_grid(trial, 6, pairs)) == "0-1,2-4x2,5"
