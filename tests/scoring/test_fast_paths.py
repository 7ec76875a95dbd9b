"""Prefix reuse: scores under a schedule equal a physical duplicate's once the unmodified
model's hidden states are recorded, and later schedules really start past the prefix."""

import numpy as np
import pytest

from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring.engine import Request, token_logprobs
from rys_search.scoring.fixed_point import FixedPointObjective
from tiny import one_by_one as expected, physically_duplicated, save_tiny

# deviations 4, 3 and 1 (the first repeated layer runs again at position 4, 3, 1); the last
# also runs a layer twice in a row at the very end
SCHEDULES = [LayerSchedule.parse(s) for s in ("0-1,2-3x3,4,5x2", "0-4,2-5", "0,0-5,5")]


@pytest.fixture
def loaded(tmp_path, family):
    save_tiny(tmp_path, family)
    return load_model(str(tmp_path), device="cpu")


def requests(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):  # prompts shared by several continuations (the KV-cache path)
        prompt = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(4, 14)))]
        for _ in range(3):
            tail = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(1, 4)))]
            targets = [(len(prompt), [5, 6])] + [(len(prompt) + j, [tail[j]]) for j in range(1, len(tail))]
            out.append(Request(prompt + tail, targets, prefix=len(prompt)))
    for _ in range(5):  # whole sequences
        ids = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(3, 12)))]
        out.append(Request(ids, [(len(ids) - 1, [ids[-1], 9]), (len(ids), [4])]))
    return out


def starts_of(runtime, monkeypatch):
    seen = []
    original = type(runtime)._layers_from

    def spy(self, start):
        seen.append(start)
        return original(self, start)

    monkeypatch.setattr(type(runtime), "_layers_from", spy)
    return seen


def test_logprobs_with_reuse_match_a_duplicate(loaded, monkeypatch):
    reqs = requests()
    runtime = loaded.runtime
    starts = starts_of(runtime, monkeypatch)
    token_logprobs(loaded, reqs, token_budget=64)  # the unmodified model records its states
    assert runtime.prefix_cache.entries and set(starts) == {0}
    for schedule in SCHEDULES:
        runtime.set_schedule(schedule)
        starts.clear()
        got, _ = token_logprobs(loaded, reqs, token_budget=64)
        runtime.reset()
        assert set(starts) == {min(schedule_deviation(schedule), 5)}  # every call skipped the prefix
        want = expected(physically_duplicated(loaded.model, schedule.expand()), reqs)
        for a, b in zip(got, want):
            for (lp_a, top_a), (lp_b, top_b) in zip(a, b):
                assert np.allclose(lp_a, lp_b, atol=1e-5) and top_a == top_b


def schedule_deviation(schedule):
    return next(pos for pos, src in enumerate(schedule.expand()) if pos != src)


def test_reuse_off_and_cold_cache_give_the_same_scores(loaded, monkeypatch):
    reqs = requests(1)
    runtime = loaded.runtime
    runtime.set_schedule(SCHEDULES[1])
    cold, _ = token_logprobs(loaded, reqs, token_budget=64)  # records the prefix on the way
    warm, _ = token_logprobs(loaded, reqs, token_budget=64)
    cache, runtime.prefix_cache = runtime.prefix_cache, None
    off, _ = token_logprobs(loaded, reqs, token_budget=64)
    runtime.prefix_cache = cache
    for a, b, c in zip(cold, warm, off):
        for (x, _), (y, _), (z, _) in zip(a, b, c):
            assert np.allclose(x, z, atol=1e-5) and np.allclose(y, z, atol=1e-5)


def test_a_full_budget_records_nothing_more(loaded):
    runtime = loaded.runtime
    runtime.prefix_cache.budget = 0
    token_logprobs(loaded, requests(), token_budget=64)
    assert runtime.prefix_cache.entries == {} and runtime.prefix_cache.used == 0


def test_fixed_point_with_reuse_equals_without(loaded, monkeypatch):
    objective = FixedPointObjective()
    runtime = loaded.runtime
    cache, runtime.prefix_cache = runtime.prefix_cache, None
    reference = [objective.evaluate(loaded, s, limit=3) for s in SCHEDULES]
    runtime.prefix_cache = cache
    starts = starts_of(runtime, monkeypatch)
    objective.evaluate(loaded, SCHEDULES[0], limit=3)  # records the prefix, keeps the unmodified log-probs
    assert len(starts) == 2 and len(runtime.prefix_cache.results) == 1
    for spent in (False, True):
        if spent:  # no room left to keep them: every schedule runs the unmodified pass again
            runtime.prefix_cache.results.clear()
            runtime.prefix_cache.budget = runtime.prefix_cache.used
        for schedule, ref in zip(SCHEDULES, reference):
            starts.clear()
            got = objective.evaluate(loaded, schedule, limit=3)
            first_block = schedule.repeats()[0][0]
            # the scheduled pass starts at its first repeated block; the unmodified one runs only the
            # last layer, and only where its log-probs were not kept
            assert starts == ([first_block, runtime.n_layers - 1] if spent else [first_block])
            assert got.score == pytest.approx(ref.score, rel=1e-5, abs=1e-7)
            for a, b in zip(got.items, ref.items):
                assert a["kl"] == pytest.approx(b["kl"], rel=1e-4, abs=1e-7)
                for x, y in zip(a["blocks"], b["blocks"]):
                    assert x["contraction"] == pytest.approx(y["contraction"], rel=1e-4)
                    assert x["seam"] == pytest.approx(y["seam"], rel=1e-4)
    assert not runtime.prefix_cache.results


def test_probes_scored_together_equal_one_by_one(loaded, monkeypatch):
    from rys_search.scoring import evaluate_probes, get_objective

    objectives = [get_objective(name) for name in ("math", "eq", "reasoning")]
    schedule = SCHEDULES[0]
    alone = [o.evaluate(loaded, schedule, limit=4) for o in objectives]
    together = evaluate_probes(objectives, loaded, schedule, limit=4)
    assert loaded.runtime.schedule.is_identity(6)
    for a, b in zip(alone, together):
        assert (a.objective, a.schedule, a.split, len(a.items)) == (b.objective, b.schedule, b.split, len(b.items))
        for x, y in zip(a.items, b.items):
            assert x["id"] == y["id"] and x["score"] == pytest.approx(y["score"], rel=1e-4, abs=1e-6)
    # the same tokens run either way once no call shares its start (one probe's calls share its
    # instruction, the three probes' call only the chat template's start)
    monkeypatch.setenv("RYS_SEARCH_SHARED_START", "0")
    alone = [o.evaluate(loaded, schedule, limit=4) for o in objectives]
    together = evaluate_probes(objectives, loaded, schedule, limit=4)
    assert sum(r.tokens for r in together) == pytest.approx(sum(r.tokens for r in alone), abs=3)


def test_cheapest_batches_cover_every_index_within_the_budget_at_least_cost():
    import itertools

    from rys_search.scoring.engine import batches_by_length

    rng = np.random.default_rng(3)
    for _ in range(30):
        lengths = [int(x) for x in rng.integers(1, 40, size=int(rng.integers(1, 8)))]
        budget, cost = int(rng.integers(40, 120)), int(rng.integers(1, 60))
        batches = batches_by_length(lengths, budget, cost)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert lengths[batches[0][0]] == max(lengths)  # the longest batch first
        for b in batches:
            assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget

        def total(bs):
            return sum(max(lengths[i] for i in b) * len(b) + cost for b in bs)

        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = None  # brute force over every way to cut the sorted order into contiguous batches
        for cuts in itertools.product([0, 1], repeat=len(order) - 1):
            bs, cur = [], [order[0]]
            for c, i in zip(cuts, order[1:]):
                if c:
                    bs.append(cur)
                    cur = []
                cur.append(i)
            bs.append(cur)
            if all(len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget for b in bs):
                best = total(bs) if best is None else min(best, total(bs))
        assert total(batches) == best


@pytest.mark.parametrize("family", ["llama"])
def test_a_call_with_the_same_requests_reuses_its_plan_and_scores_as_fresh(loaded):
    """What depends only on the requests is planned once per request list (the objects themselves):
    a second call under another schedule reuses it and scores as a plan built afresh would."""
    from rys_search.scoring import engine

    reqs = requests(3)
    token_logprobs(loaded, reqs, token_budget=64)
    plan = engine._Plan.of(loaded, reqs, 64)
    assert engine._Plan.of(loaded, list(reqs), 64) is plan  # another list of the same objects
    copies = [Request(list(r.ids), list(r.targets), r.prefix) for r in reqs]
    assert engine._Plan.of(loaded, copies, 64) is not plan  # equal requests, other objects: planned anew
    assert engine._Plan.of(loaded, reqs, 32) is not plan  # another budget
    with loaded.runtime.using(SCHEDULES[0]):
        reused, tokens = token_logprobs(loaded, reqs, token_budget=64)
        engine._PLANS.clear()
        fresh, fresh_tokens = token_logprobs(loaded, reqs, token_budget=64)
    assert tokens == fresh_tokens
    for a, b in zip(reused, fresh, strict=True):
        for (lp_a, top_a), (lp_b, top_b) in zip(a, b, strict=True):
            assert np.array_equal(lp_a, lp_b) and top_a == top_b
    for k in range(engine._Plan.KEEP + 2):  # only the newest plans are kept
        engine._Plan.of(loaded, requests(10 + k), 64)
    assert len(engine._PLANS[loaded.model]) == engine._Plan.KEEP


def test_kept_plans_do_not_keep_their_model_alive(tmp_path):
    import gc
    import weakref

    save_tiny(tmp_path, "llama")
    loaded = load_model(str(tmp_path), device="cpu")
    reqs = [Request([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20 + k], [(13, [5])]) for k in range(3)]  # a shared start
    token_logprobs(loaded, reqs, token_budget=64)
    model = weakref.ref(loaded.model)
    del loaded
    gc.collect()
    assert model() is None
