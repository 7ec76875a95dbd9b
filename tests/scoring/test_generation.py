"""Batched greedy generation against one prompt at a time on a physically duplicated model, and
the determinism of generate mode (same prompts, same texts, whatever ran before)."""

from collections import Counter

import numpy as np
import pytest
import torch

from rys_search.chat import chat_ids, greedy_answer
from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring.engine import Request, token_logprobs
from rys_search.scoring.generation import generate_ids, generation_plan, greedy_generate
from rys_search.scoring.probes import ProbeObjective
from rys_search.scoring.suites import Item
from tiny import physically_duplicated, save_tiny

# deviations 2, 4 and 1; the last runs layer 0 twice at the start and layer 5 twice at the end
SCHEDULES = [LayerSchedule.parse(s) for s in ("0-1,2-3x3,4,5x2", "0-4,2-5", "0,0-5,5")]
MAX_NEW = 19  # not a multiple of CHECK_EVERY: the last look comes after a short run of steps
BUDGET = 4 * (14 + MAX_NEW)  # at most 4 rows of the longest prompts per batch: several batches


@pytest.fixture
def loaded(tmp_path, family):
    save_tiny(tmp_path, family, sharpen=4.0)  # greedy choices rarely near ties: batched and single runs agree
    return load_model(str(tmp_path), device="cpu")


def prompts(seed=0, n=9):
    rng = np.random.default_rng(seed)  # 2-14 tokens: longer than the tiny models' sliding window (5)
    return [[int(x) for x in rng.integers(3, 98, size=int(rng.integers(2, 15)))] for _ in range(n)]


def one_at_a_time(model, tokenizer, prompt, max_new, end, stop=None):
    """transformers' generate on one unpadded prompt, then cut where the stop predicate first holds."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                             eos_token_id=end, pad_token_id=0)
    new = out[0, len(prompt):].tolist()
    if stop is not None:
        for p in range(1, len(new) + 1):
            if stop(tokenizer.decode(new[:p], skip_special_tokens=True)):
                return new[:p]
    return new


def common_token(loaded, ps):
    """A token the unmodified model generates often: made the end token, so that rows end early."""
    counts = Counter(t for ids in generate_ids(loaded, ps, MAX_NEW, token_budget=BUDGET) for t in ids[1:])
    return counts.most_common(1)[0][0]


def starts_of(runtime, monkeypatch):
    seen = []
    original = type(runtime)._layers_from

    def spy(self, start):
        seen.append(start)
        return original(self, start)

    monkeypatch.setattr(type(runtime), "_layers_from", spy)
    return seen


def test_batched_generation_equals_a_duplicate_one_prompt_at_a_time(loaded, monkeypatch):
    ps = prompts()
    assert len(generation_plan([len(p) for p in ps], MAX_NEW, BUDGET)) >= 3
    end = common_token(loaded, ps)  # the unmodified model's run also records the prefix states
    loaded.model.generation_config.eos_token_id = end
    tok = loaded.tokenizer
    stops = [None if k % 3 == 0 else (lambda text, n=3 + 2 * k: len(text) >= n) for k in range(len(ps))]
    runtime = loaded.runtime
    starts = starts_of(runtime, monkeypatch)
    ended = Counter()
    for schedule in SCHEDULES:
        runtime.set_schedule(schedule)
        starts.clear()
        got = generate_ids(loaded, ps, MAX_NEW, token_budget=BUDGET, stop=stops)
        deviation = next(pos for pos, src in enumerate(schedule.expand()) if pos != src)
        assert set(starts) == {deviation}  # every prefill began past the unmodified prefix
        runtime.reset()
        duplicate = physically_duplicated(loaded.model, schedule.expand())
        for prompt, stop, ids in zip(ps, stops, got):
            assert ids == one_at_a_time(duplicate, tok, prompt, MAX_NEW, end, stop)
            ended["end token" if ids[-1] == end else "stop" if len(ids) < MAX_NEW else "length"] += 1
    assert min(ended.values()) >= 1 and len(ended) == 3  # every way a row ends was exercised


@pytest.mark.parametrize("family", ["gpt_oss"])
def test_decode_steps_keep_gpt_oss_attention_sinks(loaded):
    """gpt-oss adds a learned sink logit per head to every softmax; with a window of 5 keys it shows in
    the greedy tokens (it did not in the decode steps before, while the prefill, transformers' own, had it)."""
    from rys_search.scoring.generation import end_tokens

    ps = prompts()
    schedule = LayerSchedule.parse("0-1,2-3x3,4-5")  # blocks of 2: gpt-oss's attention pattern
    loaded.runtime.set_schedule(schedule)
    got = generate_ids(loaded, ps, MAX_NEW, token_budget=BUDGET)
    loaded.runtime.reset()
    duplicate = physically_duplicated(loaded.model, schedule.expand())
    end = sorted(end_tokens(loaded))
    assert got == [one_at_a_time(duplicate, loaded.tokenizer, p, MAX_NEW, end) for p in ps]


@pytest.mark.parametrize("family", ["qwen2"])
def test_texts_and_token_count(loaded):
    ps = [chat_ids(loaded.tokenizer, p) for p in ("hi", "What is 2+2?", "Name a colour, please.")]
    loaded.runtime.set_schedule(SCHEDULES[0])
    texts, tokens = greedy_generate(loaded, ps, 6, token_budget=32)
    ids = generate_ids(loaded, ps, 6, token_budget=32)
    assert texts == [loaded.tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    assert tokens == sum(map(len, ps)) + sum(map(len, ids))
    assert greedy_answer(loaded, "What is 2+2?", max_new_tokens=6) == texts[1]


def test_plan_depends_on_the_prompts_alone():
    lengths = [len(p) for p in prompts(3, 40)]
    plan = generation_plan(lengths, 8, 64)
    assert plan == generation_plan(list(lengths), 8, 64)
    assert sorted(i for batch in plan for i in batch) == list(range(40))
    for batch in plan:  # longest first, each batch within the budget (a lone long prompt may exceed it)
        width = max(lengths[i] for i in batch) + 8
        assert width * len(batch) <= 64 or len(batch) == 1
    order = [lengths[i] for batch in plan for i in batch]
    assert order == sorted(order, reverse=True)


@pytest.mark.parametrize("family", ["llama"])
def test_default_budget_comes_from_the_model_shape_alone(loaded, monkeypatch):
    from rys_search.scoring.engine import default_token_budget
    from rys_search.scoring.generation import KV_CACHE_BYTES, generation_budget

    assert generation_budget(loaded) == default_token_budget(loaded.device)  # the CPU: the engine's budget
    monkeypatch.setattr(loaded, "device", torch.device("cuda"))  # only its type is read
    per_token = 6 * 2 * 2 * 16 * 4  # layers x (keys, values) x key/value heads x head size x fp32 bytes
    assert KV_CACHE_BYTES // per_token > 8 * 65536
    want = 8 * 65536  # a tiny model's cache per token: the cap, 8 times the engine's GPU budget
    assert generation_budget(loaded) == want
    loaded.runtime.set_schedule(SCHEDULES[0])  # more virtual layers: the same plan
    loaded.token_budget = 512
    assert generation_budget(loaded) == want


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_same_texts_whatever_ran_before(loaded):
    """Issue 12: the same prompts give the same tokens after the OOM retry's smaller budget, after other
    schedules filled the prefix cache, after it was cleared, and with reuse off (bitwise here, on the CPU)."""
    ps = prompts(1, 12)
    runtime = loaded.runtime
    runtime.set_schedule(SCHEDULES[1])
    first = generate_ids(loaded, ps, MAX_NEW)  # cold: records the unmodified prefix on the way
    runtime.reset()
    assert generate_ids(loaded, ps, MAX_NEW)
    for schedule in SCHEDULES:  # other schedules, and logprob scoring, fill the cache
        runtime.set_schedule(schedule)
        generate_ids(loaded, ps[:5], MAX_NEW)
        token_logprobs(loaded, [Request(p, [(len(p), [4])]) for p in ps])
    runtime.set_schedule(SCHEDULES[1])
    loaded.token_budget = 16  # what the study's out-of-memory retry does; generation ignores it
    assert generate_ids(loaded, ps, MAX_NEW) == first
    runtime.prefix_cache.clear()
    assert generate_ids(loaded, ps, MAX_NEW) == first
    cache, runtime.prefix_cache = runtime.prefix_cache, None
    assert generate_ids(loaded, ps, MAX_NEW) == first
    runtime.prefix_cache = cache


@pytest.mark.parametrize("family", ["mistral"])
def test_generate_mode_evaluations_repeat_exactly(loaded):
    items = [Item(f"d{k}", "search", "digits", f"What is {k}*{k + 3}?", answer=str(k * (k + 3))) for k in range(7)]
    objective = ProbeObjective("t", 1, lambda split: items, mode="generate", max_new_tokens=12)
    first = objective.evaluate(loaded, SCHEDULES[0])
    objective.evaluate(loaded, SCHEDULES[2])
    loaded.token_budget = 64
    again = objective.evaluate(loaded, SCHEDULES[0])
    assert [r["output"] for r in again.items] == [r["output"] for r in first.items]
    assert again.score == first.score


@pytest.mark.parametrize("family", ["llama"])
def test_bad_arguments(loaded):
    with pytest.raises(ValueError, match="stop predicates"):
        generate_ids(loaded, [[5, 6], [7]], 4, stop=[None])
    with pytest.raises(ValueError, match="at least one token"):
        generate_ids(loaded, [[5, 6], []], 4)
    assert generate_ids(loaded, [[5, 6]], 0) == [[]] and generate_ids(loaded, [], 4) == []

