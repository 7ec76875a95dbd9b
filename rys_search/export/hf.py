"""Write a schedule as a Hugging Face checkpoint: sharded safetensors, remapped config, tokenizer.

    >>> write_hf(model, tokenizer, family, order, folder, dtype=None, progress=bar.update)

Each position k of the new model gets a copy of source layer order[k] (safetensors has no
shared tensors), written shard by shard so only one shard is in memory at a time. The
config's layer count and per-layer entries (layer_types: sliding windows, attention
patterns; MoE mlp_only_layers with decoder_sparse_step, as Family.remap writes them)
follow the source layer of each position. The tokenizer files and chat
template are saved beside the weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

__all__ = ["SHARD_BYTES", "export_bytes", "remapped_config", "tensor_plan", "write_hf"]

SHARD_BYTES = 2 << 30


def remapped_config(config: Any, family: Any, order: Sequence[int]) -> Any:
    """A copy of the model config with the layer count and per-layer entries following `order`."""
    config = copy.deepcopy(config)
    text = config
    for part in filter(None, family.text_config.split(".")):
        text = getattr(text, part)
    for key, value in family.remap(family.per_layer_entries(text), order).items():
        setattr(text, key, value)
    return config


def _renamed_keys(state: dict[str, Any], prefix: str, order: Sequence[int], skip: set[str]) -> Iterator[tuple[str, str]]:
    """(source key, key in the exported model): layers follow `order`, the rest keep their names."""
    per_layer: dict[int, list[str]] = {}
    head, tail = [], []
    for key in state:
        if key in skip:
            continue
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            per_layer.setdefault(int(index), []).append(rest)
        else:
            (tail if per_layer else head).append(key)
    yield from ((k, k) for k in head)
    for new, src in enumerate(order):
        for rest in per_layer[src]:
            yield f"{prefix}{src}.{rest}", f"{prefix}{new}.{rest}"
    yield from ((k, k) for k in tail)


def tensor_plan(model: Any, family: Any, order: Sequence[int]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The model's tensors and (source key, exported key) for each tensor the export writes."""
    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return state, list(_renamed_keys(state, family.layers + ".", order, {"lm_head.weight"} if tied else set()))


def _nbytes(tensor: Any, dtype: Any) -> int:
    """Bytes a tensor takes in the export: floating tensors in dtype, the others as they are."""
    return tensor.numel() * (dtype.itemsize if tensor.is_floating_point() else tensor.element_size())


def export_bytes(model: Any, family: Any, order: Sequence[int], dtype: Any = None) -> int:
    """The weight bytes write_hf will write for this layer order."""
    state, items = tensor_plan(model, family, order)
    dtype = dtype or next(model.parameters()).dtype
    return sum(_nbytes(state[src], dtype) for src, _ in items)


def write_hf(model: Any, tokenizer: Any, family: Any, order: Sequence[int], folder: str | Path,
             dtype: Any = None, progress: Callable[[int], None] | None = None,
             shard_bytes: int = SHARD_BYTES) -> list[str]:
    """Write the checkpoint into `folder` (which must exist and be empty); return the weight files."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state, items = tensor_plan(model, family, order)
    dtype = dtype or next(model.parameters()).dtype

    def size(key: str) -> int:
        return _nbytes(state[key], dtype)

    shards: list[list[tuple[str, str]]] = [[]]
    filled = 0
    for src, new in items:
        if shards[-1] and filled + size(src) > shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append((src, new))
        filled += size(src)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))])
    weight_map = {}
    for name, shard in zip(names, shards):
        tensors = {}
        for src, new in shard:
            t = state[src].detach()
            t = t.to(device="cpu", dtype=dtype) if t.is_floating_point() else t.to("cpu")
            tensors[new] = t.clone().contiguous()  # its own storage: repeated layers share none
            weight_map[new] = name
        save_file(tensors, folder / name, metadata={"format": "pt"})
        if progress is not None:
            progress(sum(t.numel() * t.element_size() for t in tensors.values()))
        del tensors
    if len(names) > 1:
        total = sum(size(src) for src, _ in items)
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    config = remapped_config(model.config, family, order)
    config.dtype = dtype
    config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return names
