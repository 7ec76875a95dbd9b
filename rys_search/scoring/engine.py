"""Batched forward passes for scoring: teacher-forced log-probs and greedy generation.

    >>> req = Request(ids=[1, 5, 9, 4], targets=[(3, [4, 7]), (4, [2])])
    >>> [(logprobs, top)] = token_logprobs(loaded, [req])   # per target: log P of each token, argmax

A target (p, tokens) asks for log P(token at position p | ids[:p]) for each listed token,
p == len(ids) meaning the token after the sequence. Sequences are sorted by length (longest
batch first, so memory trouble shows at once), left-padded with position ids that skip the
padding, and only the positions some target needs get logits. Requests that share a prefix
(a prompt followed by several options) run the prefix once and continue from its KV cache.
Results come back in input order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Request", "token_logprobs", "greedy_generate", "default_token_budget", "batches_by_length"]


@dataclass(frozen=True)
class Request:
    ids: Sequence[int]
    targets: Sequence[tuple[int, Sequence[int]]]
    prefix: int = 0  # leading tokens other requests may share (the prompt); 0 = none


def default_token_budget(device: Any) -> int:
    """Tokens per batch (padded): small on a CPU, large on a GPU."""
    return 65536 if getattr(device, "type", str(device)) == "cuda" else 4096


def batches_by_length(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, each within the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]
            if longest * (len(batch) + 1) <= token_budget:
                batch.append(index)
                continue
        batches.append([index])
    return batches


def _pad_left(rows: list[Sequence[int]], pad_id: int, device: Any):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, width - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
            mask[r, width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _check(requests: Sequence[Request]) -> None:
    for req in requests:
        for p, _ in req.targets:
            if not 1 <= p <= len(req.ids):
                raise ValueError(f"target position {p} is outside a sequence of {len(req.ids)} tokens")
            if req.prefix and p < req.prefix:
                raise ValueError(f"target position {p} lies inside the shared prefix of {req.prefix} tokens")


class _Picker:
    """Collects (row, position, tokens) picks from one batch's log-probs and reads them all in
    one gather and one device-to-host copy, instead of one small copy per target."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.tokens: list[int] = []
        self.spans: list[tuple[int, int, int, int, Any]] = []  # (start, stop, row, col, put)

    def add(self, row: int, col: int, wanted: Sequence[int], put) -> None:
        start = len(self.tokens)
        self.rows += [row] * len(wanted)
        self.cols += [col] * len(wanted)
        self.tokens += list(wanted)
        self.spans.append((start, len(self.tokens), row, col, put))

    def read(self, logprobs) -> None:
        import torch

        if not self.spans:
            return
        dev = logprobs.device
        rows = torch.as_tensor(self.rows, dtype=torch.long, device=dev)
        cols = torch.as_tensor(self.cols, dtype=torch.long, device=dev)
        toks = torch.as_tensor(self.tokens, dtype=torch.long, device=dev)
        values = logprobs[rows, cols, toks].double().cpu().numpy()
        at = torch.as_tensor([[r, c] for _, _, r, c, _ in self.spans], dtype=torch.long, device=dev)
        tops = logprobs[at[:, 0], at[:, 1]].argmax(dim=-1).cpu().tolist()
        for (start, stop, _, _, put), top in zip(self.spans, tops):
            put((values[start:stop], int(top)))


def _setter(slots: list, k: int):
    def put(value) -> None:
        slots[k] = value

    return put


def token_logprobs(
    loaded: Any, requests: Sequence[Request], token_budget: int | None = None
) -> tuple[list[list[tuple[np.ndarray, int]]], int]:
    """Per request, per target: (log-probs of the listed tokens, the argmax token). Also the token count.

    Requests that share a prefix (several options or emotions after one prompt) run the
    prompt once and continue from its KV cache; the rest run whole.
    """
    _check(requests)
    budget = token_budget or getattr(loaded, "token_budget", None) or default_token_budget(loaded.device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, req in enumerate(requests):
        if req.prefix:
            groups.setdefault(tuple(req.ids[: req.prefix]), []).append(i)
    shared = {i for members in groups.values() if len(members) > 1 for i in members}
    results: list[list[tuple[np.ndarray, int]]] = [[] for _ in requests]
    plain = [i for i in range(len(requests)) if i not in shared]
    tokens = _score_whole(loaded, requests, plain, budget, results)
    prefixed = {k: v for k, v in groups.items() if len(v) > 1}
    if prefixed:
        tokens += _score_shared(loaded, requests, prefixed, budget, results)
    return results, tokens


def _score_whole(loaded, requests, indices, budget, results) -> int:
    import torch

    pad = _pad_id(loaded.tokenizer)
    tokens = 0
    for chunk in batches_by_length([len(requests[i].ids) for i in indices], budget):
        batch = [indices[c] for c in chunk]
        ids, mask, positions = _pad_left([requests[i].ids for i in batch], pad, loaded.device)
        width = ids.shape[1]
        # padded index of the logits that predict position p of row r: p - 1 + (width - len)
        first = min(p - 1 + width - len(requests[i].ids) for i in batch for p, _ in requests[i].targets)
        with torch.no_grad():
            logits = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                  logits_to_keep=width - first, use_cache=False).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        tokens += int(mask.sum())
        picker = _Picker()
        for row, i in enumerate(batch):
            shift = width - len(requests[i].ids) - first
            results[i] = [None] * len(requests[i].targets)
            for k, (p, wanted) in enumerate(requests[i].targets):
                picker.add(row, p - 1 + shift, wanted, _setter(results[i], k))
        picker.read(logprobs)
        del logits, logprobs
    return tokens


def _select_rows(cache: Any, rows):
    """A cache holding the given batch rows (repeats allowed); the original is left as it was."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(rows)
    return sub


def _score_shared(loaded, requests, groups, budget, results) -> int:
    """Run each distinct prefix once (keeping its KV cache), then every continuation from it."""
    import torch

    pad = _pad_id(loaded.tokenizer)
    prefixes = list(groups)
    tokens = 0
    for chunk in batches_by_length([len(p) for p in prefixes], budget):
        ids, mask, positions = _pad_left([prefixes[c] for c in chunk], pad, loaded.device)
        width = ids.shape[1]
        with torch.no_grad():
            out = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                               logits_to_keep=1, use_cache=True)
        last = torch.log_softmax(out.logits.float(), dim=-1)  # (prefixes, 1, vocab)
        cache = out.past_key_values
        tokens += int(mask.sum())
        members = [(row, i) for row, c in enumerate(chunk) for i in groups[prefixes[c]]]
        rest = max(max(p for p, _ in requests[i].targets) - requests[i].prefix for _, i in members)
        per_batch = max(1, budget // (width + max(rest, 1)))
        for at in range(0, len(members), per_batch):
            part = members[at : at + per_batch]
            picker = _Picker()
            for row, i in part:  # the target right after the prompt comes from the prompt's last logits
                results[i] = [None] * len(requests[i].targets)
                for k, (p, w) in enumerate(requests[i].targets):
                    if p == requests[i].prefix:
                        picker.add(row, 0, w, _setter(results[i], k))
            picker.read(last)
            # only the tokens some target after the prompt needs: those before the last target
            tails = [list(requests[i].ids[requests[i].prefix : max(p for p, _ in requests[i].targets)]) for _, i in part]
            if not any(tails):
                continue
            rows = torch.as_tensor([row for row, _ in part], dtype=torch.long, device=loaded.device)
            span = max(len(t) for t in tails)
            tail_ids = torch.full((len(part), span), pad, dtype=torch.long)
            tail_mask = torch.zeros((len(part), span), dtype=torch.long)
            for r, tail in enumerate(tails):
                if tail:
                    tail_ids[r, : len(tail)] = torch.as_tensor(tail, dtype=torch.long)
                    tail_mask[r, : len(tail)] = 1
            tail_ids, tail_mask = tail_ids.to(loaded.device), tail_mask.to(loaded.device)
            start = mask[rows].sum(dim=1, keepdim=True)  # each row's real prompt length
            tail_positions = start + torch.arange(span, device=loaded.device)
            with torch.no_grad():
                logits = loaded.model(
                    input_ids=tail_ids,
                    attention_mask=torch.cat([mask[rows], tail_mask], dim=1),
                    position_ids=tail_positions,
                    past_key_values=_select_rows(cache, rows),
                    use_cache=True,
                ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            tokens += int(tail_mask.sum())
            picker = _Picker()
            for r, (_, i) in enumerate(part):
                prefix = requests[i].prefix
                for k, (p, w) in enumerate(requests[i].targets):
                    if p > prefix:
                        picker.add(r, p - 1 - prefix, w, _setter(results[i], k))
            picker.read(logprobs)
            del logits, logprobs
        del cache, out, last
    return tokens


def greedy_generate(
    loaded: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, token_budget: int | None = None
) -> tuple[list[str], int]:
    """Greedy continuations of each prompt (token ids), decoded without special tokens."""
    import torch

    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    budget = token_budget or getattr(loaded, "token_budget", None) or default_token_budget(device)
    pad = _pad_id(tokenizer)
    texts: list[str] = [""] * len(prompts)
    tokens = 0
    lengths = [len(p) + max_new_tokens for p in prompts]
    for batch in batches_by_length(lengths, budget):
        ids, mask, _ = _pad_left([prompts[i] for i in batch], pad, device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                temperature=None, top_p=None, top_k=None, pad_token_id=pad,
            )
        new = out[:, ids.shape[1]:]
        tokens += int(mask.sum()) + int(new.numel())
        for row, i in enumerate(batch):
            texts[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
    return texts, tokens
