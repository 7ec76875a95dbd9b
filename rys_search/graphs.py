"""Decoder-layer calls replayed as CUDA graphs: one replay a layer call where an eager layer launches
about 33 kernels, each with its Python around it.

    >>> graphs = LayerGraphs(device)                # ScheduledModel makes one on a GPU for eager layers
    >>> graph_layers(runtime_layers, graphs)         # before any clone is made
    >>> with graphs.active():                        # ScheduledModel.forward
    ...     model(**inputs)
    RYS_SEARCH_CUDA_GRAPHS=0 rys-search run ...     # off (and generation's decode graphs with it)

Why: SmolLM2 on the H100 spent 0.24-0.36 s a schedule on the default objectives while its GPU was
busy 0.088 s of it: about 5,600 kernel launches a schedule, 168 layer calls of about 33 launches.
With graphs (H100, eager layers): `benchmarks/throughput.py --model SmolLM2 --variants engine
--schedules 30` 0.160 and 0.144 s a schedule against 0.242 and 0.217 without (runs interleaved);
`benchmarks/layer_graphs.py`: the same scores of every default objective over 31 schedules
(largest difference 0).

A layer call is described by its arguments: the shapes, dtypes and strides of its tensors, its
plain values, and for a KV cache the number of tokens already cached. That is its signature. The
engine's batches depend only on the requests, never on the schedule, so every schedule brings the
same few signatures back, and every virtual layer is one of the model's layers (a clone shares its
source's weights). Per signature the runner holds static buffers, one for each tensor argument,
shared by the graphs of every layer called with it. The first call of a signature runs eagerly
(the warm-up a capture needs, on the capture stream); the first call of each layer after it is
captured, then replayed; later calls copy in the arguments that changed and replay. The hidden
state is not copied between layers: each graph writes its output into the signature's hidden-state
buffer, the next layer's input. Graphs are kept per (layer weights, signature).

The KV cache: a transformers DynamicCache whose layer is a plain DynamicLayer (the engine's shared
start and the batches that continue from it) is passed to the captured call as a stand-in whose `update`
writes the new keys and values after the cached ones in a static buffer and returns the whole
buffer, as DynamicLayer's concatenation returns the whole; after the replay the cache's layer
holds a copy (a cache marked `rys_read_once`, whose contents the caller will not read after the
call, as the engine's batches after the shared start, keeps what it held). Other caches (generation's static one,
sliding-window layers), arguments the runner cannot describe, and layer classes whose capture
fails (an operation that waits for the GPU, such as a mixture of experts' routing) run eagerly; a
failed capture logs one warning.

Memory: every graph allocates from one shared pool and nothing allocated there outlives a replay
(outputs go to buffers outside it), so graphs can be replayed in any order. The static buffers
are a few activations per signature; `clear()` frees everything (after running out of memory, and
before a signature beyond MAX_SIGNATURES: a study's engine makes about 8, SmolLM2's default
objectives 7).

Hidden states the runtime records at boundaries are copies (`own`): the buffer they would point
at is overwritten by the next layer's replay.

On a CPU, `LayerGraphs(device, emulate=True)` keeps the same buffers and bookkeeping with a
"replay" that calls the captured function again on the static buffers (tests).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .errors import first_line

__all__ = ["LayerGraphs", "graph_layers", "graph_setting", "ungraph_layers"]

log = logging.getLogger(__name__)
_GRAPHED: dict[type, type] = {}
_PLAIN = (type(None), bool, int, float, str)
_UNSUPPORTED = object()  # a signature whose layer output is not one hidden-state tensor: eager
_CACHE = object()  # where a signature's call takes the KV cache
MAX_SIGNATURES = 64  # more and every graph and buffer is dropped first (a study's engine makes about 8)


def graph_setting(device: Any) -> bool:
    """Whether layer calls on device are replayed as CUDA graphs (a GPU, unless RYS_SEARCH_CUDA_GRAPHS=0)."""
    value = os.environ.get("RYS_SEARCH_CUDA_GRAPHS", "1").strip().lower()
    return getattr(device, "type", str(device)) == "cuda" and value not in ("0", "off", "false", "no")


def graph_layers(layers: Iterable[Any], graphs: "LayerGraphs") -> int:
    """Swap each layer's class for one whose calls go through graphs while it is active; how many swapped."""
    swapped = 0
    for layer in layers:
        if getattr(type(layer), "_rys_graph_base", None) is None:
            layer.__class__ = _graphed_class(type(layer))
            swapped += 1
        layer._rys_graphs = graphs  # clones copy it with the rest of the layer's attributes
    return swapped


def ungraph_layers(layers: Iterable[Any]) -> None:
    """Back to the classes they had (the layers themselves are untouched)."""
    for layer in layers:
        base = getattr(type(layer), "_rys_graph_base", None)
        if base is not None:
            layer.__class__ = base
        layer.__dict__.pop("_rys_graphs", None)


def _graphed_class(base: type) -> type:
    if base not in _GRAPHED:

        def forward(self, *args, **kwargs):
            graphs = self.__dict__.get("_rys_graphs")
            if graphs is None or not graphs.on:
                return base.forward(self, *args, **kwargs)
            return graphs.call(self, base.forward, args, kwargs)

        _GRAPHED[base] = type(f"Graphed{base.__name__}", (base,), {"forward": forward, "_rys_graph_base": base,
                                                                   "__module__": base.__module__})
    return _GRAPHED[base]


class LayerGraphs:
    """The graphs and static buffers of one model's layers (see the module's docstring)."""

    def __init__(self, device: Any, emulate: bool = False):
        self.device = device
        self.emulate = emulate
        self.on = False
        self.counts: Counter = Counter()  # eager, captured, replayed layer calls
        self._signatures: dict[tuple, Any] = {}
        self._graphs: dict[tuple, Any] = {}
        self._layers: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
        self._broken: set[type] = set()
        self._owned: dict[int, Any] = {}  # id -> hidden-state buffer
        self._pool = self._stream = None

    @contextmanager
    def active(self) -> Iterator["LayerGraphs"]:
        previous, self.on = self.on, True
        try:
            yield self
        finally:
            self.on = previous

    def own(self, state: Any) -> Any:
        """state, or a copy of it where it is a buffer a later replay overwrites."""
        return state.clone() if self._owned.get(id(state)) is state else state

    def clear(self) -> None:
        """Drop every graph and buffer (their memory returns to torch's allocator)."""
        self._signatures.clear()
        self._graphs.clear()
        self._owned.clear()
        self._pool = None

    # ---- one layer call ------------------------------------------------------------------

    def call(self, layer: Any, forward: Callable, args: tuple, kwargs: dict) -> Any:
        described = None if type(layer) in self._broken else self._describe(layer, args, kwargs)
        if described is None:
            self.counts["eager"] += 1
            return forward(layer, *args, **kwargs)
        key, tensors, cache, index, weights = described
        signature = self._signatures.get(key)
        if signature is None:
            if len(self._signatures) >= MAX_SIGNATURES:  # new kinds of calls keep coming: start again
                self.clear()
            return self._warm_up(layer, forward, args, kwargs, key, tensors, cache, index)
        if signature is _UNSUPPORTED:
            self.counts["eager"] += 1
            return forward(layer, *args, **kwargs)
        signature.load(tensors, cache, index)
        graph = self._graphs.get((weights, key))
        if graph is None:
            graph = self._capture(layer, forward, signature)
            if graph is None:
                self.counts["eager"] += 1
                return forward(layer, *args, **kwargs)
            self._graphs[(weights, key)] = graph
            self.counts["captured"] += 1
        graph.replay()
        signature.last[0] = None  # the replay wrote the hidden-state buffer: it no longer holds that input
        self.counts["replayed"] += 1
        signature.store(cache, index)
        return signature.hidden

    def _layer(self, layer: Any) -> tuple:
        """(what identifies the layer's weights and code, its KV-cache index or None), cached per module."""
        info = self._layers.get(layer)
        if info is None:
            first = next(layer.parameters(), None)
            index = next((m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)),
                         None)
            info = ((type(layer), id(first)), index)
            self._layers[layer] = info
        return info

    def _describe(self, layer: Any, args: tuple, kwargs: dict):
        """(signature key, tensor arguments in order, KV cache or None, its layer index, weights key), or
        None where a call cannot be replayed."""
        import torch

        if not args or not isinstance(args[0], torch.Tensor):
            return None
        weights, index = self._layer(layer)
        key: list = []
        tensors: list = []
        cache = None
        for slot, value in [*enumerate(args), *kwargs.items()]:
            if isinstance(value, torch.Tensor):
                key.append((slot, _meta(value)))
                tensors.append(value)
            elif _tensors(value):
                key.append((slot, type(value), tuple(_meta(v) for v in value)))
                tensors.extend(value)
            elif isinstance(value, _PLAIN):
                key.append((slot, value))
            elif cache is None and index is not None and _plain_cache(value, index):
                cache = value
                past = _past(value, index)
                key.append((slot, "cache", None if past is None else (_meta(past[0]), _meta(past[1]))))
            else:
                return None
        return tuple(key), tensors, cache, index, weights

    def _warm_up(self, layer, forward, args, kwargs, key, tensors, cache, index):
        """The signature's first call, eagerly on the capture stream; learns the new keys' and values' shapes."""
        recorder = _Recorder(cache) if cache is not None else None
        args, kwargs = _substitute(args, kwargs, cache, recorder)
        with self._on_stream():
            out = forward(layer, *args, **kwargs)
        hidden = tensors[0]
        same = getattr(out, "shape", None) == hidden.shape and getattr(out, "dtype", None) == hidden.dtype
        if same and (cache is None or recorder.shapes is not None):
            self._signatures[key] = _Signature(tensors, args, kwargs, cache, index, recorder)
            self._owned[id(self._signatures[key].hidden)] = self._signatures[key].hidden
        else:
            self._signatures[key] = _UNSUPPORTED
        self.counts["eager"] += 1
        return out

    def _capture(self, layer: Any, forward: Callable, signature: "_Signature") -> Any:
        args, kwargs = signature.arguments()

        def run() -> None:
            signature.hidden.copy_(forward(layer, *args, **kwargs))

        if self.emulate:
            return _Rerun(run)
        import torch

        from .scoring.memory import out_of_memory

        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            with self._on_stream():
                graph.capture_begin(self._pool)
                try:
                    run()
                finally:
                    graph.capture_end()
        except Exception as exc:
            if out_of_memory(exc):
                raise
            self._broken.add(type(layer))
            log.warning("%s could not be captured as a CUDA graph (%s: %s); its calls run eagerly",
                        type(layer).__name__, type(exc).__name__, first_line(exc, "")[:200])
            return None
        return graph

    @contextmanager
    def _on_stream(self) -> Iterator[None]:
        """Inside, work goes to the capture stream (after everything queued before), as a capture wants."""
        if self.emulate or getattr(self.device, "type", str(self.device)) != "cuda":
            yield
            return
        import torch

        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        try:
            with torch.cuda.stream(self._stream):
                yield
        finally:
            current.wait_stream(self._stream)


def _version(tensor: Any) -> int | None:
    """The tensor's version counter (bumped by every in-place change), None where it has none
    (a tensor made under torch.inference_mode): such a tensor is copied in at every call."""
    try:
        return tensor._version
    except RuntimeError:
        return None


def _tensors(value: Any) -> bool:
    """Whether value is a non-empty tuple or list of tensors (rotary's (cos, sin)): one argument, several buffers."""
    import torch

    return isinstance(value, (tuple, list)) and bool(value) and all(isinstance(v, torch.Tensor) for v in value)


def _meta(tensor: Any) -> tuple:
    return tuple(tensor.shape), tensor.stride(), tensor.dtype, tensor.device


def _plain_cache(value: Any, index: int) -> bool:
    """Whether value is a DynamicCache whose layer index is (or will be made) a plain DynamicLayer."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:
        return False
    if not isinstance(value, DynamicCache) or getattr(value, "offloading", False):
        return False
    if index < len(value.layers):
        return type(value.layers[index]) is DynamicLayer
    return getattr(value, "layer_class_to_replicate", None) is DynamicLayer


def _past(cache: Any, index: int):
    """The cached (keys, values) of the layer, or None when it holds none yet."""
    if index >= len(cache.layers):
        return None
    layer = cache.layers[index]
    if not layer.is_initialized or layer.keys is None or layer.keys.numel() == 0:
        return None
    return layer.keys, layer.values


def _substitute(args: tuple, kwargs: dict, cache: Any, stand_in: Any) -> tuple[tuple, dict]:
    """args and kwargs with stand_in wherever cache was (as they are for no cache)."""
    if cache is None:
        return args, kwargs
    return (tuple(stand_in if a is cache else a for a in args),
            {k: stand_in if v is cache else v for k, v in kwargs.items()})


class _Recorder:
    """Stands in for a DynamicCache in a warm-up call: updates it and notes the new keys' and values' shapes."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.shapes = None

    def update(self, keys, values, layer_idx, *args, **kwargs):
        self.shapes = (keys.shape, keys.dtype, values.shape, values.dtype)
        return self.cache.update(keys, values, layer_idx, *args, **kwargs)


class _Writer:
    """Stands in for a DynamicCache in a captured call: new keys and values after the cached ones, in place."""

    def __init__(self, signature: "_Signature"):
        self.signature = signature

    def update(self, keys, values, layer_idx, *args, **kwargs):
        s = self.signature
        s.keys[:, :, s.cached:].copy_(keys)
        s.values[:, :, s.cached:].copy_(values)
        return s.keys, s.values


class _Signature:
    """The static buffers of one signature: its tensor arguments (the first: the hidden state) and KV buffers."""

    def __init__(self, tensors: list, args: tuple, kwargs: dict, cache: Any, index: int | None, recorder: Any):
        import torch

        self.buffers = [torch.empty_like(t) for t in tensors]
        self.hidden = self.buffers[0]
        self.last: list = [None] * len(tensors)  # (tensor, version) last copied into each buffer
        self._args, self._kwargs = self._static(args, kwargs, tensors)
        self.cached, self.keys, self.values = 0, None, None
        if cache is not None:
            past = _past(cache, index)  # after the warm-up's update: cached + new
            (k_shape, k_dtype, v_shape, v_dtype) = recorder.shapes
            self.cached = past[0].shape[-2] - k_shape[-2]
            self.keys = torch.empty((*k_shape[:-2], self.cached + k_shape[-2], k_shape[-1]), dtype=k_dtype,
                                    device=self.hidden.device)
            self.values = torch.empty((*v_shape[:-2], self.cached + v_shape[-2], v_shape[-1]), dtype=v_dtype,
                                      device=self.hidden.device)

    def _static(self, args: tuple, kwargs: dict, tensors: list) -> tuple[list, dict]:
        """The call's arguments with each tensor replaced by its buffer (the cache stays a placeholder)."""
        import torch

        buffer = {id(t): b for t, b in zip(tensors, self.buffers)}

        def swap(value):
            if isinstance(value, _Recorder):
                return _CACHE
            if isinstance(value, torch.Tensor):
                return buffer[id(value)]
            if _tensors(value):
                return type(value)(buffer[id(v)] for v in value)
            return value

        return [swap(a) for a in args], {k: swap(v) for k, v in kwargs.items()}

    def arguments(self) -> tuple[tuple, dict]:
        """The captured call's arguments: the buffers, and a writer where the cache was."""
        return _substitute(tuple(self._args), self._kwargs, _CACHE, _Writer(self))

    def load(self, tensors: list, cache: Any, index: int | None) -> None:
        """Copy in the arguments that differ from what the buffers hold, and the cached keys and values."""
        for i, (tensor, buffer) in enumerate(zip(tensors, self.buffers)):
            if tensor is buffer:
                continue
            last, version = self.last[i], _version(tensor)
            if last is not None and last[0] is tensor and version is not None and last[1] == version:
                continue
            buffer.copy_(tensor)
            self.last[i] = (tensor, version)
        if self.cached:
            keys, values = _past(cache, index)
            self.keys[:, :, : self.cached].copy_(keys)
            self.values[:, :, : self.cached].copy_(values)

    def store(self, cache: Any, index: int | None) -> None:
        """The cache's layer after the replay: what DynamicLayer.update would have left there (copies),
        unless the caller said nothing reads it again (`rys_read_once`: it keeps what it held before)."""
        if cache is None or getattr(cache, "rys_read_once", False):
            return
        from transformers.cache_utils import DynamicLayer

        while len(cache.layers) <= index:
            cache.layers.append(DynamicLayer())
        layer = cache.layers[index]
        if not layer.is_initialized:
            layer.dtype, layer.device, layer.is_initialized = self.keys.dtype, self.keys.device, True
        layer.keys, layer.values = self.keys.clone(), self.values.clone()


class _Rerun:
    """A CPU stand-in for a captured graph: replay runs the captured function again on the same buffers."""

    def __init__(self, run: Callable[[], None]):
        self.replay = run
