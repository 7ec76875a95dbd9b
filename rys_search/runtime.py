"""Run a loaded causal LM under a layer schedule, sharing every weight.

    >>> runtime = ScheduledModel(model)                     # any supported family
    >>> runtime.set_schedule(LayerSchedule.parse("0-9,10-12x2,13-29"))
    >>> model(input_ids).logits                             # runs 33 virtual layers
    >>> runtime.reset()                                     # the original model, exactly

A virtual layer is the source layer itself (first use at its own position) or a shallow
clone of it: a new module object whose parameters and buffers are the source's tensors and
whose ``layer_idx`` (the KV-cache slot) is its position in the schedule. The decoder-layer
list and the config's per-layer entries (``num_hidden_layers``, ``layer_types``, layer sets
such as ``mlp_only_layers``, as the family's data file lists them; Family.remap) are swapped
for the schedule's, so masks, sliding windows, per-layer RoPE and ``DynamicCache`` follow each
virtual layer's source layer. Switching
schedules only rebuilds a list of module references: no tensor is allocated.

Each position holds its own module object, and a clone has its own hook tables (a copy
of its source's when it was first made; clones are kept per (source, position), so a hook
added to a source layer later does not reach its existing clones), so hooks can tell
positions apart. transformers' own output hooks are installed before any clone exists.

Prefix reuse: every schedule runs the unmodified model's layers up to its first deviating
position, so a forward call's hidden states there are the same for every schedule.
`ScheduledModel.forward(key, ...)` records them per call (key: a digest of the call's
inputs) in a `PrefixCache` and later schedules start from the deepest recorded boundary at or
before their deviation, feeding the recorded state in as ``inputs_embeds`` to the remaining
layers only (and, by a pre-hook, as the first remaining layer's input, so a family that scales
inputs_embeds on the way, as Granite does, still starts from the recorded state):

    >>> out, states = runtime.forward(key, capture=[12], input_ids=ids, attention_mask=mask)
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterable, Iterator, Sequence

from torch import nn

from .architectures import Family, family_for
from .attention import use_grouped_sdpa
from .cache_args import cache_kwargs
from .graphs import LayerGraphs, graph_layers, graph_setting, ungraph_layers
from .norms import fuse_norms
from .rotary import fuse_rotary
from .schedule import LayerSchedule

__all__ = ["PrefixCache", "ScheduledModel"]


class ScheduledModel:
    """Owns the schedule of one loaded model; the model object itself is used as usual."""

    def __init__(self, model: nn.Module, family: Family | None = None):
        self.model = model
        self.family = family or family_for(model.config.model_type)
        self.config = self.family.config_of(model)
        owner_path, _, self._attr = self.family.layers.rpartition(".")
        self._owner = model
        for part in filter(None, owner_path.split(".")):
            self._owner = getattr(self._owner, part)
        self._original_layers: nn.ModuleList = getattr(self._owner, self._attr)
        self.n_layers = len(self._original_layers)
        if self.config.num_hidden_layers != self.n_layers:
            raise ValueError(
                f"config says {self.config.num_hidden_layers} layers but the model has {self.n_layers}"
            )
        self._original_config = self.family.per_layer_entries(self.config)
        self.schedule = LayerSchedule.identity(self.n_layers)
        self._clones: dict[tuple[int, int], nn.Module] = {}
        self._suffixes: dict[int, nn.ModuleList] = {}  # the current schedule's layers from a start on
        self.deviation = self.n_layers  # first position whose layer differs from the unmodified model's
        self.prefix_cache = PrefixCache.for_model(model)
        _install_output_hooks(model)
        from .compiling import compile_layers, compile_setting  # fused elementwise work; RYS_SEARCH_COMPILE=0: off

        device = next(model.parameters()).device
        # on a GPU: RMSNorms in two kernels, rotary in four passes, grouped heads read in place
        # (norms.py, rotary.py, attention.py)
        self.fused_norms = fuse_norms(model) if device.type == "cuda" else 0
        self.fused_rotary = fuse_rotary(model) if device.type == "cuda" else 0
        self.grouped_sdpa = use_grouped_sdpa(self.config, device)
        mode = compile_setting(device, sum(p.numel() for p in model.parameters()))
        self.compiled = compile_layers(self._original_layers, mode) if mode else 0  # before any clone is made
        self.graphs = None  # on a GPU each layer call is a CUDA graph's replay (graphs.py), compiled or not
        if graph_setting(device):
            self.use_graphs(LayerGraphs(device))

    def use_graphs(self, graphs: LayerGraphs | None) -> None:
        """Replay layer calls through graphs from now on (None: eagerly); only before any clone is made."""
        if self._clones:
            raise RuntimeError("layer graphs must be set up before the schedule's clones are made")
        if graphs is not None:
            graph_layers(self._original_layers, graphs)
        else:
            ungraph_layers(self._original_layers)
        self.graphs = graphs

    # ---- switching -------------------------------------------------------------------

    def set_schedule(self, schedule: LayerSchedule | str) -> LayerSchedule:
        if isinstance(schedule, str):
            schedule = LayerSchedule.parse(schedule)
        schedule.check(self.n_layers)
        self.schedule = schedule
        path = schedule.expand()
        self.deviation = next((pos for pos, src in enumerate(path) if pos != src), len(path))
        self._suffixes = {}
        self._apply(0)
        return schedule

    def _apply(self, start: int) -> None:
        """Install the schedule's layers path[start:] (positions counted from start) and their config."""
        if start == 0 and self.schedule.is_identity(self.n_layers):
            setattr(self._owner, self._attr, self._original_layers)
            for key, value in self._original_config.items():
                setattr(self.config, key, value)
            return
        path = self.schedule.expand()
        if start not in self._suffixes:
            self._suffixes[start] = nn.ModuleList(
                [self._virtual_layer(src, pos) for pos, src in enumerate(path[start:])])
        setattr(self._owner, self._attr, self._suffixes[start])
        for key, value in self.family.remap(self._original_config, path[start:]).items():
            setattr(self.config, key, value)

    def reset(self) -> None:
        self.set_schedule(LayerSchedule.identity(self.n_layers))

    @contextmanager
    def using(self, schedule: LayerSchedule | str) -> Iterator[LayerSchedule]:
        previous = self.schedule
        try:
            yield self.set_schedule(schedule)
        finally:
            self.set_schedule(previous)

    @contextmanager
    def _layers_from(self, start: int) -> Iterator[nn.ModuleList]:
        """Inside the block the model runs only the schedule's layers from position start on."""
        if start:
            self._apply(start)
        try:
            yield self.layers
        finally:
            if start:
                self._apply(0)

    # ---- forward with prefix reuse -----------------------------------------------------

    def start_for(self, keys: Sequence[Any], limit: int | None = None) -> int:
        """The deepest boundary every call in keys can start from under this schedule (0: none).

        Calls that belong together (a prompt and the continuations that read its KV cache) must
        start at the same boundary: pass all their keys. At least one layer always runs.
        """
        cap = min(self.deviation, len(self.schedule) - 1, self.deviation if limit is None else limit)
        if self.prefix_cache is None or cap < 1 or any(k is None for k in keys):
            return 0
        return self.prefix_cache.start(keys, cap)

    def forward(self, key: Any = None, *, capture: Iterable[int] = (), start: int | None = None, **inputs):
        """``model(**inputs)`` under the schedule, starting past the unmodified prefix where recorded.

        key: a digest of everything that determines the hidden states (ids, attention mask,
        position ids, the cached prompt it continues); None: no reuse. capture: boundaries whose
        hidden state is returned (as in capture_states, one tensor each). start: the boundary to
        start from (see start_for); by default the deepest usable one, never past a captured
        boundary. Returns (model output, {boundary: hidden state}).
        """
        capture = sorted(set(capture))
        if "past_key_values" in inputs:  # under the name this transformers gives it (cache_args)
            inputs = {k: v for k, v in inputs.items() if k != "past_key_values"} | cache_kwargs(
                self.model, inputs["past_key_values"])
        if start is None:
            start = self.start_for([key], min(capture) if capture else None)
        cache = self.prefix_cache
        entry = cache.entries.get(key, {}) if cache is not None and key is not None else {}
        if start and start not in entry:
            raise ValueError(f"no recorded hidden state at boundary {start} for this call")
        record = []
        if cache is not None and key is not None:  # unmodified states this run passes through
            record = [b for b in range(start + 1, min(self.deviation, len(self.schedule) - 1) + 1) if b not in entry]
        wanted = sorted(set(record) | {q for q in capture if q > start or (q == start == 0)})
        states: dict[int, Any] = {}
        if start and start in capture:
            states[start] = entry[start]
        if start:
            inputs = {k: v for k, v in inputs.items() if k != "input_ids"}
            inputs["inputs_embeds"] = entry[start]
        seen: dict[int, Any] = {}
        graphs = self.graphs
        if graphs is not None and (inputs.get("output_hidden_states") or inputs.get("output_attentions")):
            graphs = None  # transformers' own hooks would keep the graphs' buffers
        keep = seen.__setitem__ if graphs is None else (lambda q, state: seen.__setitem__(q, graphs.own(state)))
        with self._layers_from(start) as layers, _fed(layers[0], entry.get(start) if start else None), \
                _hooks(layers, [q - start for q in wanted], keep), graphs.active() if graphs else nullcontext():
            output = self.model(**inputs)
        for q in wanted:
            states[q] = seen[q - start]
        if record:
            cache.add(key, {b: states[b] for b in record})
        return output, {q: states[q] for q in capture}

    # ---- inspection ------------------------------------------------------------------

    @property
    def layers(self) -> nn.ModuleList:
        return getattr(self._owner, self._attr)

    def weight_copies(self) -> int:
        """How many parameter or buffer tensors of the scheduled layers the original layers lack (0)."""
        original = {t.data_ptr() for t in _tensors(self._original_layers)}
        return sum(1 for t in _tensors(self.layers) if t.data_ptr() not in original)

    def _virtual_layer(self, src: int, pos: int) -> nn.Module:
        if src == pos:
            return self._original_layers[src]
        key = (src, pos)
        if key not in self._clones:  # a clone depends only on (source, position): make it once
            self._clones[key] = _with_layer_index(self._original_layers[src], pos)
        return self._clones[key]

    @contextmanager
    def capture_states(self, boundaries: Iterable[int]) -> Iterator[dict[int, list[Any]]]:
        """Record the hidden state at each boundary, one tensor per forward call.

        Boundary q is the residual stream between virtual layers q-1 and q: the input of layer
        q, or for q == len(schedule) the output of the last layer (before the final norm).
        Every position holds its own module object, so a hook on one position never fires at
        another position that runs the same weights. The hooks are removed on exit.
        """
        captured: dict[int, list[Any]] = {q: [] for q in boundaries}
        with _hooks(self.layers, captured, lambda q, state: captured[q].append(state)):
            yield captured


@contextmanager
def _fed(layer: nn.Module, state: Any) -> Iterator[None]:
    """The layer's hidden-state input is state, whatever the model made of inputs_embeds on the way.

    Some families transform inputs_embeds before the first layer (Granite multiplies it by
    embedding_multiplier); a recorded residual stream must reach the layer as it is.
    """
    if state is None:
        yield
        return

    def pre_hook(module, args, kwargs):
        if args:
            return (state, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": state}

    handle = layer.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _hooks(layers: nn.ModuleList, boundaries: Iterable[int], record: Callable[[int, Any], None]) -> Iterator[None]:
    """Call record(q, state) with the hidden state at each boundary q of layers whenever it passes.

    Boundary q is the input of layer q, or for q == len(layers) the last layer's output.
    """
    handles = []
    try:
        for q in boundaries:
            if not 0 <= q <= len(layers):
                raise ValueError(f"boundary {q} is outside a schedule of {len(layers)} layers")
            if q < len(layers):

                def pre_hook(module, args, kwargs, _q=q):
                    record(_q, args[0] if args else kwargs["hidden_states"])

                handles.append(layers[q].register_forward_pre_hook(pre_hook, with_kwargs=True))
            else:

                def post_hook(module, args, output, _q=q):
                    record(_q, output[0] if isinstance(output, tuple) else output)

                handles.append(layers[q - 1].register_forward_hook(post_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class PrefixCache:
    """Hidden states of the unmodified model at layer boundaries, per forward call.

    entries[key][b] is the input of layer b (the residual stream after the first b layers) for
    the call whose inputs digest to key. Other results of the unmodified model that every
    schedule would compute again (the fixed-point objective's next-token log-probs) are kept in
    the same budget (keep, kept). Entries are added until `budget` bytes are held, then calls that
    are not recorded are recomputed; nothing is evicted. The budget comes from
    $RYS_SEARCH_PREFIX_CACHE (GiB, 0 turns reuse off), else 40% of the free memory of the
    model's GPU, or 1 GiB on the CPU.
    """

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.used = 0
        self.entries: dict[Any, dict[int, Any]] = {}
        self.results: dict[Any, Any] = {}

    @classmethod
    def for_model(cls, model: nn.Module) -> "PrefixCache | None":
        setting = os.environ.get("RYS_SEARCH_PREFIX_CACHE")
        if setting is not None:
            budget = float(setting) * 2**30
        else:
            device = next(model.parameters()).device
            if device.type == "cuda":
                import torch

                budget = 0.4 * torch.cuda.mem_get_info(device)[0]
            else:
                budget = 2**30
        return cls(int(budget)) if budget > 0 else None

    def start(self, keys: Sequence[Any], cap: int) -> int:
        """The deepest boundary at most cap recorded for every key (0 if none)."""
        common: set[int] | None = None
        for key in keys:
            have = {b for b in self.entries.get(key, ()) if b <= cap}
            common = have if common is None else common & have
            if not common:
                return 0
        return max(common) if common else 0

    def add(self, key: Any, states: dict[int, Any]) -> None:
        size = sum(t.numel() * t.element_size() for t in states.values())
        if self.used + size > self.budget:
            return
        self.entries.setdefault(key, {}).update(states)
        self.used += size

    def keep(self, key: Any, value: Any) -> None:
        """Keep a tensor the unmodified model gives for key, if the budget holds it (read back: kept)."""
        size = value.numel() * value.element_size()
        if key in self.results or self.used + size > self.budget:
            return
        self.results[key] = value
        self.used += size

    def kept(self, key: Any) -> Any:
        """What keep kept for key, or None."""
        return self.results.get(key)

    def clear(self) -> None:
        self.entries.clear()
        self.results.clear()
        self.used = 0


def _install_output_hooks(model: nn.Module) -> None:
    """Have transformers hook the original layers for output_hidden_states now, before any clone.

    transformers installs those hooks lazily, on the first forward that asks for hidden
    states, on the layers then in the model; clones copy their source's hooks when made.
    """
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older transformers: hidden states come from the forward loop itself
        return
    for module in model.modules():
        if hasattr(type(module), "_can_record_outputs") and getattr(module, "_can_record_outputs", None):
            maybe_install_capturing_hooks(module)


def _tensors(module: nn.Module) -> Iterator[Any]:
    yield from module.parameters()
    yield from module.buffers()


def _has_layer_index(module: nn.Module) -> bool:
    return any(isinstance(getattr(m, "layer_idx", None), int) for m in module.modules())


def _with_layer_index(module: nn.Module, index: int) -> nn.Module:
    """A shallow clone sharing all tensors, with every ``layer_idx`` in its tree set to index.

    Only modules on the way to a ``layer_idx`` are cloned; other children are shared as is.
    """
    if not _has_layer_index(module):
        return module
    clone = copy.copy(module)  # new __dict__, same _parameters/_buffers dicts (shared tensors)
    for name, value in module.__dict__.items():
        if "hooks" in name and isinstance(value, dict):  # own hook tables: a hook on a clone stays on it
            setattr(clone, name, type(value)(value))
    clone._modules = {
        name: None if child is None else _with_layer_index(child, index) for name, child in module._modules.items()
    }
    if isinstance(getattr(module, "layer_idx", None), int):
        clone.layer_idx = index
    return clone
