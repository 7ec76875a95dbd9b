"""Batched greedy generation under a schedule: the one generation path of rys-search.

    >>> texts, tokens = greedy_generate(loaded, prompts, 256, stop=answered)  # prompts: token-id lists
    >>> [new_ids] = generate_ids(loaded, [chat_ids(tok, "What is 17*23?")], 16)

Generate-mode probe suites and benchmarks (`evaluate`/`validate --mode generate`), `rys-search
chat` and the export's greedy reference all run through `generate_ids`.

The plan. Prompts are sorted by length, longest first, and cut into batches of at most
`token_budget` padded tokens, counting max_new_tokens for every row. The default budget is
generation_budget(loaded): on a GPU as many tokens as a static cache of KV_CACHE_BYTES holds for
the unmodified model (a decode step costs about the same for 100 rows as for 250, so fewer,
larger batches take fewer steps), within 1-8 times the logprob engine's budget; on a CPU that
budget. The plan depends on the prompts, max_new_tokens and that budget alone, and the budget on
the model's shape alone: not on free memory, not on the schedule, not on the smaller budget the
study's out-of-memory retry sets (`loaded.token_budget`, which generation ignores), not on what
ran before. In bf16 on a GPU a row's rounding depends on the shape of the batch it runs in, so
a plan that changed between runs would change the greedy texts; a fixed plan, with kernels that
are reproducible for fixed shapes (benchmarks/generation_determinism.py), gives the same texts
every time.

Prefill. A batch's prompts run once, left-padded, through the runtime's prefix reuse
(`ScheduledModel.forward`, keyed by a digest of the batch): under a schedule the call starts
at the deepest boundary before the first deviation that an earlier call recorded. The keys and
values of the unmodified layers below that boundary are recorded beside the hidden states (in
the same PrefixCache, under ("greedy-kv", key)), so the decode steps find every layer's cache.
Starting from a recorded boundary gives the same numbers as running from the embeddings: the
recorded tensors are the ones that run computed.

Decode. One token per row per step, from a static key/value cache (one slot per virtual layer,
as long as the longest prompt plus max_new_tokens) with attention masks built here from the
padding, the causal order and each layer type's sliding window. On CUDA the step is captured
once per batch as a CUDA graph and replayed; on the CPU it runs eagerly (the same code).

Ending. A row ends at its first end token (kept in generate_ids, dropped from texts) or at the
first token after which its stop predicate holds for the decoded new text. Predicates must be
monotone (once true for a text, true for every continuation of it, e.g. "contains 'The answer
is N' followed by a non-digit"): they are checked every CHECK_EVERY tokens and the row is then
cut at the first token where its predicate holds, which is where a token-by-token check would
have stopped it. A batch ends when all its rows have ended.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from ..cache_args import cache_kwargs
from .engine import _pad_id, _pad_left, batches_by_length, default_token_budget, digest

__all__ = ["CHECK_EVERY", "decoded", "end_tokens", "generate_ids", "generation_budget", "generation_plan", "greedy_generate"]

CHECK_EVERY = 8  # decode steps between two looks at the rows (end tokens, stop predicates)
KV_CACHE_BYTES = 8 << 30  # the static cache a batch's plan may fill on a GPU (the unmodified model's layers)
log = logging.getLogger(__name__)

Stop = Callable[[str], bool]


def generation_plan(lengths: Sequence[int], max_new_tokens: int, token_budget: int) -> list[list[int]]:
    """The batches (indices of prompts) for prompts of these lengths: a function of its arguments only."""
    return batches_by_length([n + max_new_tokens for n in lengths], token_budget)


def generation_budget(loaded: Any) -> int:
    """Tokens per batch (prompt + new tokens, padded) when none is given: from the model's shape alone."""
    base = default_token_budget(loaded.device)
    if getattr(loaded.device, "type", str(loaded.device)) != "cuda":
        return base
    config = loaded.runtime.config
    heads = config.num_attention_heads
    groups = getattr(config, "num_key_value_heads", None) or heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    size = next(loaded.model.parameters()).element_size()
    per_token = loaded.runtime.n_layers * 2 * groups * dim * size
    return int(min(8 * base, max(base, KV_CACHE_BYTES // per_token)))


def end_tokens(loaded: Any) -> set[int]:
    """The token ids that end a row: the generation config's end tokens, else the model's, else the tokenizer's."""
    for source in (getattr(loaded.model, "generation_config", None), loaded.model.config, loaded.tokenizer):
        ids = getattr(source, "eos_token_id", None)
        if ids is not None:
            return {int(i) for i in (ids if isinstance(ids, (list, tuple, set)) else [ids])}
    return set()


def greedy_generate(
    loaded: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    token_budget: int | None = None,
    stop: Stop | Sequence[Stop | None] | None = None,
) -> tuple[list[str], int]:
    """Greedy continuations of each prompt (token ids), decoded without special tokens and stripped.

    stop: one predicate for every prompt, or one per prompt (None: none), called with the decoded
    new text; see the module's docstring. Also returns the tokens processed (prompts + new tokens).
    """
    return decoded(loaded, prompts, generate_ids(loaded, prompts, max_new_tokens, token_budget, stop))


def decoded(loaded: Any, prompts: Sequence[Sequence[int]], new: Sequence[Sequence[int]]) -> tuple[list[str], int]:
    """generate_ids' rows as greedy_generate gives them: texts without special tokens, stripped, and the
    tokens processed (prompts + new tokens)."""
    texts = [loaded.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new]
    return texts, sum(len(p) for p in prompts) + sum(len(ids) for ids in new)


def generate_ids(
    loaded: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    token_budget: int | None = None,
    stop: Stop | Sequence[Stop | None] | None = None,
) -> list[list[int]]:
    """Per prompt, its greedy new token ids under the runtime's current schedule (an end token included)."""
    import torch

    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt needs at least one token")
    stops = list(stop) if isinstance(stop, (list, tuple)) else [stop] * len(prompts)
    if len(stops) != len(prompts):
        raise ValueError(f"{len(stops)} stop predicates for {len(prompts)} prompts")
    results: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens <= 0 or not prompts:
        return results
    budget = token_budget or generation_budget(loaded)
    ends = end_tokens(loaded)
    with torch.no_grad():
        for batch in generation_plan([len(p) for p in prompts], max_new_tokens, budget):
            rows = _Batch(loaded, [list(prompts[i]) for i in batch], max_new_tokens, ends, [stops[i] for i in batch])
            for i, ids in zip(batch, rows.run()):
                results[i] = ids
    return results


class _StaticKV:
    """Keys and values of every virtual layer in tensors allocated once; the attention layers call update().

    offset: the position of the first layer that runs (a prefill from a recorded boundary runs
    layers numbered from 0); write: the cache positions (a device tensor) the current tokens go
    to; length: how many positions update() returns (the prompt's width in the prefill, all in
    decode steps, where the mask hides what is not written yet); seen: what get_seq_length()
    answers (transformers derives unused cache positions from it; positions are always passed).
    """

    def __init__(self, n_layers: int, capacity: int):
        self.keys: list[Any] = [None] * n_layers
        self.values: list[Any] = [None] * n_layers
        self.capacity = capacity
        self.offset = 0
        self.length = 0
        self.seen = 0
        self.write: Any = None

    def _slot(self, layer: int, like_k, like_v) -> None:
        import torch

        if self.keys[layer] is None:
            b, h, _, d = like_k.shape
            self.keys[layer] = torch.zeros((b, h, self.capacity, d), dtype=like_k.dtype, device=like_k.device)
            self.values[layer] = torch.zeros((b, like_v.shape[1], self.capacity, like_v.shape[-1]),
                                             dtype=like_v.dtype, device=like_v.device)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        layer = layer_idx + self.offset
        self._slot(layer, key_states, value_states)
        self.keys[layer].index_copy_(2, self.write, key_states)
        self.values[layer].index_copy_(2, self.write, value_states)
        return self.keys[layer][:, :, : self.length], self.values[layer][:, :, : self.length]

    def put(self, layer: int, keys, values) -> None:
        """Write a recorded prompt's keys and values into a layer's slot."""
        self._slot(layer, keys, values)
        self.keys[layer][:, :, : keys.shape[2]].copy_(keys)
        self.values[layer][:, :, : values.shape[2]].copy_(values)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen


def _masks(config: Any, valid, queries, dtype):
    """Additive attention masks [rows, 1, queries, keys]: one tensor, or one per layer type.

    valid[r, j]: key position j holds a real token of row r; queries: the cache positions of the
    query tokens. A key is visible when valid, not after the query and, for a sliding-window
    layer, less than the window behind it (transformers' rule). Families whose config lists
    layer_types take a mapping from layer type to mask; the others one mask, sliding when the
    config has a window.
    """
    import torch

    keys = torch.arange(valid.shape[1], device=valid.device)
    seen = valid[:, None, :] & (keys[None, None, :] <= queries[None, :, None])
    low = torch.finfo(dtype).min

    def mask(window):
        allowed = seen if window is None else seen & (keys[None, None, :] > queries[None, :, None] - window)
        return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill_(~allowed, low)[:, None]

    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not isinstance(types, (list, tuple)):
        return mask(window)
    full = mask(None)
    out = {"full_attention": full, "sliding_attention": full if window is None else mask(window)}
    unknown = set(types) - set(out)
    if unknown:
        raise NotImplementedError(f"greedy generation does not know the layer types {sorted(unknown)}")
    return out


class _Batch:
    """One batch of the plan: prefill, decode steps, and the rows' ends."""

    def __init__(self, loaded: Any, rows: list[list[int]], max_new: int, ends: set[int], stops: list[Stop | None]):
        self.loaded, self.rows, self.max_new, self.ends, self.stops = loaded, rows, max_new, ends, stops
        self.width = max(len(r) for r in rows)
        self.decode = loaded.tokenizer.decode

    def run(self) -> list[list[int]]:
        step = self._prefill()
        n, max_new = len(self.rows), self.max_new
        self.tokens: list[list[int]] = [[] for _ in range(n)]  # the new tokens read so far, per row
        self.ended: list[int | None] = [None] * n
        done = 1
        while True:
            self._review(step.generated[:, len(self.tokens[0]) : done].tolist())
            if done == max_new or None not in self.ended:
                break
            count = min(CHECK_EVERY, max_new - done)
            step.advance(count)
            done += count
        del step
        return [row[: end or len(row)] for row, end in zip(self.tokens, self.ended)]

    def _prefill(self) -> "_Step":
        """Run the prompts (from the deepest recorded boundary) into a fresh static cache; the decode step."""
        import torch

        loaded, runtime = self.loaded, self.loaded.runtime
        device, dtype = loaded.device, next(loaded.model.parameters()).dtype
        n, width, max_new = len(self.rows), self.width, self.max_new
        ids, mask, positions = _pad_left(self.rows, _pad_id(loaded.tokenizer), "cpu")
        key = digest("greedy", ids, mask)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        capacity = -(-(width + max_new) // 16) * 16  # a multiple of 16: aligned rows for the attention kernels
        valid = torch.cat([mask.bool(), torch.ones((n, capacity - width), dtype=torch.bool, device=device)], dim=1)
        cache = _StaticKV(len(runtime.schedule), capacity)
        kv_key = ("greedy-kv", key)
        start = self._start(key, kv_key)
        for boundary in range(1, start + 1):
            recorded = runtime.prefix_cache.entries[kv_key][boundary]
            cache.put(boundary - 1, recorded[0], recorded[1])
        cache.offset, cache.length, cache.seen = start, width, 0
        cache.write = torch.arange(width, device=device)
        masks = _masks(runtime.config, valid[:, :width], torch.arange(width, device=device), dtype)
        out, _ = runtime.forward(key, start=start, input_ids=ids, attention_mask=masks, position_ids=positions,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1].argmax(-1)
        del out, masks
        self._record(cache, kv_key, start)
        # decode: what a step reads and writes lives in tensors, so that the step can be a CUDA graph
        cache.offset, cache.length, cache.seen = 0, capacity, width
        return _Step(runtime, cache, valid, first, positions[:, -1:] + 1, width, max_new, dtype)

    def _start(self, key: Any, kv_key: Any) -> int:
        """The deepest recorded boundary below which every layer's keys and values are recorded too."""
        runtime = self.loaded.runtime
        if runtime.prefix_cache is None:
            return 0
        have = runtime.prefix_cache.entries.get(kv_key, {})
        depth = 0
        while depth + 1 in have:
            depth += 1
        return runtime.start_for([key], depth) if depth else 0

    def _record(self, cache: _StaticKV, kv_key: Any, start: int) -> None:
        """Keep the prompt's keys and values of the unmodified layers this prefill ran, for later schedules."""
        import torch

        runtime = self.loaded.runtime
        prefix = runtime.prefix_cache
        top = min(runtime.deviation, len(runtime.schedule) - 1)
        if prefix is None or top <= start:
            return
        have = prefix.entries.get(kv_key, {})
        new = {layer + 1: torch.stack([cache.keys[layer][:, :, : self.width], cache.values[layer][:, :, : self.width]])
               for layer in range(start, top) if layer + 1 not in have}
        if new:
            prefix.add(kv_key, new)

    def _review(self, fresh: list[list[int]]) -> None:
        """Take each row's newest tokens; a row ends at an end token or where its stop predicate first holds."""
        for r, more in enumerate(fresh):
            row = self.tokens[r]
            lo = len(row)
            row.extend(more)
            if self.ended[r] is not None:
                continue
            end = next((p + 1 for p in range(lo, len(row)) if row[p] in self.ends), None)
            text_end = end - 1 if end is not None else len(row)  # the end token adds no text
            stop = self.stops[r]
            if stop is not None and text_end > lo and stop(self.decode(row[:text_end], skip_special_tokens=True)):
                end = next(p for p in range(lo + 1, text_end + 1) if stop(self.decode(row[:p], skip_special_tokens=True)))
            self.ended[r] = end


DECODE_ATTENTION = "rys_decode"


def _decode_attention_name() -> str:
    """Register (once) the attention the decode steps use; transformers' layers look it up by name."""
    from transformers import AttentionInterface

    if DECODE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(DECODE_ATTENTION, _decode_attention)
    return DECODE_ATTENTION


def _decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, s_aux=None,
                      **kwargs):
    """Attention of one new token per row over the static cache, the query heads of each key/value head
    stacked as that head's queries: the keys and values are read once, not repeated per query head
    (what transformers' SDPA path does for grouped-query attention with a mask).

    Gemma 2's soft-capped logits and gpt-oss's attention sinks (s_aux: a learned logit per query
    head that joins each softmax and takes weight from the keys) are computed as transformers'
    eager paths do.
    """
    import torch

    rows, heads, length, dim = query.shape
    groups = key.shape[1]
    if length != 1 or heads % groups:
        raise NotImplementedError("the decode attention takes one query token per row")
    stacked = query.reshape(rows, groups, heads // groups, dim)  # query head h reads key/value head h // (heads // groups)
    if softcap is None and s_aux is None:
        out = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=attention_mask,
                                                               scale=scaling)
        return out.reshape(rows, 1, heads, dim), None
    scale = scaling if scaling is not None else dim ** -0.5
    scores = torch.matmul(stacked, key.transpose(-1, -2)) * scale
    if softcap is not None:  # cap * tanh(scores / cap) before the mask
        scores = softcap * torch.tanh(scores / softcap)
    if attention_mask is not None:
        scores = scores + attention_mask if attention_mask.dtype != torch.bool else scores.masked_fill(
            ~attention_mask, torch.finfo(scores.dtype).min)
    if s_aux is not None:  # one more column per query head, dropped after the softmax
        sinks = s_aux.to(scores.dtype).reshape(1, groups, heads // groups, 1).expand(rows, -1, -1, 1)
        scores = torch.cat([scores, sinks], dim=-1)
    weights = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    if s_aux is not None:
        weights = weights[..., :-1]
    out = torch.matmul(weights, value)
    return out.reshape(rows, 1, heads, dim), None


class _Step:
    """The decode step and its state: the token each row feeds next, its position, the cache position."""

    def __init__(self, runtime, cache: _StaticKV, valid, first, positions, width: int, max_new: int, dtype):
        import torch

        self.runtime, self.cache, self.valid, self.dtype = runtime, cache, valid, dtype
        device = valid.device
        self.tokens = first[:, None].clone()
        self.positions = positions.clone()
        self.index = torch.full((1,), width, dtype=torch.long, device=device)  # where the fed token's key goes
        self.generated = torch.zeros((first.shape[0], max_new), dtype=torch.long, device=device)
        self.generated[:, 0] = first
        self.column = width - 1  # generated column = cache index of the fed token - column
        cache.write = self.index
        self.graph: Any = None
        self.taken = 0
        self.use_graph = device.type == "cuda" and os.environ.get("RYS_SEARCH_CUDA_GRAPHS", "1") != "0"

    def step(self) -> None:
        config = self.runtime.config
        masks = _masks(config, self.valid, self.index, self.dtype)
        attention, config._attn_implementation = config._attn_implementation, _decode_attention_name()
        try:
            logits = self.runtime.model(input_ids=self.tokens, position_ids=self.positions, attention_mask=masks,
                                        use_cache=True, logits_to_keep=1,
                                        **cache_kwargs(self.runtime.model, self.cache)).logits
        finally:
            config._attn_implementation = attention
        chosen = logits[:, -1].argmax(-1)
        self.generated.index_copy_(1, self.index - self.column, chosen[:, None])
        self.tokens.copy_(chosen[:, None])
        self.positions.add_(1)
        self.index.add_(1)

    def advance(self, count: int) -> None:
        for _ in range(count):
            if self.graph is not None:
                self.graph.replay()
            elif self.use_graph and self.taken == 0:  # warm up on the capture stream, then capture the next step
                self.graph = self._warm_up_and_capture()
            else:
                self.step()
            self.taken += 1

    def _warm_up_and_capture(self):
        """Run one step eagerly on a side stream (the warm-up capture needs), then capture the step."""
        import torch

        stream, current = torch.cuda.Stream(), torch.cuda.current_stream()
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            self.step()
        current.wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=stream):
                self.step()
        except Exception as exc:  # a family whose forward cannot be captured still generates, eagerly
            log.warning("the decode step could not be captured as a CUDA graph (%s); running it eagerly", exc)
            self.use_graph = False
            torch.cuda.synchronize()
            return None
        return graph
