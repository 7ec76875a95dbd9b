"""Run a loaded causal LM under a layer schedule, sharing every weight.

    >>> runtime = ScheduledModel(model)                     # any supported family
    >>> runtime.set_schedule(LayerSchedule.parse("0-9,10-12x2,13-29"))
    >>> model(input_ids).logits                             # runs 33 virtual layers
    >>> runtime.reset()                                     # the original model, exactly

A virtual layer is the source layer itself (first use at its own position) or a shallow
clone of it: a new module object whose parameters and buffers are the source's tensors and
whose ``layer_idx`` (the KV-cache slot) is its position in the schedule. The decoder-layer
list and the config's per-layer entries (``num_hidden_layers``, ``layer_types``, as the
family's data file lists them) are swapped for the schedule's, so masks, sliding windows,
per-layer RoPE and ``DynamicCache`` follow each virtual layer's source layer. Switching
schedules only rebuilds a list of module references: no tensor is allocated.

Each position holds its own module object, and a clone has its own hook tables (a copy
of its source's when it was first made; clones are kept per (source, position), so a hook
added to a source layer later does not reach its existing clones), so hooks can tell
positions apart. transformers' own output hooks are installed before any clone exists.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from torch import nn

from .architectures import Family, family_for
from .schedule import LayerSchedule

__all__ = ["ScheduledModel"]


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
        self._original_config = {"num_hidden_layers": self.config.num_hidden_layers}
        for key in self.family.per_layer_config:
            value = getattr(self.config, key, None)
            if isinstance(value, (list, tuple)) and len(value) == self.n_layers:
                self._original_config[key] = value
        self.schedule = LayerSchedule.identity(self.n_layers)
        self._clones: dict[tuple[int, int], nn.Module] = {}
        _install_output_hooks(model)

    # ---- switching -------------------------------------------------------------------

    def set_schedule(self, schedule: LayerSchedule | str) -> LayerSchedule:
        if isinstance(schedule, str):
            schedule = LayerSchedule.parse(schedule)
        schedule.check(self.n_layers)
        if schedule.is_identity(self.n_layers):
            setattr(self._owner, self._attr, self._original_layers)
            for key, value in self._original_config.items():
                setattr(self.config, key, value)
        else:
            path = schedule.expand()
            layers = nn.ModuleList([self._virtual_layer(src, pos) for pos, src in enumerate(path)])
            setattr(self._owner, self._attr, layers)
            self.config.num_hidden_layers = len(path)
            for key, value in self._original_config.items():
                if key != "num_hidden_layers":
                    setattr(self.config, key, [value[src] for src in path])
        self.schedule = schedule
        return schedule

    def reset(self) -> None:
        self.set_schedule(LayerSchedule.identity(self.n_layers))

    @contextmanager
    def using(self, schedule: LayerSchedule | str) -> Iterator[LayerSchedule]:
        previous = self.schedule
        try:
            yield self.set_schedule(schedule)
        finally:
            self.set_schedule(previous)

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
        handles = []
        layers = self.layers
        for q, store in captured.items():
            if not 0 <= q <= len(layers):
                raise ValueError(f"boundary {q} is outside a schedule of {len(layers)} layers")
            if q < len(layers):

                def pre_hook(module, args, kwargs, _store=store):
                    _store.append(args[0] if args else kwargs["hidden_states"])

                handles.append(layers[q].register_forward_pre_hook(pre_hook, with_kwargs=True))
            else:

                def post_hook(module, args, output, _store=store):
                    _store.append(output[0] if isinstance(output, tuple) else output)

                handles.append(layers[q - 1].register_forward_hook(post_hook))
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()


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
