"""Batched forward passes for scoring: teacher-forced log-probs (greedy generation: generation.py).

    >>> req = Request(ids=[1, 5, 9, 4], targets=[(3, [4, 7]), (4, [2])])
    >>> [(logprobs, top)] = token_logprobs(loaded, [req])   # per target: log P of each token, argmax

A target (p, tokens) asks for log P(token at position p | ids[:p]) for each listed token,
p == len(ids) meaning the token after the sequence. Sequences are sorted by length (longest
batch first, so memory trouble shows at once), left-padded with position ids that skip the
padding, and only the positions some target needs get logits. Requests that share a prefix
(a prompt followed by several options) run the prefix once and continue from its KV cache.
Results come back in input order.

Every forward call goes through the runtime's prefix reuse (ScheduledModel.forward) with a
digest of its inputs as the key: the batches depend only on the requests and the token
budget, never on the schedule, so a call under any schedule finds the unmodified model's
hidden states recorded by an earlier schedule and runs only the layers from its first
deviation on. A prompt and the continuations that read its KV cache start at one boundary.

Plans: everything a call does that no schedule changes (the batches, their padded ids, masks
and keys on the device, the indices of the picked positions, the shared start) is worked out
once per list of request objects and kept (_Plan.of); a call under the next schedule only runs
the forwards and reads the picks.

Shared start: the tokens every request of a call begins with (a chat template's system turn,
such as SmolLM2's or Qwen2.5's default system prompt; SmolLM2's 24 tokens are 10k of the 38k
tokens the default probes run per schedule) run once per call, as one row, and every batch
continues from their KV cache instead of running them again in each row. It needs at least
SHARED_START_MIN tokens and every sequence within the model's sliding window (padding then sits
between the shared start and each row's own tokens, masked, which a window would count);
RYS_SEARCH_SHARED_START=0 turns it off.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ..cache_args import output_cache

__all__ = ["Request", "token_logprobs", "default_token_budget", "batches_by_length", "call_cost", "kept"]


SHARED_START_MIN = 8  # tokens: a shorter shared start is not worth its own forward call


@dataclass(frozen=True)
class Request:
    ids: Sequence[int]
    targets: Sequence[tuple[int, Sequence[int]]]
    prefix: int = 0  # leading tokens other requests may share (the prompt); 0 = none


def default_token_budget(device: Any) -> int:
    """Tokens per batch (padded): small on a CPU, large on a GPU."""
    return 65536 if getattr(device, "type", str(device)) == "cuda" else 4096


def batches_by_length(lengths: Sequence[int], token_budget: int, call_cost: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, each within the budget.

    call_cost is what one more forward call costs, in padded tokens: with it the grouping of
    the sorted lengths minimises padded tokens + call_cost per batch (dynamic programming), so
    a batch is split where its padding would cost more than a call; with 0, batches are filled
    greedily to the budget.
    """
    if call_cost > 0 and lengths:
        return [list(b) for b in _cheapest_batches(tuple(lengths), int(token_budget), int(call_cost))]
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


@lru_cache(maxsize=256)
def _cheapest_batches(lengths: tuple[int, ...], budget: int, call_cost: int) -> tuple[tuple[int, ...], ...]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sorted_lengths = np.array([lengths[i] for i in order], dtype=np.int64)
    n = len(order)
    best = np.zeros(n + 1)  # best[i]: cheapest cost of the sorted items i..n-1
    cut = np.zeros(n + 1, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        longest = int(sorted_lengths[i])  # the batch starting at i is as wide as its first item
        size = max(1, min(n - i, budget // max(longest, 1)))
        ends = np.arange(i + 1, i + size + 1)
        costs = (ends - i) * longest + call_cost + best[ends]
        k = int(np.argmin(costs))
        best[i], cut[i] = costs[k], ends[k]
    batches, i = [], 0
    while i < n:
        batches.append(tuple(order[i : cut[i]]))
        i = int(cut[i])
    return tuple(batches)


# A layer call's cost beyond its tokens' work: the host's time (about 0.4 ms a layer), in seconds.
LAYER_CALL_SECONDS = 4e-4
# On a GPU whose layer calls are CUDA graph replays (graphs.py) the host keeps ahead of the device,
# and past this many padded tokens a merged batch costs more than another call: the batching counts
# only padded tokens, while a long batch's attention and the KV cache its continuations copy grow
# faster. SmolLM2 on the H100, seconds a schedule (benchmarks/throughput.py --variants engine
# --schedules 10 --call-cost N): 0.111 and 0.110 at its 0.4 ms figure (17841 tokens), 0.099 at
# 4000, 0.088 and 0.088 at 2000, 0.092 and 0.093 at 1000, 0.098 at 500. Larger models stay under
# it, and fewer tokens did not help them: the Qwen2.5-1.5B shape 0.251 s at its 1451 tokens, 0.246,
# 0.244 and 0.250 at 1451, 700 and 350 on another machine, 0.278 at 181; the Qwen3-8B shape 0.824 at
# its 351 against 0.857 at 64.
GRAPHED_CALL_COST_CAP = 2000


def call_cost(loaded: Any) -> int:
    """The cost of one forward call in padded tokens: what a layer call costs beyond its tokens
    (LAYER_CALL_SECONDS) times the layers, over the time a token takes (2 x parameters at about
    400 TFLOP/s on a GPU, 100 GFLOP/s on a CPU); at least 64, and on a GPU with layer graphs at
    most GRAPHED_CALL_COST_CAP. `loaded.call_cost` overrides it."""
    given = getattr(loaded, "call_cost", None)
    if given is not None:
        return int(given)
    model = loaded.model
    if model not in _CALL_COSTS:
        params = sum(p.numel() for p in model.parameters())
        cuda = getattr(loaded.device, "type", str(loaded.device)) == "cuda"
        rate = 4e14 if cuda else 1e11
        runtime = getattr(loaded, "runtime", None)
        layers = len(runtime.schedule) if runtime is not None else 1
        cost = max(64, int(layers * LAYER_CALL_SECONDS * rate / (2 * params)))
        if cuda and getattr(runtime, "graphs", None) is not None:
            cost = min(cost, GRAPHED_CALL_COST_CAP)
        _CALL_COSTS[model] = cost
    return _CALL_COSTS[model]


# keyed by the model itself, held weakly: an id() would be reused by the next model Python allocates
_CALL_COSTS: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def to_device(tensor: Any, device: Any) -> Any:
    """A CPU tensor on device. To a GPU it goes from pinned memory without waiting: torch's plain copy
    from pageable memory synchronises the stream, so the GPU would drain its queue and idle while
    the host prepares the next batch. The Qwen3-8B shape on the H100 (`benchmarks/throughput.py
    --profile`) waited 130 times a schedule, the GPU busy 49% of the time; without the waits 67%,
    0.998 s a schedule against 1.128 s."""
    if getattr(device, "type", str(device)) != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _pad_left(rows: list[Sequence[int]], pad_id: int, device: Any, keyed: bool = False):
    """Left-padded ids, attention mask and position ids on device (and with keyed, their digest).

    Built in numpy and sent as one tensor (one pinned copy, not three): SmolLM2's engine on the H100
    (cProfile, 10 schedules) spent 11 ms a call, with its copies, when it filled row by row; 2.6 ms."""
    import torch

    ids, mask = _padded(rows, pad_id, left=True)
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    both = torch.from_numpy(np.stack([ids, mask, positions]))
    on = to_device(both, device)
    out = on[0], on[1], on[2]
    return (*out, digest("left", both[0], both[1])) if keyed else out


def _padded(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """The rows padded to the longest (on the left or the right) and their mask, as int64 arrays."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    columns = np.arange(width)[None, :]
    real = columns >= (width - lengths)[:, None] if left else columns < lengths[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[real] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return ids, real.astype(np.int64)


def digest(*parts: Any) -> bytes:
    """A key for the prefix cache: the digest of a call's input tensors (CPU) and plain values."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if hasattr(part, "numpy"):
            h.update(repr((part.dtype, tuple(part.shape))).encode())
            h.update(part.contiguous().numpy().tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.digest()


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


class _Picks:
    """The (row, position, tokens) picks of one batch's logits, for requests' targets: built once per
    plan, their indices on the device (one copy), read from each run's logits."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.spans: list[tuple[int, int, int, int, int, int]] = []  # (start, stop, row, col, request, target)

    def add(self, row: int, col: int, wanted: Sequence[int], request: int, target: int) -> None:
        start = len(self.tokens)
        self.tokens += list(wanted)
        self.spans.append((start, len(self.tokens), row, col, request, target))

    def done(self, device: Any) -> _Picks | None:
        """The picks with their indices on device (rows, columns, each token's span, the tokens: one
        copy); None when there are none."""
        import torch

        if not self.spans:
            return None
        n = len(self.spans)
        spans = np.array([span[:4] for span in self.spans], dtype=np.int64).reshape(n, 4)
        owner = np.repeat(np.arange(n), spans[:, 1] - spans[:, 0])
        flat = to_device(torch.from_numpy(np.concatenate([spans[:, 2], spans[:, 3], owner,
                                                          np.asarray(self.tokens, dtype=np.int64)])), device)
        self.rows, self.cols = flat[:n], flat[n:2 * n]
        self.owner, self.toks = flat[2 * n:2 * n + len(owner)], flat[2 * n + len(owner):]
        return self


class _Reader:
    """Reads each batch's picks on the device (log-softmax at the picked positions only, one gather),
    and copies them to the host once the call's last batch is queued (finish): no batch waits for
    the device to finish the one before, and the host waits once, not once a batch."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, Any, _Picks]] = []  # (values, argmax tokens, picks), on the device

    def read(self, logits, picks: _Picks | None) -> None:
        import torch

        if picks is None:
            return
        logprobs = torch.log_softmax(logits[picks.rows, picks.cols].float(), dim=-1)  # (spans, vocab)
        self.pending.append((logprobs[picks.owner, picks.toks].double(), logprobs.argmax(dim=-1), picks))

    def finish(self, results: list[list[Any]]) -> None:
        """Every read's values to the host (two copies in all: the values, the argmax tokens) and into
        results[request][target]."""
        import torch

        if not self.pending:
            return
        values = torch.cat([v for v, _, _ in self.pending]).cpu().numpy()
        tops = torch.cat([t for _, t, _ in self.pending]).cpu().tolist()
        at = k = 0
        for read_values, _, picks in self.pending:
            for start, stop, _, _, request, target in picks.spans:
                results[request][target] = (values[at + start : at + stop], int(tops[k]))
                k += 1
            at += len(read_values)
        self.pending = []


def token_logprobs(
    loaded: Any, requests: Sequence[Request], token_budget: int | None = None
) -> tuple[list[list[tuple[np.ndarray, int]]], int]:
    """Per request, per target: (log-probs of the listed tokens, the argmax token). Also the token count.

    Requests that share a prefix (several options or emotions after one prompt) run the
    prompt once and continue from its KV cache; the rest run whole. What depends only on the
    requests (the batches, their padded ids, masks and keys on the device, the picks) is planned
    once and kept for the next call with the same request objects (_Plan.of): a study scores the
    same probe requests under every schedule.
    """
    budget = token_budget or getattr(loaded, "token_budget", None) or default_token_budget(loaded.device)
    plan = _Plan.of(loaded, requests, budget)
    results: list[list[Any]] = [[None] * len(req.targets) for req in requests]
    reader = _Reader()
    start = plan.start.fresh(loaded) if plan.start else None
    for step in plan.whole:
        step.run(loaded, reader, start)
    for step in plan.shared:
        step.run(loaded, reader, start)
    reader.finish(results)
    return results, plan.tokens


class _Plan:
    """What token_logprobs does with a list of requests that no schedule changes: the shared start,
    the batches of whole sequences and of shared prompts with their continuations."""

    KEEP = 8  # plans kept per model (a study's calls use a few request lists, each every schedule)

    def __init__(self, loaded: Any, requests: Sequence[Request], budget: int):
        _check(requests)
        self.requests = list(requests)  # held, so that their ids, the key, stay theirs
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, req in enumerate(requests):
            if req.prefix:
                groups.setdefault(tuple(req.ids[: req.prefix]), []).append(i)
        shared = {i for members in groups.values() if len(members) > 1 for i in members}
        plain = [i for i in range(len(requests)) if i not in shared]
        self.start = _Start.of(loaded, requests, [requests[i].prefix for i in shared])
        if self.start:  # plans are kept per model, weakly: a plan must not hold the model (each run's fresh() does)
            self.start.loaded = None
        self.tokens = self.start.n if self.start else 0
        self.whole = _plan_whole(loaded, requests, plain, budget, self.start)
        prefixed = {k: v for k, v in groups.items() if len(v) > 1}
        self.shared = _plan_shared(loaded, requests, prefixed, budget, self.start) if prefixed else []
        self.tokens += sum(step.tokens for step in [*self.whole, *self.shared])

    @classmethod
    def of(cls, loaded: Any, requests: Sequence[Request], budget: int) -> _Plan:
        """The plan of these very request objects (kept: up to KEEP per model, the most recently used)."""
        # (a kept plan holds its requests, so no other object has their ids)
        key = (tuple(map(id, requests)), budget, _shared_start_on(), _pad_id(loaded.tokenizer), str(loaded.device),
               call_cost(loaded))
        return kept(_PLANS, loaded.model, key, lambda: cls(loaded, requests, budget), cls.KEEP)


_PLANS: "weakref.WeakKeyDictionary[Any, dict[Any, _Plan]]" = weakref.WeakKeyDictionary()


def kept(table: "weakref.WeakKeyDictionary[Any, dict[Any, Any]]", model: Any, key: Any, make: Any, keep: int) -> Any:
    """table[model][key], made by make() when missing: what a schedule's scoring works out from its
    inputs alone, kept for the next schedule. At most `keep` entries a model (the least recently used
    goes first); keyed by the model itself, held weakly, so nothing kept outlives its model."""
    entries = table.setdefault(model, {})
    value = entries.pop(key, None)
    if value is None:
        value = make()
    entries[key] = value  # (the most recently used last)
    while len(entries) > keep:
        entries.pop(next(iter(entries)))
    return value


def _shared_start_on() -> bool:
    return os.environ.get("RYS_SEARCH_SHARED_START", "1").strip().lower() not in ("0", "off", "false", "no")


class _Start:
    """The tokens every request of a call begins with, run once per forward start; batches continue
    from its KV cache. A plan keeps one (its ids on the device); each run takes a fresh() copy, whose
    KV caches are the schedule's own."""

    def __init__(self, loaded: Any, ids: Sequence[int]):
        import torch

        self.loaded = loaded
        self.n = len(ids)
        self.ids = torch.tensor([list(ids)], dtype=torch.long)
        self.key = digest("start", self.ids)
        self.caches: dict[int, Any] = {}
        dev = loaded.device
        self.on_device = (to_device(self.ids, dev), torch.arange(self.n, device=dev)[None])
        self.zeros: dict[int, Any] = {}  # rows -> that many zeros on the device (the row every batch row copies)

    def fresh(self, loaded: Any) -> _Start:
        """This start for a run on loaded, with no KV cache yet (a run's caches hold the schedule's
        keys and values)."""
        run = copy.copy(self)
        run.loaded, run.caches = loaded, {}
        return run

    @classmethod
    def of(cls, loaded: Any, requests: Sequence[Request], prompts: list[int]) -> "_Start | None":
        """The call's shared start, or None (off, too short, or a sliding window could see the padding).

        prompts: the lengths of the shared prompts (each keeps at least one token of its own).
        """
        if not _shared_start_on():
            return None
        if len(requests) < 2:
            return None
        first = requests[0].ids
        n = min(len(r.ids) for r in requests) - 1  # every row keeps a token of its own
        n = min([n, *(p - 1 for r in requests for p, _ in r.targets), *(p - 1 for p in prompts)])
        k = 0
        while k < n and all(r.ids[k] == first[k] for r in requests):
            k += 1
        if k < SHARED_START_MIN:
            return None
        window = getattr(loaded.runtime.config, "sliding_window", None)
        if window and max(len(r.ids) for r in requests) >= window:  # no padded row reaches past it
            return None
        return cls(loaded, first[:k])

    def cache(self, start: int, rows: int):
        """A KV cache of the shared start for `rows` batch rows, for a call that starts at boundary start."""
        import torch

        dev = self.loaded.device
        if start not in self.caches:
            ids, positions = self.on_device
            with torch.no_grad():
                out, _ = self.loaded.runtime.forward(
                    self.key, start=start, input_ids=ids, attention_mask=torch.ones_like(ids),
                    position_ids=positions, logits_to_keep=1, use_cache=True)
            self.caches[start] = output_cache(out)
        if rows not in self.zeros:
            self.zeros[rows] = torch.zeros(rows, dtype=torch.long, device=dev)
        return _select_rows(self.caches[start], self.zeros[rows])

    def extend(self, mask, positions):
        """The attention mask and position ids of rows that follow the shared start."""
        import torch

        ones = torch.ones((mask.shape[0], self.n), dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1), positions + self.n


@dataclass
class _WholeStep:
    """One batch of whole sequences: its inputs on the device, its key, its picks."""

    ids: Any
    mask: Any
    positions: Any
    key: bytes
    keep: int  # logits kept, from the right
    rows: int
    tokens: int
    picks: _Picks | None

    def run(self, loaded: Any, reader: _Reader, start: _Start | None) -> None:
        import torch

        inputs = {"attention_mask": self.mask, "position_ids": self.positions, "use_cache": bool(start)}
        if start:  # continue from the shared start's KV cache, from a boundary both have recorded
            at = loaded.runtime.start_for([start.key, self.key])
            inputs.update(start=at, past_key_values=_read_once(start.cache(at, self.rows)))
        with torch.no_grad():
            logits = loaded.runtime.forward(self.key, input_ids=self.ids, logits_to_keep=self.keep, **inputs)[0].logits
        reader.read(logits, self.picks)


def _plan_whole(loaded, requests, indices, budget, start: _Start | None = None) -> list[_WholeStep]:
    pad = _pad_id(loaded.tokenizer)
    skip = start.n if start else 0  # tokens of the shared start: not in the rows
    steps = []
    for chunk in batches_by_length([len(requests[i].ids) - skip for i in indices], budget, call_cost(loaded)):
        batch = [indices[c] for c in chunk]
        ids, mask, positions, key = _pad_left([requests[i].ids[skip:] for i in batch], pad, loaded.device, keyed=True)
        width = ids.shape[1]
        # padded index of the logits that predict position p of row r: p - 1 + (width - len)
        first = min(p - 1 - skip + width - (len(requests[i].ids) - skip) for i in batch for p, _ in requests[i].targets)
        tokens = sum(len(requests[i].ids) - skip for i in batch)  # the mask's ones, counted without a device wait
        if start:
            key = digest("after", start.key, key)
            mask, positions = start.extend(mask, positions)
        picks = _Picks()
        for row, i in enumerate(batch):
            shift = width - (len(requests[i].ids) - skip) - first
            for k, (p, wanted) in enumerate(requests[i].targets):
                picks.add(row, p - 1 - skip + shift, wanted, i, k)
        steps.append(_WholeStep(ids, mask, positions, key, width - first, len(batch), tokens,
                                picks.done(loaded.device)))
    return steps


def _read_once(cache: Any) -> Any:
    """Mark a cache whose contents nothing reads after the call it is passed to: layer graphs then
    leave its layers as they were instead of copying each layer's grown keys and values into it
    (graphs.py)."""
    cache.rys_read_once = True
    return cache


def _select_rows(cache: Any, rows):
    """A cache holding the given batch rows (repeats allowed); the original is left as it was."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(rows)
    return sub


@dataclass
class _Part:
    """The continuations of some of a prompt batch's rows: which rows, their inputs on the device, key, picks."""

    prompt_picks: _Picks | None  # the targets right after the prompt, read from the prompt's last logits
    key: bytes | None  # None: nothing after the prompt
    rows: Any = None
    ids: Any = None
    mask: Any = None
    positions: Any = None
    picks: _Picks | None = None


@dataclass
class _SharedStep:
    """One batch of prompts run once, then the continuations that read their KV cache."""

    ids: Any
    mask: Any
    positions: Any
    key: bytes
    rows: int
    tokens: int
    parts: list[_Part]

    def run(self, loaded: Any, reader: _Reader, shared: _Start | None) -> None:
        import torch

        runtime = loaded.runtime
        # the prompt and its continuations start at one boundary: the continuations read its KV cache
        start = runtime.start_for([self.key] + [part.key for part in self.parts if part.key is not None]
                                  + ([shared.key] if shared else []))
        past = shared.cache(start, self.rows) if shared else None
        with torch.no_grad():
            out, _ = runtime.forward(self.key, start=start, input_ids=self.ids, attention_mask=self.mask,
                                     position_ids=self.positions, logits_to_keep=1, use_cache=True, past_key_values=past)
        last = out.logits  # (prefixes, 1, vocab)
        cache = output_cache(out)
        for part in self.parts:
            reader.read(last, part.prompt_picks)
            if part.key is None:
                continue
            with torch.no_grad():
                logits = runtime.forward(part.key, start=start, input_ids=part.ids, attention_mask=part.mask,
                                         position_ids=part.positions, use_cache=True,
                                         past_key_values=_read_once(_select_rows(cache, part.rows)))[0].logits
            reader.read(logits, part.picks)
            del logits


def _plan_shared(loaded, requests, groups, budget, shared: _Start | None = None) -> list[_SharedStep]:
    """Each distinct prefix run once (keeping its KV cache), then every continuation from it."""
    import torch

    pad = _pad_id(loaded.tokenizer)
    dev = loaded.device
    prefixes = list(groups)
    skip = shared.n if shared else 0  # tokens of the call's shared start: not in the rows
    steps = []
    for chunk in batches_by_length([len(p) - skip for p in prefixes], budget, call_cost(loaded)):
        ids, mask, positions, key = _pad_left([prefixes[c][skip:] for c in chunk], pad, dev, keyed=True)
        if shared:
            key = digest("after", shared.key, key)
            mask, positions = shared.extend(mask, positions)
        width = ids.shape[1]
        members = [(row, i) for row, c in enumerate(chunk) for i in groups[prefixes[c]]]
        rest = max(max(p for p, _ in requests[i].targets) - requests[i].prefix for _, i in members)
        per_batch = max(1, budget // (width + skip + max(rest, 1)))
        tokens = sum(len(prefixes[c]) - skip for c in chunk)  # the mask's ones, counted without a device wait
        parts = []
        for at in range(0, len(members), per_batch):
            tails = _Tails(requests, members[at : at + per_batch], pad, key)
            prompt = _Picks()
            for row, i in tails.members:
                for k, (p, w) in enumerate(requests[i].targets):
                    if p == requests[i].prefix:
                        prompt.add(row, 0, w, i, k)
            part = _Part(prompt.done(dev), tails.key)
            if tails.key is not None:
                part.rows = to_device(torch.as_tensor([row for row, _ in tails.members], dtype=torch.long), dev)
                part.ids, tail_mask = to_device(tails.ids, dev), to_device(tails.mask, dev)
                start_at = mask[part.rows].sum(dim=1, keepdim=True)  # each row's real prompt length (with the start)
                part.positions = start_at + torch.arange(part.ids.shape[1], device=dev)
                part.mask = torch.cat([mask[part.rows], tail_mask], dim=1)
                tokens += int(tails.mask.sum())  # on the host
                picks = _Picks()
                for r, (_, i) in enumerate(tails.members):
                    prefix = requests[i].prefix
                    for k, (p, w) in enumerate(requests[i].targets):
                        if p > prefix:
                            picks.add(r, p - 1 - prefix, w, i, k)
                part.picks = picks.done(dev)
            parts.append(part)
        steps.append(_SharedStep(ids, mask, positions, key, len(chunk), tokens, parts))
    return steps


class _Tails:
    """The continuations of one batch after their prompts: right-padded ids and mask (CPU), key."""

    def __init__(self, requests, members, pad: int, prompt_key: bytes):
        import torch

        self.members = members
        # only the tokens some target after the prompt needs: those before the last target
        tails = [list(requests[i].ids[requests[i].prefix : max(p for p, _ in requests[i].targets)]) for _, i in members]
        self.key = None
        if not any(tails):
            return
        ids, mask = _padded(tails, pad, left=False)
        self.ids, self.mask = torch.from_numpy(ids), torch.from_numpy(mask)
        rows = torch.as_tensor([row for row, _ in members], dtype=torch.long)
        self.key = digest("tail", prompt_key, rows, self.ids, self.mask)
