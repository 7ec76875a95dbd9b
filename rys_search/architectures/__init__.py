"""Model families as data: one TOML file per family, one loader.

    >>> from rys_search.architectures import family_for
    >>> family_for("llama").layers
    'model.layers'

Add a family by adding a file beside this one; no code changes. A model whose
config.model_type no file claims is refused with a message naming the supported ones.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import UserError
from ..tables import check_table

__all__ = ["Family", "UnsupportedFamily", "families", "family_for", "supported_names"]


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

    def layer_list(self, model: Any):
        """The model's nn.ModuleList of decoder layers."""
        return _get_path(model, self.layers)

    def config_of(self, model: Any):
        """The config object that holds num_hidden_layers and the per-layer entries."""
        return _get_path(model.config, self.text_config) if self.text_config else model.config


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _load(text: str, source: str) -> Family:
    data = check_table(tomllib.loads(text), _KEYS, source, required=tuple(_KEYS), error=ValueError)
    return Family(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


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
