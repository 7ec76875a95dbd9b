"""Model families as data: one TOML file per family, one loader.

    >>> from rys_search.architectures import family_for
    >>> family_for("llama").layers
    'model.layers'

Add a family by adding a file beside this one; no code changes. A model whose
config.model_type no file claims is refused with a message naming the supported ones.

A schedule changes the config's per-layer entries through one function, so the runtime,
the Hugging Face exporter and the benchmarks agree on them:

    >>> family = family_for("qwen2_moe")
    >>> entries = family.per_layer_entries(config)       # layer count, layer_types, layer sets
    >>> family.remap(entries, [0, 1, 2, 1, 2, 3])        # the same entries for that layer order
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

from ..errors import UserError

__all__ = ["Family", "LayerSet", "UnsupportedFamily", "families", "family_for", "supported_names"]


GGUF_READERS = ("transformers", "rys-search")


class UnsupportedFamily(UserError, ValueError):
    """The model's family has no data file here."""


_KEYS = {
    "name": str,
    "model_types": list,
    "layers": str,
    "text_config": str,
    "per_layer_config": list,
    "gguf_arch": str,
    "gguf_per_layer_keys": list,
    "repeat_period": int,
    "gguf_from_hf": bool,
    "gguf_rope_permute": bool,
    "gguf_tokenizer_pre": str,
}
# Keys a family file may leave out: their kind and default.
_OPTIONAL = {
    "layer_sets": (dict, {}),
    "gguf_reader": (str, "transformers"),
    "gguf_config": (dict, {}),
    "gguf_requires": (dict, {}),
    "gguf_norm_offset": (float, 0.0),
    "gguf_split": (dict, {}),
    "gguf_flatten": (list, []),
    "gguf_marker": (str, ""),
    "gguf_transpose": (list, []),
    "gguf_interleaved": (list, []),
    "gguf_rename": (dict, {}),
    "gguf_rope_scaling": (list, []),
}


@dataclass(frozen=True)
class LayerSet:
    """A config entry that lists layer indices (mlp_only_layers: the layers with a dense MLP).

    step names a config entry of a rule that adds members: layer i is one too when
    (i + 1) % step != 0 (Qwen MoE's decoder_sparse_step). Remapped, the set lists every
    member explicitly and the step becomes 1.
    """

    entry: str
    step: str = ""

    def members(self, entries: dict[str, Any]) -> set[int]:
        """The member layers, from per_layer_entries' values of the entry and its step."""
        n = entries["num_hidden_layers"]
        found = {int(i) for i in entries[self.entry]}
        step = entries.get(self.step)
        if isinstance(step, int) and step > 1:
            found |= {i for i in range(n) if (i + 1) % step != 0}
        return found


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    layers: str
    text_config: str
    per_layer_config: tuple[str, ...]
    gguf_arch: str
    gguf_per_layer_keys: tuple[str, ...]
    repeat_period: int
    gguf_from_hf: bool  # the exporter can write a GGUF from a Hugging Face checkpoint of this family
    gguf_rope_permute: bool  # llama.cpp wants q/k rows in its interleaved rotary order
    gguf_tokenizer_pre: str  # llama.cpp's pre-tokenizer name for a GGUF written from a HF tokenizer
    layer_sets: tuple[LayerSet, ...] = ()
    # who reads a GGUF of this family: "transformers", or "rys-search" (ggufread, the exporter's map
    # run backwards) for an architecture transformers does not read
    gguf_reader: str = "transformers"
    # GGUF written from a Hugging Face model (see the data files' comments):
    gguf_config: tuple[tuple[str, str, str], ...] = ()  # (metadata key after "<arch>.", config entry, type or "")
    gguf_requires: tuple[tuple[str, Any], ...] = ()  # (config entry, the value every GGUF reader assumes)
    gguf_norm_offset: float = 0.0  # added to every norm weight (Gemma's RMSNorm scales by 1 + weight)
    gguf_split: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (fused tensor, the tensors its row halves become)
    gguf_flatten: tuple[str, ...] = ()  # GGUF tensors written as 1-D (a [1, n] weight as [n])
    # A metadata key (after "<arch>.") that tells this family's GGUFs from others of the same
    # architecture (Mixtral's expert_count in a "llama" GGUF); "" for none.
    gguf_marker: str = ""
    gguf_transpose: tuple[str, ...] = ()  # tensors stored input-major (x @ W): their last two axes swapped
    gguf_interleaved: tuple[str, ...] = ()  # gguf_split tensors whose parts alternate rows, not halves
    gguf_rename: tuple[tuple[str, str], ...] = ()  # (tensor name ending, the name gguf-py's map knows)
    gguf_rope_scaling: tuple[str, ...] = ()  # RoPE scaling types llama.cpp runs for this family ("yarn")

    def layer_list(self, model: Any):
        """The model's nn.ModuleList of decoder layers."""
        return _get_path(model, self.layers)

    def config_of(self, model: Any):
        """The config object that holds num_hidden_layers and the per-layer entries."""
        return _get_path(model.config, self.text_config) if self.text_config else model.config

    def per_layer_entries(self, config: Any) -> dict[str, Any]:
        """The config's layer count and per-layer entries as they stand (what remap reads).

        Only entries the config holds are included: a per-layer list of one value per layer,
        a layer set's list and the step entry of its rule.
        """
        n = int(config.num_hidden_layers)
        entries: dict[str, Any] = {"num_hidden_layers": n}
        for key in self.per_layer_config:
            value = getattr(config, key, None)
            if isinstance(value, (list, tuple)) and len(value) == n:
                entries[key] = list(value)
        for layer_set in self.layer_sets:
            listed = getattr(config, layer_set.entry, None)
            if isinstance(listed, (list, tuple)):
                entries[layer_set.entry] = list(listed)
                step = getattr(config, layer_set.step, None) if layer_set.step else None
                if step is not None:
                    entries[layer_set.step] = step
        return entries

    def remap(self, entries: dict[str, Any], order: Sequence[int]) -> dict[str, Any]:
        """The entries for a model whose position k runs source layer order[k].

        With the identity order this gives back the entries unchanged (a set's step too).
        """
        if list(order) == list(range(entries["num_hidden_layers"])):
            return {k: list(v) if isinstance(v, list) else v for k, v in entries.items()}
        out: dict[str, Any] = {"num_hidden_layers": len(order)}
        for key in self.per_layer_config:
            if key in entries:
                out[key] = [entries[key][src] for src in order]
        for layer_set in self.layer_sets:
            if layer_set.entry in entries:
                members = layer_set.members(entries)
                out[layer_set.entry] = [pos for pos, src in enumerate(order) if src in members]
                if layer_set.step in entries:
                    out[layer_set.step] = 1
        return out


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _load(text: str, source: str) -> Family:
    data = tomllib.loads(text)
    unknown = set(data) - set(_KEYS) - set(_OPTIONAL)
    missing = set(_KEYS) - set(data)
    if unknown or missing:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    for key, kind in _KEYS.items():
        if not isinstance(data[key], kind):
            raise ValueError(f"{source}: {key} must be a {kind.__name__}")
    extra = {}
    for key, (kind, default) in _OPTIONAL.items():
        value = data.pop(key, default)
        if isinstance(value, int) and kind is float and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind):
            raise ValueError(f"{source}: {key} must be a {kind.__name__}")
        extra[key] = value
    sets = extra.pop("layer_sets")
    if not all(isinstance(v, dict) and set(v) <= {"step"} for v in sets.values()):
        raise ValueError(f"{source}: layer_sets must be a table of {{ step = \"entry\" }} tables")
    extra["layer_sets"] = tuple(LayerSet(entry, str(rule.get("step", ""))) for entry, rule in sets.items())
    if not all(isinstance(v, list) and len(v) > 1 for v in extra["gguf_split"].values()):
        raise ValueError(f"{source}: gguf_split maps a tensor to a list of the tensors it is split into")
    extra["gguf_split"] = tuple((k, tuple(v)) for k, v in extra["gguf_split"].items())
    extra["gguf_config"] = tuple(_gguf_config_entry(k, v, source) for k, v in extra["gguf_config"].items())
    extra["gguf_requires"] = tuple(extra["gguf_requires"].items())
    for key in ("gguf_flatten", "gguf_transpose", "gguf_interleaved", "gguf_rope_scaling"):
        extra[key] = tuple(extra[key])
    if not set(extra["gguf_interleaved"]) <= set(dict(extra["gguf_split"])):
        raise ValueError(f"{source}: gguf_interleaved names tensors that gguf_split does not split")
    if not all(isinstance(v, str) for v in extra["gguf_rename"].values()):
        raise ValueError(f"{source}: gguf_rename maps a tensor name's ending to another")
    extra["gguf_rename"] = tuple(extra["gguf_rename"].items())
    if extra["gguf_reader"] not in GGUF_READERS:
        raise ValueError(f"{source}: gguf_reader must be one of {', '.join(GGUF_READERS)}")
    return Family(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}, **extra)


def _gguf_config_entry(key: str, value: Any, source: str) -> tuple[str, str, str]:
    """A gguf_config value: the config entry's name (written as its Python type says), or
    { entry = "...", type = "f32" } for a value llama.cpp reads as float32 whatever the config holds."""
    if isinstance(value, str):
        return key, value, ""
    if isinstance(value, dict) and set(value) == {"entry", "type"} and value["type"] == "f32":
        return key, str(value["entry"]), value["type"]
    raise ValueError(f"{source}: gguf_config.{key} must be a config entry's name or "
                     f"{{ entry = \"...\", type = \"f32\" }}")


@lru_cache(maxsize=1)
def families() -> dict[str, Family]:
    """Every family with a data file, by name."""
    found: dict[str, Family] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            family = _load(entry.read_text(encoding="utf-8"), entry.name)
            found[family.name] = family
    return found


def supported_names() -> list[str]:
    return sorted(families())


def family_for(model_type: str) -> Family:
    """The family whose data file lists this config.model_type."""
    for family in families().values():
        if model_type in family.model_types:
            return family
    raise UnsupportedFamily(
        f"model family {model_type!r} is not supported; supported families: {', '.join(supported_names())}"
    )
