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
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

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
        self._clones: dict[tuple[int, int], nn.Module] = {}
        self.schedule = LayerSchedule.identity(self.n_layers)

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
        if key not in self._clones:
            self._clones[key] = _with_layer_index(self._original_layers[src], pos)
        return self._clones[key]


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
    clone._modules = {
        name: None if child is None else _with_layer_index(child, index) for name, child in module._modules.items()
    }
    if isinstance(getattr(module, "layer_idx", None), int):
        clone.layer_idx = index
    return clone
