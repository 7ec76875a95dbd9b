"""Scoring against slow, obvious paths on tiny models of every family."""

import numpy as np
import pytest
import torch

from rys_search.chat import chat_ids
from rys_search.errors import UserError
from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring import get_objective, paired_change
from rys_search.scoring.engine import Request, token_logprobs
from rys_search.scoring.generation import greedy_generate
from rys_search.scoring.fixed_point import FixedPointObjective
from rys_search.scoring.probes import ProbeObjective
from rys_search.scoring.suites import Item
from tiny import physically_duplicated, save_tiny

SCHEDULE = LayerSchedule.parse("0-1,2-3x3,4,5x2")


@pytest.fixture
def loaded(tmp_path, family):
    save_tiny(tmp_path, family)
    return load_model(str(tmp_path), device="cpu")


def full_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def test_shared_prefix_path_equals_whole_sequences(loaded):
    loaded.runtime.set_schedule(SCHEDULE)
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(5):
        prompt = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(4, 14)))]
        for _ in range(3):
            tail = [int(x) for x in rng.integers(3, 98, size=int(rng.integers(0, 4)))]
            targets = [(len(prompt), [5, 6, 7])] + [(len(prompt) + j, [tail[j]]) for j in range(1, len(tail))]
            requests.append(Request(prompt + tail, targets, prefix=len(prompt)))
    shared, _ = token_logprobs(loaded, requests, token_budget=64)
    whole, _ = token_logprobs(loaded, [Request(r.ids, r.targets) for r in requests], token_budget=64)
    for a, b in zip(shared, whole):
        for (lp_a, top_a), (lp_b, top_b) in zip(a, b):
            assert np.allclose(lp_a, lp_b, atol=1e-5) and top_a == top_b


def items():
    return [
        Item("d1", "search", "digits", "What is 12*3?", answer="36"),
        Item("d2", "search", "digits", "What is 7*8?", answer="56"),
        Item("c1", "search", "choice", "Who is taller?", answer="Bo", options=("Al", "Bo", "Cy")),
        Item("c2", "search", "choice", "Pick one", answer="a red ball", options=("a red ball", "a blue kite")),
        Item("e1", "search", "eq", "How does she feel?", emotions=(("Sad", 7.0), ("Glad", 0.0), ("Calm", 3.0), ("Angry", 1.0))),
    ]


def test_logprob_scores_match_the_obvious_computation(loaded):
    tok = loaded.tokenizer
    objective = ProbeObjective("t", 1, lambda split: items())
    result = objective.evaluate(loaded, SCHEDULE)
    got = {r["id"]: r for r in result.items}
    duplicate = physically_duplicated(loaded.model, SCHEDULE.expand())
    for item in items():
        prompt = chat_ids(tok, item.prompt)
        if item.scorer == "digits":
            answer = tok.encode(item.answer, add_special_tokens=False)
            lp = full_logprobs(duplicate, prompt + answer)
            probs = [lp[len(prompt) + k - 1, t].exp().item() for k, t in enumerate(answer)]
            assert got[item.id]["score"] == pytest.approx(100 * np.mean(probs), abs=1e-3)
        elif item.scorer == "choice":
            totals = []
            for option in item.options:
                ids = tok.encode(option, add_special_tokens=False)
                lp = full_logprobs(duplicate, prompt + ids)
                totals.append(sum(lp[len(prompt) + k - 1, t].item() for k, t in enumerate(ids)))
            p = np.exp(np.array(totals) - np.logaddexp.reduce(totals))
            assert got[item.id]["score"] == pytest.approx(100 * p[list(item.options).index(item.answer)], abs=1e-3)
        else:
            for emotion, _ in item.emotions:
                base = tok.encode(f"{emotion}: ", add_special_tokens=False)
                logp = []
                for v in range(11):
                    ids = tok.encode(str(v), add_special_tokens=False)
                    lp = full_logprobs(duplicate, prompt + base + ids)
                    total = sum(lp[len(prompt) + len(base) + k - 1, t].item() for k, t in enumerate(ids))
                    if v == 1:  # '1' not followed by '0'
                        nxt = full_logprobs(duplicate, prompt + base + ids)[-1, tok.encode("0", add_special_tokens=False)[0]]
                        total += np.log(1 - nxt.exp().item())
                    logp.append(total)
                p = np.exp(np.array(logp) - np.logaddexp.reduce(logp))
                assert got[item.id]["ratings"][emotion] == pytest.approx(float(np.dot(p, range(11))), abs=1e-3)


def test_batched_generation_equals_one_prompt_at_a_time(loaded):
    loaded.runtime.set_schedule(SCHEDULE)
    prompts = [chat_ids(loaded.tokenizer, p) for p in ("hi", "What is 2+2?", "Name a colour, please.")]
    texts, _ = greedy_generate(loaded, prompts, max_new_tokens=6, token_budget=256)
    for prompt, text in zip(prompts, texts):
        out = loaded.model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert text == loaded.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()


def test_generate_mode_scores_parsed_answers(loaded):
    result = ProbeObjective("t", 1, lambda split: items(), mode="generate", max_new_tokens=5).evaluate(loaded)
    assert len(result.items) == 5 and all("output" in r for r in result.items)
    assert all(0 <= r["score"] <= 100 for r in result.items if not r["id"].startswith("e"))
    assert result.interval[0] <= result.score <= result.interval[1]


def test_fixed_point_is_exactly_neutral_for_the_identity(loaded):
    result = FixedPointObjective().evaluate(loaded, LayerSchedule.identity(6), limit=4)
    assert result.score == 0.0 and result.interval == (0.0, 0.0)
    assert all(item["score"] == 0.0 for item in result.items)


def test_fixed_point_figures_match_a_physical_duplicate(loaded):
    objective = FixedPointObjective()
    result = objective.evaluate(loaded, SCHEDULE, limit=3)
    duplicate = physically_duplicated(loaded.model, SCHEDULE.expand())
    for item, text in zip(result.items, objective.passages(3)):
        ids = list(loaded.tokenizer(text)["input_ids"])[:64]
        last = []  # transformers returns the final hidden state after the norm: take the layer's own output
        hook = duplicate.model.layers[-1].register_forward_hook(lambda m, a, o: last.append(o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            base = torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].float(), -1)[1:]
            out = duplicate(torch.tensor([ids]), output_hidden_states=True)
        hook.remove()
        sched = torch.log_softmax(out.logits[0].float(), -1)[1:]
        kl = (base.exp() * (base - sched)).sum(-1).mean().item()
        assert item["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
        hs = list(out.hidden_states[:-1]) + last
        expected = []
        for pos, width, count in SCHEDULE.repeats():  # blocks 2-3 (three passes) and 5 (two passes)
            h = [hs[pos + k * width][0, 1:] for k in range(count + 1)]
            steps = [(h[k + 1] - h[k]).norm(dim=-1).mean().item() for k in range(count)]
            ratios = [steps[k] / steps[k - 1] for k in range(1, count)]
            seam = ((h[1] - h[0]).norm(dim=-1) / h[0].norm(dim=-1)).mean().item()
            expected.append((float(np.exp(np.mean(np.log(ratios)))), seam))
        for block, (contraction, seam) in zip(item["blocks"], expected):
            assert block["contraction"] == pytest.approx(contraction, rel=1e-4)
            assert block["seam"] == pytest.approx(seam, rel=1e-4)
        penalty = sum(max(0.0, np.log(c)) for c, _ in expected)
        assert item["score"] == pytest.approx(-(kl + penalty), rel=1e-4, abs=1e-6)


def test_fixed_point_inputs_are_prepared_once_per_model_and_passages(loaded, monkeypatch):
    objective = FixedPointObjective()
    first = objective.evaluate(loaded, SCHEDULE, limit=3)

    class Counting:  # the tokenizer, counting its calls
        def __init__(self, tokenizer):
            self.tokenizer, self.calls = tokenizer, 0

        def __call__(self, text):
            self.calls += 1
            return self.tokenizer(text)

        def __getattr__(self, name):
            return getattr(self.tokenizer, name)

    counting = Counting(loaded.tokenizer)
    monkeypatch.setattr(loaded, "tokenizer", counting)
    again = objective.evaluate(loaded, SCHEDULE, limit=3)
    assert counting.calls == 0  # the kept batches: nothing tokenized again
    assert [i["score"] for i in again.items] == [i["score"] for i in first.items]
    objective.evaluate(loaded, SCHEDULE, limit=2)  # other passages: prepared anew
    assert counting.calls == 2


def test_paired_change_and_registry(loaded):
    math = get_objective("math", mode="logprob")
    base = math.evaluate(loaded, LayerSchedule.identity(6), limit=6)
    run = math.evaluate(loaded, SCHEDULE, limit=6)
    delta, lo, hi = paired_change(run, base)
    assert delta == pytest.approx(run.score - base.score) and lo <= delta <= hi
    assert loaded.runtime.schedule.is_identity(6)  # evaluate puts the schedule back
    with pytest.raises(UserError, match="unknown objective 'maths'; available: eq, eq@1, eq@2, fixed_point, math, "
                                        "math@1, math@2, math@3, reasoning, reasoning@1, reasoning@2, "
                                        "reasoning@3"):
        get_objective("maths")
    assert get_objective("math").version == 1 and get_objective("math@2", mode="generate").version == 2
    with pytest.raises(UserError, match="math@2 is scored in generate mode only"):
        get_objective("math@2", mode="logprob")
    with pytest.raises(UserError, match="unknown scoring mode"):
        get_objective("math", mode="sample")
