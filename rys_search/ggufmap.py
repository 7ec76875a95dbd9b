"""One map between a family's Hugging Face checkpoint and its GGUF form, used both ways.

    >>> for piece in tensor_pieces(state, items, family, config, n_blocks):   # export: HF -> GGUF
    ...     data = piece.from_hf(state[piece.src_key])
    >>> piece.into_hf(target, data)                                            # load: GGUF -> HF
    >>> kwargs = config_from_fields(fields, family, n_blocks)                  # GGUF metadata -> config

A GGUF tensor is a piece of one Hugging Face tensor: transposed where the family stores it
input-major, one of the row parts of a fused tensor (halves or alternate rows), flattened,
its q/k rows in llama.cpp's rotary order, a norm offset added; all of it from the family's
data file. The exporter writes `from_hf` of each piece; the GGUF reader (`ggufread`) puts
each GGUF tensor back with `into_hf`, the exact inverse, so a model exported and read back
has the same tensors. The metadata keys a GGUF holds for the config are one table
(`CONFIG_KEYS` and the family's `gguf_config`), written and read alike.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import UserError

__all__ = ["BLOCK", "CONFIG_KEYS", "TOKEN_ID_KEYS", "Piece", "config_from_fields", "config_kv", "tensor_pieces"]

BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")  # a block's GGUF tensor: its index, the rest of its name
# (metadata key after "<arch>.", config entry, GGUF value type): the config entries every family's GGUF
# holds; block_count, head_dim's other keys, RoPE and the family's own (gguf_config) are added around them.
CONFIG_KEYS = (
    ("context_length", "max_position_embeddings", "u32"),
    ("embedding_length", "hidden_size", "u32"),
    ("feed_forward_length", "intermediate_size", "u32"),
    ("attention.head_count", "num_attention_heads", "u32"),
    ("attention.head_count_kv", "num_key_value_heads", "u32"),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps", "f32"),
    ("vocab_size", "vocab_size", "u32"),
)
# special token ids a GGUF keeps under tokenizer.ggml.*, read back into the config
_TOKEN_IDS = (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
              ("padding_token_id", "pad_token_id"))
TOKEN_ID_KEYS = tuple(f"tokenizer.ggml.{key}" for key, _ in _TOKEN_IDS)


def _value_type(kind: str, value: Any) -> tuple[Any, Any]:
    import gguf

    V = gguf.GGUFValueType
    if kind == "f32":
        return float(value), V.FLOAT32
    if kind == "u32":
        return int(value), V.UINT32
    return value, V.BOOL if isinstance(value, bool) else V.UINT32 if isinstance(value, int) else V.FLOAT32


def config_kv(config: Any, family: Any, arch: str) -> list[tuple[str, Any, Any, Any]]:
    """The metadata (key, value, type, None) of CONFIG_KEYS and the family's gguf_config."""
    kv = []
    for key, entry, kind in (*CONFIG_KEYS, *family.gguf_config):
        value = getattr(config, entry, None)
        if value is not None:
            kv.append((f"{arch}.{key}", *_value_type(kind, value), None))
    return kv


def config_from_fields(fields: dict[str, Any], family: Any, n_blocks: int) -> dict[str, Any]:
    """Config entries from a GGUF's metadata (key -> value), as the exporter writes them and as
    llama.cpp's converter does: CONFIG_KEYS, the family's gguf_config, head size, RoPE, token ids."""
    arch = family.gguf_arch
    out: dict[str, Any] = {"num_hidden_layers": n_blocks}
    for key, entry, kind in (*CONFIG_KEYS, *family.gguf_config):
        value = fields.get(f"{arch}.{key}")
        if isinstance(value, list):  # a per-layer array: one config value only if every layer has it
            if len(set(value)) != 1:
                raise UserError(f"this {family.name} GGUF has a different {key} per layer ({value}); "
                                f"a Hugging Face {family.name} config holds one")
            value = value[0]
        if value is not None:
            out[entry] = _shortest(value) if kind == "f32" else value
    if f"{arch}.attention.key_length" in fields:
        out["head_dim"] = fields[f"{arch}.attention.key_length"]
    if "vocab_size" not in out and "tokenizer.ggml.tokens" in fields:
        out["vocab_size"] = len(fields["tokenizer.ggml.tokens"])
    for key, entry in _TOKEN_IDS:
        if f"tokenizer.ggml.{key}" in fields:
            out[entry] = fields[f"tokenizer.ggml.{key}"]
    rope = {"rope_type": "default", "rope_theta": float(fields.get(f"{arch}.rope.freq_base", 10000.0))}
    kind = fields.get(f"{arch}.rope.scaling.type")
    if kind not in (None, "none"):
        if kind not in family.gguf_rope_scaling:
            raise UserError(f"this {family.name} GGUF uses {kind!r} RoPE scaling, which rys-search does not read "
                            f"for {family.name}")
        rope.update(rope_type=kind, factor=float(fields[f"{arch}.rope.scaling.factor"]), truncate=True,
                    original_max_position_embeddings=int(fields[f"{arch}.rope.scaling.original_context_length"]))
        for name in ("beta_fast", "beta_slow"):
            if f"{arch}.rope.scaling.yarn_{name}" in fields:
                rope[name] = float(fields[f"{arch}.rope.scaling.yarn_{name}"])
    out["rope_parameters"] = rope
    out.update(dict(family.gguf_requires))  # what every reader of this architecture assumes
    return out


def _shortest(value: float) -> float:
    """The shortest decimal that is this float32 (1e-05, not 9.999999747378752e-06): the value the
    config held before it was written as float32."""
    return float(str(np.float32(value)))


@dataclass(frozen=True)
class Piece:
    """One GGUF tensor: which Hugging Face tensor it comes from and how."""

    src_key: str  # the Hugging Face state key
    name: str  # the GGUF tensor name
    shape: tuple[int, ...]  # the GGUF tensor's shape, numpy order (outermost first)
    transpose: bool = False  # the HF tensor is stored input-major: its last two axes swapped first
    part: int = 0  # which of `parts` row parts of a fused tensor (after the transpose)
    parts: int = 1
    dim: int = -2  # the axis the parts are cut along (a bias's rows are its last axis)
    interleaved: bool = False  # the parts alternate rows (else: consecutive blocks)
    permute: int | None = None  # heads: q/k rows in llama.cpp's rotary order
    offset: float = 0.0  # added to the values (Gemma's norms)

    def _rows(self, tensor: Any) -> Any:
        """This piece's part of the HF tensor, as a view (writable)."""
        view = tensor.transpose(-1, -2) if self.transpose else tensor
        if self.parts == 1:
            return view
        size = view.shape[self.dim]
        cut = slice(self.part, None, self.parts) if self.interleaved else slice(
            self.part * size // self.parts, (self.part + 1) * size // self.parts)
        index = [slice(None)] * view.dim()
        index[self.dim] = cut
        return view[tuple(index)]

    def from_hf(self, tensor: Any) -> np.ndarray:
        """The GGUF tensor's values (float32, GGUF shape) from the HF tensor."""
        import torch

        data = self._rows(tensor).detach().to(device="cpu", dtype=torch.float32).reshape(self.shape).numpy()
        if self.permute is not None:
            data = data.reshape(self.permute, 2, data.shape[0] // self.permute // 2, *data.shape[1:]).swapaxes(
                1, 2).reshape(data.shape)
        return data + np.float32(self.offset) if self.offset else data

    def into_hf(self, tensor: Any, data: np.ndarray) -> None:
        """Write the GGUF tensor's values into their place in the HF tensor: from_hf undone."""
        import torch

        data = np.asarray(data, dtype=np.float32).reshape(self.shape)
        if not data.flags.writeable:  # an f32 tensor is a view of the file's read-only map
            data = data.copy()
        if self.offset:
            data = data - np.float32(self.offset)
        if self.permute is not None:
            data = data.reshape(self.permute, data.shape[0] // self.permute // 2, 2, *data.shape[1:]).swapaxes(
                1, 2).reshape(data.shape)
        rows = self._rows(tensor)
        rows.copy_(torch.from_numpy(np.ascontiguousarray(data)).reshape(rows.shape))


def tensor_pieces(state: dict[str, Any], items: Sequence[tuple[str, str]], family: Any, config: Any,
                  n_blocks: int) -> Iterator[Piece]:
    """The GGUF tensors of a model's state (tensors or meta tensors), for (source key, exported key)
    items as export.hf.tensor_plan lists them, named with gguf-py's map for n_blocks blocks."""
    import gguf

    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == family.gguf_arch)
    names = gguf.get_tensor_name_map(arch_enum, n_blocks)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    split, rename = dict(family.gguf_split), dict(family.gguf_rename)

    def ending(key: str, endings: Any) -> str | None:
        return next((f for f in endings if key.endswith("." + f)), None)

    for src_key, key in items:
        tensor = state[src_key]
        transpose = ending(key, family.gguf_transpose) is not None
        if (old := ending(key, rename)) is not None:
            key = key[: -len(old)] + rename[old]
        fused = ending(key, split)
        parts = [(key, {})] if fused is None else [
            (key[: -len(fused)] + part, {"part": k, "parts": len(split[fused]), "interleaved": fused in family.gguf_interleaved,
                                         "dim": -1 if part.endswith(".bias") else -2})
            for k, part in enumerate(split[fused])]
        for part_key, cut in parts:
            gguf_name = names.get_name(part_key, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise UserError(f"no GGUF name for tensor {src_key!r} of this {family.name} model")
            if not gguf_name.endswith((".weight", ".bias")):  # a bare parameter (experts, sinks)
                gguf_name += ".weight"
            piece = Piece(src_key, gguf_name, (), transpose=transpose, **cut)
            shape = tuple(int(d) for d in piece._rows(tensor).shape)
            block = BLOCK.match(gguf_name)
            if block and block.group(2).rpartition(".")[0] in family.gguf_flatten:
                shape = (int(np.prod(shape)),)
            permute = None
            if family.gguf_rope_permute and re.search(r"\.attn_(q|k)\.weight$", gguf_name):
                permute = n_head if ".attn_q." in gguf_name else n_kv
            offset = family.gguf_norm_offset if gguf_name.endswith("norm.weight") else 0.0
            yield dataclasses.replace(piece, shape=shape, permute=permute, offset=offset)
