"""Read a GGUF that transformers does not read (OLMo 2, Granite, Mixtral, gpt-oss) into a
Hugging Face checkpoint, through the map the GGUF exporter writes with (ggufmap).

    >>> config = read_config("olmo2.gguf", family)
    >>> checkpoint = GGUFCheckpoint("olmo2.gguf", family)   # tensors checked against the map
    >>> checkpoint.model(), checkpoint.tokenizer()            # what the GGUF cache keeps
    >>> model, tokenizer = read_model("olmo2.gguf", family)   # in memory (an export's check)

The config comes from the metadata (ggufmap.config_from_fields) and the family's
transformers config class, whose defaults stand for what a GGUF does not say. The model is
built on the meta device only to list its tensors; each one is then filled from the GGUF
tensors ggufmap says it became, dequantized on all cores (ggufio.dequantized). A file whose
tensors are not exactly the ones the map expects is refused in one line, naming them. The
tokenizer is transformers' own reading of the file's tokenizer metadata.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .ggufio import ModelFileError, dequantized, parsed
from .ggufmap import TOKEN_ID_KEYS, config_from_fields, tensor_pieces

__all__ = ["GGUFCheckpoint", "read_config", "read_gguf", "read_model"]


def _fields(reader: Any, arch: str) -> dict[str, Any]:
    """The metadata config_from_fields reads (the architecture's keys, token ids, the vocabulary's size)."""
    fields = {name: f.contents() for name, f in reader.fields.items()
              if name.startswith(arch + ".") or name in TOKEN_ID_KEYS}
    if "tokenizer.ggml.tokens" in reader.fields:
        fields["tokenizer.ggml.tokens"] = range(len(reader.fields["tokenizer.ggml.tokens"].data))
    return fields


def read_config(path: str | Path, family: Any) -> Any:
    """The transformers config of a GGUF of this family."""
    from transformers import AutoConfig

    reader = parsed(path)
    arch = reader.fields["general.architecture"].contents()
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    kwargs = config_from_fields(_fields(reader, arch), family, n_blocks)
    kwargs["tie_word_embeddings"] = all(t.name != "output.weight" for t in reader.tensors)
    return AutoConfig.for_model(family.model_types[0], **kwargs)


class GGUFCheckpoint:
    """A GGUF of this family whose tensors were checked against the map (on creation: nothing is
    dequantized before a file the map cannot place is refused); read into a state dict on demand."""

    def __init__(self, path: str | Path, family: Any):
        import torch
        from transformers import AutoModelForCausalLM

        self.path, self.family = Path(path), family
        self.config = config = read_config(self.path, family)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        self.shapes = skeleton.state_dict()  # meta tensors: names and shapes
        # (source key, key): every tensor as it is, a tied output matrix left to the model to tie
        self.items = [(k, k) for k in self.shapes if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        self.pieces = {p.name: p for p in tensor_pieces(self.shapes, self.items, family, config,
                                                        config.num_hidden_layers)}
        found = {t.name: int(t.n_elements) for t in parsed(self.path).tensors}
        missing, extra = sorted(set(self.pieces) - set(found)), sorted(set(found) - set(self.pieces))
        if missing or extra:
            raise ModelFileError(
                f"{self.path.name} does not hold the tensors rys-search reads for {family.name}"
                + (f"; missing: {', '.join(missing[:5])}" if missing else "")
                + (f"; not placed: {', '.join(extra[:5])}" if extra else ""))
        for name, piece in self.pieces.items():
            if found[name] != math.prod(piece.shape):
                raise ModelFileError(f"{self.path.name}: tensor {name} has {found[name]} values; the {family.name} "
                                     f"config its metadata describes needs {math.prod(piece.shape)}")

    def state(self) -> dict[str, Any]:
        """The float32 state dict (a tied output matrix left out, as the model ties it)."""
        import torch

        state = {src: torch.empty(self.shapes[src].shape, dtype=torch.float32) for src, _ in self.items}
        for tensor, values in dequantized(parsed(self.path)):
            piece = self.pieces[tensor.name]
            piece.into_hf(state[piece.src_key], values)
        return state

    def tokenizer(self) -> Any:
        """transformers' reading of the file's tokenizer metadata (it reads it for any architecture)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(self.path.parent), gguf_file=self.path.name)

    def model(self) -> Any:
        """A float32 transformers model, built without writing a file."""
        import contextlib

        import torch
        from transformers import AutoModelForCausalLM

        try:
            from transformers.initialization import no_init_weights  # the weights are all replaced below
        except ImportError:
            no_init_weights = contextlib.nullcontext
        with no_init_weights():
            model = AutoModelForCausalLM.from_config(self.config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(self.state(), strict=False)
        tied = {"lm_head.weight"} if self.config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise ModelFileError(f"{self.path.name}: tensors missing {sorted(set(missing) - tied)[:5]}, "
                                 f"unexpected {sorted(unexpected)[:5]}")
        if tied:
            model.tie_weights()
        return model.eval()


def read_gguf(path: str | Path, family: Any) -> tuple[Any, dict[str, Any], Any]:
    """(config, float32 state dict, tokenizer) of a GGUF of this family."""
    checkpoint = GGUFCheckpoint(path, family)
    return checkpoint.config, checkpoint.state(), checkpoint.tokenizer()


def read_model(path: str | Path, family: Any) -> tuple[Any, Any]:
    """(float32 transformers model, tokenizer) of a GGUF of this family, without writing a file."""
    checkpoint = GGUFCheckpoint(path, family)
    return checkpoint.model(), checkpoint.tokenizer()

