"""Write a schedule as one GGUF file (gguf is imported here, in ggufio and in ggufmap only).

    >>> plan = plan_from_gguf("SmolLM2.Q4_1.gguf", order, family, provenance)   # bytes copied
    >>> plan = plan_from_hf(loaded, order, "q8_0", provenance)                  # converted
    >>> write_gguf(plan, "out.gguf.tmp", progress)

From a GGUF source every tensor of layer s is copied byte for byte to each position that
runs s (quantized data is never re-quantized), read from the file in chunks so memory
stays flat; `block_count` and the per-layer metadata arrays the family data names are
remapped. From a Hugging Face model the tensors are renamed with gguf-py's name map and cut
as ggufmap says (the map rys-search's own GGUF reader runs backwards), converted one at a
time (f32, f16, bf16 or q8_0), and the tokenizer and chat template are written from the
model's own tokenizer files; what differs by family (extra metadata, norm
offsets, fused tensors written as parts, config values the GGUF reader assumes) comes from
the family's data file. Provenance goes under the `rys.` keys.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import UserError
from ..ggufmap import BLOCK, config_kv, tensor_pieces
from .hf import tensor_plan

__all__ = ["GGUFPlan", "OUT_TYPES", "gguf_fields", "plan_from_gguf", "plan_from_hf", "write_gguf"]

CHUNK = 16 << 20  # bytes read and written at a time when copying tensor data
OUT_TYPES = ("f32", "f16", "bf16", "q8_0")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutTensor:
    name: str
    shape: tuple[int, ...]  # numpy order, outermost first
    qtype: int  # gguf.GGMLQuantizationType value
    nbytes: int
    chunks: Callable[[], Iterator[Any]]  # yields the data (bytes or arrays) in order


@dataclass
class GGUFPlan:
    arch: str
    kv: list[tuple[str, Any, Any, Any]] = field(default_factory=list)  # key, value, type, array sub-type
    tensors: list[OutTensor] = field(default_factory=list)
    alignment: int | None = None
    # why the GGUF, read back, cannot reproduce the source's logits exactly ("" when it can)
    inexact: str = ""

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def _provenance_kv(provenance: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """rys.* keys: strings and whole numbers as such, anything else as JSON text."""
    import gguf

    out = []
    for key, value in provenance.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            value = json.dumps(value, sort_keys=True)
        if isinstance(value, int):
            out.append((f"rys.{key}", value, gguf.GGUFValueType.INT64, None))
        else:
            out.append((f"rys.{key}", value, gguf.GGUFValueType.STRING, None))
    return out


# ---- from a GGUF source ---------------------------------------------------------------


def _file_chunks(path: Path, offset: int, nbytes: int) -> Callable[[], Iterator[bytes]]:
    def read() -> Iterator[bytes]:
        with path.open("rb") as f:
            f.seek(offset)
            left = nbytes
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise UserError(f"{path} ended early while copying tensor data (truncated?)")
                left -= len(chunk)
                yield chunk

    return read


def plan_from_gguf(path: str | Path, order: Sequence[int], per_layer_keys: Sequence[str],
                   provenance: dict[str, Any], name_suffix: str) -> GGUFPlan:
    """Copy a GGUF's metadata and tensors with the blocks of `order` (source index per new block)."""
    import gguf

    path = Path(path)
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    n_source = int(reader.fields[f"{arch}.block_count"].contents())
    per_layer = {f"{arch}.{key}" for key in per_layer_keys}
    plan = GGUFPlan(arch=arch)
    if (align := reader.fields.get("general.alignment")) is not None:
        plan.alignment = int(align.contents())
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture" or f.name.startswith("rys."):
            continue  # the writer adds these; an earlier export's provenance is replaced
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = f.contents()
        if f.name == f"{arch}.block_count":
            value = len(order)
        elif f.name in per_layer and isinstance(value, list) and len(value) == n_source:
            value = [value[s] for s in order]
        elif f.name == "general.name":
            value = f"{value} {name_suffix}"
        plan.kv.append((f.name, value, vtype, sub))
    if "general.name" not in reader.fields:
        plan.kv.append(("general.name", name_suffix, gguf.GGUFValueType.STRING, None))
    plan.kv += _provenance_kv(provenance)

    by_block: dict[int, list[Any]] = {}
    head, tail = [], []
    for t in reader.tensors:
        match = BLOCK.match(t.name)
        if match:
            by_block.setdefault(int(match.group(1)), []).append(t)
        else:
            (tail if by_block else head).append(t)

    def out(t, name: str) -> OutTensor:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        return OutTensor(name, shape, int(t.tensor_type), int(t.n_bytes), _file_chunks(path, int(t.data_offset), int(t.n_bytes)))

    plan.tensors += [out(t, t.name) for t in head]
    for new, src in enumerate(order):
        for t in by_block.get(src, []):
            plan.tensors.append(out(t, f"blk.{new}.{BLOCK.match(t.name).group(2)}"))
    plan.tensors += [out(t, t.name) for t in tail]
    return plan


def gguf_fields(path: str | Path) -> dict[str, Any]:
    """Every metadata key of a GGUF file with its value (token lists included)."""
    import gguf

    reader = gguf.GGUFReader(Path(path))
    return {f.name: f.contents() for f in reader.fields.values()}


# ---- from a Hugging Face model ------------------------------------------------------------


_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "bf16": "MOSTLY_BF16"}  # gguf.LlamaFileType


def _qtype_for(data_shape: Sequence[int], out_type: str) -> Any:
    import gguf

    T = gguf.GGMLQuantizationType
    if len(data_shape) < 2 or out_type == "f32":
        return T.F32  # norms and biases stay f32, as llama.cpp's converter keeps them
    if out_type == "q8_0":
        return T.Q8_0 if data_shape[-1] % 32 == 0 else T.F16
    return {"f16": T.F16, "bf16": T.BF16}[out_type]


# YaRN settings llama.cpp reads (rope.scaling.*); any other one in a model's rope_parameters is refused.
_YARN_KEYS = {"rope_type", "rope_theta", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
              "truncate"}


def _rope_kv(config: Any, family: Any, arch: str, plan: GGUFPlan) -> list[tuple[str, Any, Any, Any]]:
    """rope.freq_base, and rope.scaling.* where the family's llama.cpp runs the model's scaling (YaRN)."""
    import gguf

    V = gguf.GGUFValueType
    params = getattr(config, "rope_parameters", None) or {}
    if not (isinstance(params, dict) and "rope_type" in params):
        params = {}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    kind = params.get("rope_type", "default")
    kv = [(f"{arch}.rope.freq_base", theta, V.FLOAT32, None)]
    if kind == "default":
        return kv
    if kind not in family.gguf_rope_scaling:
        raise UserError(
            f"GGUF export from a Hugging Face {family.name} model supports plain RoPE only; this model uses "
            f"{kind!r} scaling: export --format hf instead"
        )
    unknown = sorted(set(params) - _YARN_KEYS)
    if unknown:
        raise UserError(f"a {arch} GGUF cannot hold the YaRN settings {unknown} of this model: "
                        f"export --format hf instead")
    if params.get("truncate", True) is False:  # gpt-oss's own checkpoints; llama.cpp's converter writes them so too
        plan.inexact = ("a GGUF cannot hold YaRN without rounding its correction range (this model's truncate = "
                        "false), and read back it runs rounded, as llama.cpp does")
        log.warning("llama.cpp rounds YaRN's correction range to whole dimensions, this model does not (truncate = "
                    "false): llama.cpp's logits drift slightly from the model's with position (0.02 in 16 tokens on "
                    "a tiny test model); the greedy check tells whether that changes tokens on its prompts")
    kv += [
        (f"{arch}.rope.scaling.type", "yarn", V.STRING, None),
        (f"{arch}.rope.scaling.factor", float(params["factor"]), V.FLOAT32, None),
        (f"{arch}.rope.scaling.original_context_length",
         int(params.get("original_max_position_embeddings") or config.max_position_embeddings), V.UINT32, None),
    ]
    for key in ("beta_fast", "beta_slow"):
        if params.get(key) is not None:
            kv.append((f"{arch}.rope.scaling.yarn_{key}", float(params[key]), V.FLOAT32, None))
    return kv


def _pre_tokenizer(tokenizer: Any, default: str) -> str:
    """llama.cpp's name for how this tokenizer splits text before its merges: "gpt-2" for GPT-2's own
    split, the name of its split pattern in transformers' table of GGUF pre-tokenizers (the family's
    default where it is one of them), else the family's default (verification reports whether
    llama.cpp then tokenizes the prompts as the tokenizer does)."""
    try:
        pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    except (AttributeError, ValueError):
        return default
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        try:
            from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
        except ImportError:  # a transformers without the table
            return default
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        names = [name for name, split in GGUF_PRE_TOKENIZER_SPLITS.items() if split == pattern]
        return default if default in names or not names else names[0]
    return default


def _tokenizer_kv(tokenizer: Any, vocab_size: int, pre: str, writer_kv: list) -> None:
    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        try:
            vocab = gguf.vocab.BpeVocab(Path(tmp))
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise UserError(
                f"GGUF export from a Hugging Face model needs a GPT-2-style byte-level BPE tokenizer "
                f"({exc}); export --format hf instead"
            ) from None
        special = gguf.SpecialVocab(Path(tmp), load_merges=True, n_vocab=vocab_size)
    tokens, types = [], []
    for text, _score, kind in vocab.all_tokens():
        tokens.append(text.decode("utf-8") if isinstance(text, bytes) else text)
        types.append(int(kind))
    for k in range(len(tokens), vocab_size):  # ids the embedding has but the tokenizer never makes
        tokens.append(f"[PAD{k}]")
        types.append(int(gguf.TokenType.UNUSED))
    # the tokenizer's added tokens as llama.cpp's converter types them: special ones CONTROL (llama.cpp
    # then reads them whole in a chat prompt), others USER_DEFINED, also where they sit in the base vocabulary
    for k, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if k < len(types):
            types[k] = int(gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED)
    V = gguf.GGUFValueType
    writer_kv += [
        ("tokenizer.ggml.model", "gpt2", V.STRING, None),
        ("tokenizer.ggml.pre", _pre_tokenizer(tokenizer, pre), V.STRING, None),
        ("tokenizer.ggml.tokens", tokens[:vocab_size], V.ARRAY, V.STRING),
        ("tokenizer.ggml.token_type", types[:vocab_size], V.ARRAY, V.INT32),
    ]
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        special.chat_template = tokenizer.chat_template  # the template transformers applies
    recorder = gguf.GGUFWriter(None, arch="rys")  # gathers key-values, writes no file
    special.add_to_gguf(recorder, quiet=True)  # merges, special token ids (below vocab_size), add_*_token, template
    written = recorder.kv_data[0]
    writer_kv += [(key, v.value, v.type, v.sub_type) for key, v in written.items() if key.startswith("tokenizer.")]
    if "tokenizer.ggml.merges" not in written:  # llama.cpp insists on the key
        writer_kv.append(("tokenizer.ggml.merges", [" "], V.ARRAY, V.STRING))


def plan_from_hf(model: Any, tokenizer: Any, family: Any, order: Sequence[int], out_type: str,
                 provenance: dict[str, Any], name: str) -> GGUFPlan:
    """GGUF tensors and metadata for a transformers model (loaded, no schedule applied) run as `order`."""
    import gguf

    if out_type not in OUT_TYPES:
        raise UserError(f"unknown GGUF type {out_type!r}; use one of {', '.join(OUT_TYPES)}")
    if not family.gguf_from_hf:
        raise UserError(f"GGUF export from a Hugging Face {family.name} model is not supported; export --format hf")
    config = family.config_of(model)
    _check_expressible(config, family)
    types = getattr(config, "layer_types", None)
    slides = "sliding_attention" in types if types else bool(getattr(config, "sliding_window", None))
    if slides and "attention.sliding_window" not in {key for key, _, _ in family.gguf_config}:
        log.warning("a GGUF carries no sliding windows: llama.cpp runs this model's sliding-window layers with "
                    "full attention (the same output up to the window's length)")
    arch = family.gguf_arch
    n_head = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    V = gguf.GGUFValueType
    plan = GGUFPlan(arch=arch)
    kv = plan.kv
    kv += [
        ("general.type", "model", V.STRING, None),
        ("general.name", name, V.STRING, None),
        ("general.file_type", int(gguf.LlamaFileType[_FILE_TYPES[out_type]]), V.UINT32, None),
        ("general.quantization_version", gguf.GGML_QUANT_VERSION, V.UINT32, None),
        (f"{arch}.block_count", len(order), V.UINT32, None),
        *config_kv(config, family, arch),  # the config entries a GGUF holds, the family's own included
        (f"{arch}.attention.key_length", int(head_dim), V.UINT32, None),
        (f"{arch}.attention.value_length", int(head_dim), V.UINT32, None),
        *_rope_kv(config, family, arch, plan),
        (f"{arch}.rope.dimension_count", int(head_dim), V.UINT32, None),
    ]
    _tokenizer_kv(tokenizer, int(config.vocab_size), family.gguf_tokenizer_pre, kv)
    kv += _provenance_kv(provenance)

    state, items = tensor_plan(model, family, order)
    for piece in tensor_pieces(state, items, family, config, len(order)):
        qtype = _qtype_for(piece.shape, out_type)
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(piece.shape, qtype)))

        def convert(piece=piece, qtype=qtype) -> Iterator[np.ndarray]:
            yield np.ascontiguousarray(gguf.quants.quantize(piece.from_hf(state[piece.src_key]), qtype))

        plan.tensors.append(OutTensor(piece.name, piece.shape, int(qtype), nbytes, convert))
    return plan


def _check_expressible(config: Any, family: Any) -> None:
    """Refuse a model whose GGUF would not say what it does (one line, before anything is written)."""
    for entry, wanted in family.gguf_requires:
        have = getattr(config, entry, None)
        if have != wanted:
            raise UserError(f"a {family.gguf_arch} GGUF assumes {entry} = {wanted!r} and this model has {have!r}: "
                            f"export --format hf instead")
    entries = family.per_layer_entries(config)
    for layer_set in family.layer_sets:
        if layer_set.entry in entries and layer_set.members(entries):
            raise UserError(f"a {family.gguf_arch} GGUF cannot hold {layer_set.entry} (this model's: "
                            f"{sorted(layer_set.members(entries))}): export --format hf instead")


# ---- writing ---------------------------------------------------------------------------------


def write_gguf(plan: GGUFPlan, path: str | Path, progress: Callable[[int], None] | None = None) -> None:
    """Header, metadata and tensor table, then each tensor's data streamed in order."""
    import gguf

    writer = gguf.GGUFWriter(Path(path), arch=plan.arch)
    if plan.alignment is not None:
        writer.data_alignment = plan.alignment
    for key, value, vtype, sub in plan.kv:
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for t in plan.tensors:
        writer.add_tensor_info(t.name, t.shape, np.float32, t.nbytes, raw_dtype=gguf.GGMLQuantizationType(t.qtype))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
    finally:
        writer.close()  # header, metadata and tensor table are on disk; the data follows, streamed
    with open(path, "ab") as fout:
        for t in plan.tensors:
            writer.write_padding(fout, fout.tell())
            written = 0
            for chunk in t.chunks():
                data = memoryview(chunk).cast("B") if isinstance(chunk, np.ndarray) else chunk
                fout.write(data)
                written += len(data)
                if progress is not None:
                    progress(len(data))
            if written != t.nbytes:
                raise RuntimeError(f"tensor {t.name}: wrote {written} bytes, expected {t.nbytes}")
            writer.write_padding(fout, t.nbytes)
