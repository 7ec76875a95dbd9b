"""Batched forward passes for scoring: teacher-forced log-probs (greedy generation: generation.py).

    >>> req = Request(ids=[1, 5, 9, 4], targets=[(3, [4, 7]), (4, [2])])
    >>> [(logprobs, top)] = token_logprobs(loaded, [req])   # per target: log P of each token, argmax

A target (p, tokens) asks for log P(token at position p | ids[:p]) for each listed token,
p == len(ids) meaning the token after the sequence. Sequences are sorted by length (longest
batch first, so memory trouble shows at once), left-padded with position ids that skip the
padding, and only the positions some target needs get logits. Results come back in input order.

Packed rows: requests that share a prefix (a prompt followed by several options) run as one row,
the prompt once and then each option's tokens, at the positions they have after the prompt,
under a 4D attention mask in which an option sees the prompt and its own earlier tokens only
(_tree_mask). The same call reads the prompt's last logits and every option's, so no KV cache
is kept, copied or expanded per option. It needs an attention that takes a 4D mask (SDPA or
eager) and every request within the model's sliding window (a 4D mask is used as given, without
the window); otherwise such requests run whole.

Every forward call goes through the runtime's prefix reuse (ScheduledModel.forward) with a
digest of its inputs as the key: the batches depend only on the requests and the token
budget, never on the schedule, so a call under any schedule finds the unmodified model's
hidden states recorded by an earlier schedule and runs only the layers from its first
deviation on. A batch and the shared start whose KV cache it reads start at one boundary.

Plans: everything a call does that no schedule changes (the batches, their padded ids, branches
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

    ids, mask = _padded(rows, pad_id)
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    both = torch.from_numpy(np.stack([ids, mask, positions]))
    on = to_device(both, device)
    out = on[0], on[1], on[2]
    return (*out, digest("left", both[0], both[1])) if keyed else out


def _padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows left-padded with pad_id to the longest, and their mask, as int64 arrays."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    columns = np.arange(width)[None, :]
    real = columns >= (width - lengths)[:, None]
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

    Requests that share a prefix (several options or emotions after one prompt) are packed into
    one row: the prompt once, then each one's continuation, which sees the prompt and itself only
    (_packed_rows); the rest run whole. What depends only on the requests (the batches, their
    padded ids and keys on the device, the picks) is planned once and kept for the next call with
    the same request objects (_Plan.of): a study scores the same probe requests under every
    schedule.
    """
    budget = token_budget or getattr(loaded, "token_budget", None) or default_token_budget(loaded.device)
    plan = _Plan.of(loaded, requests, budget)
    results: list[list[Any]] = [[None] * len(req.targets) for req in requests]
    reader = _Reader()
    start = plan.start.fresh(loaded) if plan.start else None
    for step in plan.steps:
        step.run(loaded, reader, start)
    reader.finish(results)
    return results, plan.tokens


class _Plan:
    """What token_logprobs does with a list of requests that no schedule changes: the shared start,
    the batches of whole sequences, and those of shared prompts packed with their continuations."""

    KEEP = 8  # plans kept per model (a study's calls use a few request lists, each every schedule)

    def __init__(self, loaded: Any, requests: Sequence[Request], budget: int):
        _check(requests)
        self.requests = list(requests)  # held, so that their ids, the key, stay theirs
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, req in enumerate(requests):
            if req.prefix:
                groups.setdefault(tuple(req.ids[: req.prefix]), []).append(i)
        mask_dtype = _packed_mask_dtype(loaded, requests)
        if mask_dtype is None:  # this model's attention takes no packed rows: every request runs whole
            groups = {}
        groups = {prompt: members for prompt, members in groups.items() if len(members) > 1}
        packed = {i for members in groups.values() for i in members}
        self.start = _Start.of(loaded, requests, [len(prompt) for prompt in groups])
        if self.start:  # plans are kept per model, weakly: a plan must not hold the model (each run's fresh() does)
            self.start.loaded = None
        skip = self.start.n if self.start else 0  # tokens of the shared start: not in the rows
        rows = [_whole_row(requests, i, skip) for i in range(len(requests)) if i not in packed]
        rows += [row for prompt, members in groups.items() for row in _packed_rows(requests, prompt, members, skip)]
        self.steps = _plan_rows(loaded, rows, budget, self.start, mask_dtype)  # whole and packed rows batched together
        self.tokens = skip + sum(step.tokens for step in self.steps)

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
        if not _within_window(loaded, requests):  # no padded row reaches past it
            return None
        return cls(loaded, first[:k])

    def cache(self, start: int, rows: int):
        """A KV cache of the shared start for `rows` batch rows, for a call that starts at boundary start."""
        import torch

        if start not in self.caches:
            ids, positions = self.on_device
            with torch.no_grad():
                out, _ = self.loaded.runtime.forward(
                    self.key, start=start, input_ids=ids, attention_mask=torch.ones_like(ids),
                    position_ids=positions, logits_to_keep=1, use_cache=True)
            self.caches[start] = output_cache(out)
        return _repeated(self.caches[start], rows)


@dataclass
class _Step:
    """One batch of rows: its inputs on the device, its key, its picks. A row is a whole sequence, or a
    prompt followed by its continuations (branches); a batch holding branches gets its mask built per
    run from each token's branch (_tree_mask), a batch without them a padding mask."""

    ids: Any
    mask: Any  # (rows, width) padding mask, None where the batch holds branches
    positions: Any
    key: bytes
    keep: int  # logits kept, from the right
    rows: int
    tokens: int
    picks: _Picks | None
    branches: Any = None  # (rows, width): 0 the prompt, k its k-th continuation, -1 padding
    mask_dtype: Any = None  # the 4D mask's: bool for SDPA, the model's float dtype (additive) for eager attention

    def run(self, loaded: Any, reader: _Reader, start: _Start | None) -> None:
        import torch

        mask = self.mask
        if self.branches is not None:
            mask = _tree_mask(self.branches, start.n if start else 0, self.mask_dtype)
        inputs = {"attention_mask": mask, "position_ids": self.positions, "use_cache": bool(start)}
        if start:  # continue from the shared start's KV cache, from a boundary both have recorded
            at = loaded.runtime.start_for([start.key, self.key])
            inputs.update(start=at, past_key_values=_read_once(start.cache(at, self.rows)))
        with torch.no_grad():
            logits = loaded.runtime.forward(self.key, input_ids=self.ids, logits_to_keep=self.keep, **inputs)[0].logits
        reader.read(logits, self.picks)


@dataclass
class _Row:
    """One row of a batch before padding: its tokens, each token's branch and position, and its picks
    as (index in the row, tokens, request, target)."""

    ids: list[int]
    branches: list[int]
    positions: list[int]
    picks: list[tuple[int, Sequence[int], int, int]]


def _whole_row(requests: Sequence[Request], i: int, skip: int) -> _Row:
    """Request i as one row, past the shared start's skip tokens."""
    req = requests[i]
    n = len(req.ids)
    picks = [(p - 1 - skip, wanted, i, k) for k, (p, wanted) in enumerate(req.targets)]
    return _Row(list(req.ids[skip:]), [0] * (n - skip), list(range(skip, n)), picks)


def _packed_rows(requests: Sequence[Request], prompt: tuple[int, ...], members: list[int], skip: int) -> list[_Row]:
    """A prompt and the continuations of its members, packed: the prompt once, then each member's tokens
    up to its last target, as a branch of its own at the positions it has after the prompt. A row
    holds continuations of at most max(prompt, PACKED_MIN) tokens (at least one member): each
    continuation attends over the whole row, so many long ones in a row cost more than running the
    prompt again in the next."""
    rows: list[_Row] = []
    last = len(prompt) - skip - 1  # the prompt's last token: its logits predict the first token after it
    room = max(len(prompt), PACKED_MIN)
    for i in members:
        req = requests[i]
        tail = list(req.ids[req.prefix : max(p for p, _ in req.targets)])
        if not rows or (len(rows[-1].ids) - len(prompt) + skip + len(tail) > room and rows[-1].branches[-1] > 0):
            rows.append(_Row(list(prompt[skip:]), [0] * (len(prompt) - skip), list(range(skip, len(prompt))), []))
        row = rows[-1]
        at, branch = len(row.ids), row.branches[-1] + 1
        row.picks += [(last if p == req.prefix else at + p - 1 - req.prefix, wanted, i, k)
                      for k, (p, wanted) in enumerate(req.targets)]
        row.ids += tail
        row.branches += [branch] * len(tail)
        row.positions += range(req.prefix, req.prefix + len(tail))
    return rows


# tokens of continuations a packed row may hold even after a shorter prompt
PACKED_MIN = 256


def _plan_rows(loaded, rows: list[_Row], budget: int, start: _Start | None, mask_dtype: Any) -> list[_Step]:
    """The rows in batches of similar length, left-padded, with their picks."""
    import torch

    pad = _pad_id(loaded.tokenizer)
    steps = []
    for chunk in batches_by_length([len(row.ids) for row in rows], budget, call_cost(loaded)):
        batch = [rows[c] for c in chunk]
        table = np.stack([_padded([row.ids for row in batch], pad)[0], _padded([row.branches for row in batch], -1)[0],
                          _padded([row.positions for row in batch], 0)[0]])  # ids, branches, positions
        width = table.shape[2]
        # the first logits a pick reads (a row's index i sits at width - len + i): keep from there on
        first = min(width - len(row.ids) + at for row in batch for at, _, _, _ in row.picks)
        picks = _Picks()
        for r, row in enumerate(batch):
            for at, wanted, request, target in row.picks:
                picks.add(r, width - len(row.ids) + at - first, wanted, request, target)
        both = torch.from_numpy(table)
        key = digest("rows", both)
        if start:
            key = digest("after", start.key, key)
        on = to_device(both, loaded.device)
        ids, branches, positions = on[0], on[1], on[2]
        tokens = sum(len(row.ids) for row in batch)
        if (table[1] > 0).any():
            step = _Step(ids, None, positions, key, width - first, len(batch), tokens, picks.done(loaded.device),
                         branches, mask_dtype)
        else:
            mask = (branches >= 0).long()
            if start:
                mask = torch.cat([torch.ones((len(batch), start.n), dtype=mask.dtype, device=mask.device), mask], dim=1)
            step = _Step(ids, mask, positions, key, width - first, len(batch), tokens, picks.done(loaded.device))
        steps.append(step)
    return steps


def _tree_mask(branches: Any, before: int, dtype: Any) -> Any:
    """The (rows, 1, width, before + width) attention mask of packed rows: a token sees the `before`
    tokens of the shared start, and the earlier tokens of the prompt and of its own branch; a padding
    position sees only itself (no row of the mask is empty). Boolean (True: seen) for dtype bool,
    else additive (0 or dtype's minimum) as eager attention adds it."""
    import torch

    rows, width = branches.shape
    causal = torch.ones(width, width, dtype=torch.bool, device=branches.device).tril()
    seen = causal & (branches >= 0)[:, None, :] & (
        (branches[:, :, None] == branches[:, None, :]) | (branches == 0)[:, None, :])
    seen |= torch.eye(width, dtype=torch.bool, device=branches.device)
    if before:
        seen = torch.cat([seen.new_ones(rows, width, before), seen], dim=2)
    seen = seen[:, None]
    if dtype == torch.bool:
        return seen
    return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill_(~seen, torch.finfo(dtype).min)


def _packed_mask_dtype(loaded: Any, requests: Sequence[Request]) -> Any:
    """The dtype of packed rows' masks for this model (bool for SDPA, its float dtype for eager
    attention), or None where rows cannot be packed: another attention (it takes no 4D mask), or a
    sliding window some request reaches past (a 4D mask is used as given, without the window)."""
    import torch

    from ..attention import GROUPED_SDPA

    if not _within_window(loaded, requests):
        return None
    attention = getattr(loaded.runtime.config, "_attn_implementation", None)
    if attention in ("sdpa", GROUPED_SDPA):
        return torch.bool
    if attention == "eager":
        return next(loaded.model.parameters()).dtype
    return None


def _within_window(loaded: Any, requests: Sequence[Request]) -> bool:
    """Whether every request is shorter than the model's sliding window (if it has one): a window then
    hides no token from any other."""
    window = getattr(loaded.runtime.config, "sliding_window", None)
    return not window or max((len(r.ids) for r in requests), default=0) < window


def _read_once(cache: Any) -> Any:
    """Mark a cache whose contents nothing reads after the call it is passed to: layer graphs then
    leave its layers as they were instead of copying each layer's grown keys and values into it
    (graphs.py)."""
    cache.rys_read_once = True
    return cache


def _repeated(cache: Any, rows: int) -> Any:
    """A cache whose `rows` batch rows are each the one row of cache, as views: no copy (a layer that
    grows it concatenates, layer graphs copy it into their buffers); the original is left as it was."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in sub.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and tensor.dim() > 1 and tensor.shape[0] == 1:
                setattr(layer, name, tensor.expand(rows, *tensor.shape[1:]))
    return sub


