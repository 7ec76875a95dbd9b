"""Packed rows: a prompt and the options after it run as one row under a 4D mask; scores equal a
physical duplicate's whole sequences, one at a time, for every family, under SDPA and eager
attention; a window some request reaches past runs them whole."""

import numpy as np
import pytest
import torch

from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring import engine
from rys_search.scoring.engine import Request, token_logprobs
from tiny import one_by_one as expected, physically_duplicated, save_tiny

SCHEDULE = LayerSchedule.parse("0-1,2-3x3,4,5x2")


def requests(seed=0, prompts=(4, 14), tails=(1, 4), options=3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):  # prompts followed by several options
        prompt = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(*prompts)))]
        for _ in range(options):
            tail = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(*tails)))]
            targets = [(len(prompt), [5, 6])] + [(len(prompt) + j, [tail[j], 7]) for j in range(1, len(tail))]
            out.append(Request(prompt + tail, targets, prefix=len(prompt)))
    out.append(Request([9, 8, 7, 6, 5], [(3, [4]), (5, [3])]))  # one whole sequence among them
    return out


def assert_close(got, want):
    for a, b in zip(got, want, strict=True):
        for (lp_a, top_a), (lp_b, top_b) in zip(a, b, strict=True):
            assert np.allclose(lp_a, lp_b, atol=1e-5) and top_a == top_b


def forward_calls(runtime, monkeypatch):
    calls = []
    original = type(runtime).forward

    def spy(self, key=None, **kwargs):
        calls.append(kwargs.get("attention_mask"))
        return original(self, key, **kwargs)

    monkeypatch.setattr(type(runtime), "forward", spy)
    return calls


@pytest.mark.parametrize("attention", ["as loaded", "eager"])  # SDPA, or eager where the family needs it
def test_options_packed_after_their_prompt_score_as_whole_sequences(tmp_path, family, attention, monkeypatch):
    save_tiny(tmp_path, family, sliding_window=256)  # a window longer than every request
    loaded = load_model(str(tmp_path), device="cpu")
    if attention == "eager":
        loaded.runtime.config._attn_implementation = attention
    attention = loaded.runtime.config._attn_implementation
    reqs = requests()
    calls = forward_calls(loaded.runtime, monkeypatch)
    got, tokens = token_logprobs(loaded, reqs, token_budget=64)
    plan = engine._Plan.of(loaded, reqs, 64)
    assert plan.start is None and sum(step.branches is not None for step in plan.steps) >= 1
    assert len(calls) == len(plan.steps)  # one call a batch: nothing continues from a KV cache
    masks = [m for m in calls if m is not None and m.dim() == 4]
    assert masks and all(m.dtype == (torch.bool if attention == "sdpa" else loaded.model.dtype) for m in masks)
    # each prompt ran once, then each option's tokens up to its last target's
    assert tokens == sum(reqs[3 * k].prefix for k in range(4)) + sum(max(p for p, _ in r.targets) - r.prefix
                                                                     for r in reqs[:-1]) + 5
    assert_close(got, expected(loaded.model, reqs))
    with loaded.runtime.using(SCHEDULE):
        got, _ = token_logprobs(loaded, reqs, token_budget=64)
    assert_close(got, expected(physically_duplicated(loaded.model, SCHEDULE.expand()), reqs))


def test_long_options_split_into_rows_of_the_same_prompt(tmp_path, monkeypatch):
    save_tiny(tmp_path, "llama")
    loaded = load_model(str(tmp_path), device="cpu")
    reqs = requests(1, prompts=(3, 5), tails=(4, 8), options=4)
    monkeypatch.setattr(engine, "PACKED_MIN", 8)  # at most max(prompt, 8) tokens of options a row
    rows = engine._packed_rows(reqs, tuple(reqs[0].ids[: reqs[0].prefix]), [0, 1, 2, 3], 0)
    assert len(rows) >= 2 and all(row.ids[: reqs[0].prefix] == reqs[0].ids[: reqs[0].prefix] for row in rows)
    assert sorted(request for row in rows for _, _, request, _ in row.picks) == sorted(
        i for i in range(4) for _ in reqs[i].targets)  # every member's every target, once
    assert all(len(row.ids) - reqs[0].prefix <= 8 or max(row.branches) == 1 for row in rows)
    with loaded.runtime.using(SCHEDULE):
        got, _ = token_logprobs(loaded, reqs, token_budget=64)
    assert_close(got, expected(physically_duplicated(loaded.model, SCHEDULE.expand()), reqs))


def test_a_window_a_request_reaches_past_runs_every_request_whole(tmp_path, monkeypatch):
    save_tiny(tmp_path, "mistral", sliding_window=8)  # shorter than most requests: the window hides tokens
    loaded = load_model(str(tmp_path), device="cpu")
    reqs = requests(2, prompts=(6, 12))
    assert engine._packed_mask_dtype(loaded, reqs) is None
    calls = forward_calls(loaded.runtime, monkeypatch)
    with loaded.runtime.using(SCHEDULE):
        got, _ = token_logprobs(loaded, reqs, token_budget=64)
    plan = engine._Plan.of(loaded, reqs, 64)
    assert all(step.branches is None for step in plan.steps) and all(m.dim() == 2 for m in calls)
    assert sum(step.rows for step in plan.steps) == len(reqs)  # every request a row of its own
    assert_close(got, expected(physically_duplicated(loaded.model, SCHEDULE.expand()), reqs))


def test_the_tree_mask_shows_each_token_the_prompt_and_its_own_branch():
    branches = torch.tensor([[-1, 0, 0, 1, 1, 2]])  # padding, a prompt of 2, a branch of 2, a branch of 1
    seen = [[1, 0, 0, 0, 0, 0],  # padding sees only itself
            [0, 1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 0, 0, 1]]  # the second branch does not see the first
    want = torch.tensor([[1, 1] + row for row in seen], dtype=torch.bool)[None, None]  # 2 tokens of a shared start
    assert torch.equal(engine._tree_mask(branches, 2, torch.bool), want)
    additive = engine._tree_mask(branches, 2, torch.float16)
    assert additive.dtype == torch.float16 and torch.equal(additive == 0, want)
    assert torch.all(additive[~want] == torch.finfo(torch.float16).min)
    assert torch.equal(engine._tree_mask(branches, 0, torch.bool), want[..., 2:])
