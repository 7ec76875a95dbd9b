"""The shared start (a chat template's system turn, run once per call): scores equal a physical
duplicate's whole sequences, with and without the prefix cache, for every family."""

import numpy as np
import pytest

from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring import engine
from rys_search.scoring.engine import Request, token_logprobs
from tiny import one_by_one as expected, physically_duplicated, save_tiny

SCHEDULES = [LayerSchedule.parse(s) for s in ("0-1,2-3x3,4,5x2", "0-4,2-5")]


@pytest.fixture
def loaded(tmp_path, family):
    save_tiny(tmp_path, family, sliding_window=256)  # windows longer than the sequences
    return load_model(str(tmp_path), device="cpu")


def requests(seed=0, start=12):
    rng = np.random.default_rng(seed)
    common = [int(x) for x in rng.integers(3, 98, size=start)]
    out = []
    for _ in range(3):  # prompts shared by several continuations
        prompt = common + [int(x) for x in rng.integers(3, 98, size=int(rng.integers(1, 9)))]
        for _ in range(3):
            tail = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(1, 4)))]
            targets = [(len(prompt), [5, 6])] + [(len(prompt) + j, [tail[j]]) for j in range(1, len(tail))]
            out.append(Request(prompt + tail, targets, prefix=len(prompt)))
    for _ in range(5):  # whole sequences of different lengths: padding between the start and the rest
        ids = common + [int(x) for x in rng.integers(3, 98, size=int(rng.integers(2, 12)))]
        out.append(Request(ids, [(len(ids) - 1, [ids[-1], 9]), (len(ids), [4])]))
    return out


def assert_close(got, want):
    for a, b in zip(got, want):
        for (lp_a, top_a), (lp_b, top_b) in zip(a, b):
            assert np.allclose(lp_a, lp_b, atol=1e-5) and top_a == top_b


def test_the_shared_start_scores_as_whole_sequences(loaded, monkeypatch):
    reqs = requests()
    runs = []
    original = engine._Start.cache
    monkeypatch.setattr(engine._Start, "cache", lambda self, start, rows: runs.append(start) or original(self, start, rows))
    got, tokens = token_logprobs(loaded, reqs, token_budget=64)  # the unmodified model records its states
    assert_close(got, expected(loaded.model, reqs))
    assert runs and set(runs) == {0}
    monkeypatch.setenv("RYS_SEARCH_SHARED_START", "0")
    _, whole = token_logprobs(loaded, reqs, token_budget=64)
    assert whole - tokens == 12 * (3 + 5 - 1)  # 12 shared tokens run once instead of in each of 8 rows
    monkeypatch.delenv("RYS_SEARCH_SHARED_START")
    for schedule in SCHEDULES:
        runs.clear()
        with loaded.runtime.using(schedule):
            got, _ = token_logprobs(loaded, reqs, token_budget=64)
        assert runs and min(runs) > 0  # the start and the rows skipped the unmodified prefix
        assert_close(got, expected(physically_duplicated(loaded.model, schedule.expand()), reqs))


def test_no_shared_start_when_short_or_a_window_could_see_padding(tmp_path):
    reqs = requests(1, start=12)
    save_tiny(tmp_path, "mistral", sliding_window=8)
    small = load_model(str(tmp_path), device="cpu")
    assert engine._Start.of(small, reqs, [r.prefix for r in reqs if r.prefix]) is None  # window 8 < sequences
    short = requests(2, start=engine.SHARED_START_MIN - 2)
    save_tiny(tmp_path / "wide", "llama")
    wide = load_model(str(tmp_path / "wide"), device="cpu")
    assert engine._Start.of(wide, short, [r.prefix for r in short if r.prefix]) is None
    found = engine._Start.of(wide, reqs, [r.prefix for r in reqs if r.prefix])
    assert found is not None and found.n == 12
