"""Probe suites as objectives, in two scoring modes. Scores are points, 0-100.

`logprob` (teacher-forced, no generation):
  - digits: the mean probability of the correct answer's tokens (partial credit that moves
    smoothly); `exact` is the share of items whose every answer token is the argmax;
  - choice: the probability of the right option among the options (by log-likelihood of
    each option's tokens); `accuracy` is the share where it is the most likely;
  - eq: each emotion's expected intensity over the answers 0..10, scored with the EQ-Bench
    v2 formula.
`generate` (greedy, parsed): digits by partial credit on the parsed number, choice right or
wrong, eq by the formula on the parsed ratings. The `number` scorer (benchmarks such as
GSM8K) is digits in logprob mode and an exact match of the final number in generate mode.
Every generate-mode item records whether its answer could be parsed (`parsed`); the share is
the result's `parsed` metric, the parse rate.

Version 2 suites (settings in the suite file) change three things, each a new version of what
is measured: `working = true` lets the model work before answering and reads the answer only
after the last 'answer' marker or from a \\boxed{...} after it (none: unparsed); `unparsed = "worst"` scores an unparsed
answer as the worst possible answer to the item (for eq: every emotion at the far end of the
scale), so a schedule cannot gain by breaking the format; `eq_logprob = "expected_score"`
scores the expected EQ-Bench score under each emotion's rating distribution instead of the
score of the expected rating, which rewarded flattened distributions. `[instructions]` adds
a line per mode to the prompt (answer only for logprob, working for generate).

Prompts go through the model's chat template; a thinking model's think block is closed.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from ..chat import chat_ids
from .engine import Request, token_logprobs
from .generation import decoded, end_tokens, generate_ids
from .objective import Objective
from .scorers import (
    ANSWER_CHAR, ANSWER_MARK, BOXED, closing_brace, digit_credit, eq_bench_expected_score, eq_bench_score,
    eq_bench_worst_score, final_answer, parse_choice, parse_eq_ratings, parse_final_number, parse_number,
)
from .suites import Item, Suite

__all__ = ["ProbeObjective", "evaluate_probes"]

EQ_VALUES = tuple(range(11))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for k in range(n):
        if any(s[k] != seqs[0][k] for s in seqs):
            return k
    return n


class _Plan:
    """The requests one item needs, and how to turn their answers into the item's result."""

    def __init__(self, requests: list[Request], finish):
        self.requests = requests
        self.finish = finish


class ProbeObjective(Objective):
    """Items scored in one of two modes; the items come from a suite file or a benchmark reader."""

    def __init__(
        self,
        name: str,
        version: int,
        items: Callable[[str], list[Item]],
        mode: str = "logprob",
        max_new_tokens: int = 32,
        answer_prefix: str = "",
        instructions: dict[str, str] | None = None,
        working: bool = False,
        eq_logprob: str = "expected_rating",
        unparsed: str = "zero",
    ):
        self.name = name
        self.version = version
        self._items = items
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.answer_prefix = answer_prefix
        self.instruction = (instructions or {}).get(mode, "")
        self.working = working
        self.eq_logprob = eq_logprob
        self.unparsed = unparsed
        # plans depend on the tokenizer and the items, not on the schedule: build them once
        self._plans: dict[tuple[str, int | None], tuple[Any, list[_Plan]]] = {}

    @classmethod
    def from_suite(cls, suite: Suite, mode: str = "logprob") -> "ProbeObjective":
        return cls(suite.name, suite.version, suite.items, mode, suite.max_new_tokens, suite.answer_prefix,
                   suite.instructions, suite.working, suite.eq_logprob, suite.unparsed)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def items(self, split: str, limit: int | None) -> list[Item]:
        items = self._items(split)
        return items[:limit] if limit else items

    def _score(self, loaded: Any, *, split: str, limit: int | None):
        items = self.items(split, limit)
        if self.mode == "generate":
            return self._score_generated(loaded, items)
        return self._score_logprob(loaded, items, (split, limit))

    # ---- logprob ---------------------------------------------------------------------

    def _prompt_ids(self, tokenizer: Any, item: Item) -> list[int]:
        prompt = f"{item.prompt}\n{self.instruction}" if self.instruction else item.prompt
        return chat_ids(tokenizer, prompt) + _encode(tokenizer, self.answer_prefix)

    def _plan(self, tokenizer: Any, item: Item) -> _Plan:
        prompt = self._prompt_ids(tokenizer, item)
        if item.scorer in ("digits", "number"):
            return self._plan_digits(tokenizer, prompt, item)
        if item.scorer == "choice":
            return self._plan_choice(tokenizer, prompt, item)
        return self._plan_eq(tokenizer, prompt, item)

    def _plan_digits(self, tokenizer, prompt, item) -> _Plan:
        answer = _encode(tokenizer, item.answer)
        req = Request(prompt + answer, [(len(prompt) + k, [t]) for k, t in enumerate(answer)], prefix=len(prompt))

        def finish(outs):
            probs = [math.exp(float(lp[0])) for lp, _ in outs[0]]
            exact = all(top == t for (_, top), t in zip(outs[0], answer))
            return {"score": 100.0 * sum(probs) / len(probs), "exact": float(exact)}  # (np.mean: 5 us a call)

        return _Plan([req], finish)

    def _option_logprobs(self, tokenizer, prompt, options: list[str]):
        """Requests for the log-likelihood of each option's tokens after the prompt (which they share)."""
        tokens = [_encode(tokenizer, o) for o in options]
        reqs = [Request(prompt + t, [(len(prompt) + k, [tok]) for k, tok in enumerate(t)], prefix=len(prompt))
                for t in tokens]
        return reqs, lambda outs: np.array([sum(float(lp[0]) for lp, _ in o) for o in outs])

    def _plan_choice(self, tokenizer, prompt, item) -> _Plan:
        options = list(item.options)
        right = options.index(item.answer)
        reqs, read = self._option_logprobs(tokenizer, prompt, options)

        def finish(outs):
            lp = read(outs)
            best = int(np.argmax(lp))
            p = np.exp(lp - np.logaddexp.reduce(lp))
            return {"score": 100.0 * float(p[right]), "correct": float(best == right), "picked": options[best]}

        return _Plan(reqs, finish)

    def _plan_eq(self, tokenizer, prompt, item) -> _Plan:
        requests: list[Request] = []
        readers = []
        for emotion, _ in item.emotions:
            full = [_encode(tokenizer, f"{emotion}: {v}") for v in EQ_VALUES]
            cut = _common_prefix(full)
            base = prompt + full[0][:cut]
            cands = [f[cut:] for f in full]
            reqs, read = self._candidate_logprobs(base, cands, len(prompt))
            readers.append((len(requests), len(reqs), read))
            requests += reqs
        references = dict(item.emotions)

        def finish(outs):
            expected, distributions = {}, {}
            for (emotion, _), (at, n, read) in zip(item.emotions, readers):
                lp = read(outs[at : at + n])
                p = np.exp(lp - np.logaddexp.reduce(lp))
                expected[emotion] = float(np.dot(p, EQ_VALUES))
                if self.eq_logprob == "expected_score":  # (only that score reads them)
                    distributions[emotion] = dict(zip(EQ_VALUES, (float(x) for x in p / p.sum())))
            if self.eq_logprob == "expected_score":
                return {"score": eq_bench_expected_score(distributions, references), "ratings": expected}
            return {"score": eq_bench_score(expected, references), "ratings": expected}

        return _Plan(requests, finish)

    def _candidate_logprobs(self, base: list[int], cands: list[list[int]], shared: int):
        """log P of each candidate continuation; a one-token candidate that begins a longer one
        ('1' and '10' in a tokenizer that splits digits) keeps only the mass that does not go on.
        The first `shared` tokens of base are the prompt the item's other requests share."""
        firsts = sorted({c[0] for c in cands})
        requests = [Request(base, [(len(base), firsts)], prefix=shared)]
        longer = [k for k, c in enumerate(cands) if len(c) > 1]
        for k in longer:
            c = cands[k]
            requests.append(Request(base + c, [(len(base) + j, [c[j]]) for j in range(1, len(c))], prefix=shared))

        def read(outs):
            first = dict(zip(firsts, outs[0][0][0]))
            lp = np.array([first[c[0]] for c in cands], dtype=np.float64)
            for n, k in enumerate(longer, start=1):
                rest = [float(x[0][0]) for x in outs[n]]
                lp[k] += sum(rest)
                for u, c in enumerate(cands):  # u is the one-token prefix of the longer candidate k
                    if len(c) == 1 and c[0] == cands[k][0]:
                        lp[u] += math.log(max(1e-12, 1.0 - math.exp(rest[0])))
            return lp

        return requests, read

    def _plans_for(self, loaded, items: list[Item], key: tuple[str, int | None]) -> list[_Plan]:
        cached = self._plans.get(key)
        if cached is None or cached[0] is not loaded.tokenizer:
            cached = self._plans[key] = (loaded.tokenizer, [self._plan(loaded.tokenizer, item) for item in items])
        return cached[1]

    def _finish(self, items: list[Item], plans: list[_Plan], outs) -> list[dict[str, Any]]:
        results, at = [], 0
        for item, plan in zip(items, plans):
            n = len(plan.requests)
            results.append({"id": item.id, **plan.finish(outs[at : at + n])})
            at += n
        return results

    def _score_logprob(self, loaded, items: list[Item], key: tuple[str, int | None]):
        plans = self._plans_for(loaded, items, key)
        outs, tokens = token_logprobs(loaded, [req for plan in plans for req in plan.requests])
        results = self._finish(items, plans, outs)
        return results, _summary(results), tokens

    # ---- generate --------------------------------------------------------------------

    def _score_generated(self, loaded, items: list[Item]):
        tokenizer = loaded.tokenizer
        prompts = [self._prompt_ids(tokenizer, item) for item in items]
        # with working, a row ends once its answer line is complete: the answer is read from there anyway
        new = generate_ids(loaded, prompts, self.max_new_tokens, stop=answered if self.working else None)
        texts, tokens = decoded(loaded, prompts, new)
        ends = end_tokens(loaded)
        results = []
        for item, ids, text in zip(items, new, texts):
            scored = self._score_text(item, self.answer_prefix + text)
            # cut: no answer read because the row ran out of new tokens (no end token): the limit, not the model
            cut = not scored["parsed"] and len(ids) >= self.max_new_tokens and ids[-1] not in ends
            results.append({"id": item.id, "output": text, **scored, "cut": float(cut)})
        return results, _summary(results), tokens

    def _score_text(self, item: Item, text: str) -> dict[str, Any]:
        """An item's score from its generated answer, and whether the answer could be parsed."""
        if self.working:  # the answer follows the last 'answer' marker (or is boxed), never the working
            text = final_answer(text) or ""
        if item.scorer in ("digits", "number"):
            final = item.scorer == "number" and not self.working  # with working, text is already the final answer
            number = parse_final_number(text) if final else parse_number(text)
            credit = (number == item.answer) if item.scorer == "number" else digit_credit(number, item.answer)
            return {"score": 100.0 * credit, "exact": float(number == item.answer), "parsed": float(number is not None)}
        if item.scorer == "choice":
            picked = parse_choice(text, list(item.options))
            correct = picked is not None and item.options[picked] == item.answer
            return {"score": 100.0 * correct, "correct": float(correct), "parsed": float(picked is not None)}
        ratings = parse_eq_ratings(text, [e for e, _ in item.emotions])
        if ratings is None:
            worst = eq_bench_worst_score(dict(item.emotions)) if self.unparsed == "worst" else 0.0
            return {"score": worst, "parsed": 0.0}
        return {"score": eq_bench_score(ratings, dict(item.emotions)), "parsed": 1.0}


# an answer line holds a letter or digit: 'The final answer is:\n\\[' still waits for what the display holds
_ANSWERED = re.compile(ANSWER_MARK.pattern + r"(?=[^\n]*" + ANSWER_CHAR + r")[^\s*][^\n]*\n", re.IGNORECASE)


def answered(text: str) -> bool:
    """True once the text holds a complete answer line ('Answer: 42' and a line break after it) or a
    closed \\boxed{...}.

    Monotone, as generation's stop predicates must be: a continuation of a text that holds one
    holds it too. The row is cut right there, so the first complete answer is the last answer
    marker of the text scored (scorers.final_answer).
    """
    if _ANSWERED.search(text) is not None:
        return True
    return any(closing_brace(text, mark.end()) is not None for mark in BOXED.finditer(text))


def evaluate_probes(objectives: list[Any], loaded: Any, schedule: Any = None, *, split: str = "search",
                    limit: int | None = None) -> list[Any]:
    """Evaluate several objectives under one schedule; the logprob-mode probes share one engine pass.

    Their requests go through token_logprobs together, so prompts of every suite fill the same
    sorted batches (fewer, fuller forward calls). Each result is what its own evaluate would
    give, except that seconds and tokens are the shared pass's, split by its share of the
    requests' tokens. Other objectives are evaluated one by one. Results come in input order.
    """
    import time

    runtime = loaded.runtime
    chosen = schedule if schedule is not None else runtime.schedule
    together = [k for k, o in enumerate(objectives) if isinstance(o, ProbeObjective) and o.mode == "logprob"]
    results: list[Any] = [None] * len(objectives)
    for k, objective in enumerate(objectives):
        if k not in together:
            results[k] = objective.evaluate(loaded, chosen, split=split, limit=limit)
    if not together:
        return results
    start = time.perf_counter()
    with runtime.using(chosen) as applied:
        work = []
        for k in together:
            objective = objectives[k]
            items = objective.items(split, limit)
            plans = objective._plans_for(loaded, items, (split, limit))
            work.append((k, items, plans, [req for plan in plans for req in plan.requests]))
        outs, tokens = token_logprobs(loaded, [req for *_, reqs in work for req in reqs])
    seconds = time.perf_counter() - start
    sizes = [sum(len(r.ids) for r in reqs) for *_, reqs in work]
    at = 0
    for (k, items, plans, reqs), size in zip(work, sizes):
        objective = objectives[k]
        items_out = objective._finish(items, plans, outs[at : at + len(reqs)])
        at += len(reqs)
        share = size / max(1, sum(sizes))
        results[k] = objective.result(items_out, _summary(items_out), round(tokens * share), seconds * share,
                                      split, applied)
    return results


def _summary(results: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each 0/1 flag the scorers set (exact, correct, parsed) and of generation's cut, as shares."""
    metrics: dict[str, float] = {}
    for key in ("exact", "correct", "parsed", "cut"):
        values = [r[key] for r in results if key in r]
        if values:
            metrics[{"correct": "accuracy"}.get(key, key)] = sum(values) / len(values)
    return metrics
