"""Check an exported model against the weight-shared run of its schedule on the source.

    >>> ref = Reference(loaded, schedule, n_new=16)       # greedy continuations, logits
    >>> verify_transformers(ref, "out.gguf", fmt="gguf", tolerance=TOLERANCES["exact"])
    >>> verify_llama_cpp(ref, "out.gguf")

Fixed chat prompts are run greedily under the schedule on the source model (shared
weights); that gives each prompt's token sequence and logits. Through transformers the
exported model must reproduce those logits within the stated tolerance (exact for byte
copies and unconverted weights, relative bounds for f16/bf16/q8_0). Through llama.cpp its
arg-max at every generated position must be the token the source chose, except at near
ties: positions where the source's two best logits are closer than NEAR_TIE. Logits are
not compared there: llama.cpp's quantized kernels differ from a dequantized torch run by
0.1-2 even on the unmodified model, and flip the choice where two tokens are nearly tied
(measured on SmolLM2 Q4_1, unmodified: 2 of 108 greedy positions, at gaps of 0.02 and
0.05). Near-tie flips are counted and reported, not hidden.

llama.cpp also tokenizes the prompts' text, which is compared with the model's own tokenizer:
a GGUF names its pre-tokenizer (how text is split before the merges) and types its special
tokens, and llama.cpp reads text by them, so a GGUF whose tokenizer does not fit the model's
reads text differently. That is reported (a count and a warning), not failed: it is the GGUF's
tokenizer, not the schedule.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PROMPTS", "TOLERANCES", "Reference", "VerificationFailed", "verify_llama_cpp", "verify_transformers"]

PROMPTS = (
    "What is 17*23?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "If Ann is taller than Bo and Bo is taller than Cy, who is shortest?",
)

# Logit tolerance |exported - reference| <= atol + rtol * max|reference|, by how the weights were written.
TOLERANCES = {
    "exact": (1e-3, 0.0),  # bytes copied, or weights in the dtype the reference ran in
    "f16": (1e-3, 2e-2),
    "bf16": (1e-3, 6e-2),
    "q8_0": (1e-3, 8e-2),
}


NEAR_TIE = 0.25  # logits between the source's best and second-best token
log = logging.getLogger(__name__)


class VerificationFailed(Exception):
    """The exported model does not reproduce the schedule's outputs; the output was removed."""


@dataclass
class Reference:
    """Greedy token sequences and their logits from the weight-shared run of the schedule."""

    sequences: list[list[int]]  # prompt + continuation token ids
    prompt_lengths: list[int]
    logits: list[Any]  # float32 [len, vocab] per sequence, on the CPU
    texts: list[tuple[str, list[int]]] = ()  # each prompt's chat text and the model's tokens for it

    @classmethod
    def build(cls, loaded: Any, schedule: Any, n_new: int = 16) -> "Reference":
        import torch

        from ..chat import chat_ids, chat_text
        from ..scoring.generation import generate_ids

        prompts = [chat_ids(loaded.tokenizer, prompt) for prompt in PROMPTS]
        sequences, logits = [], []
        with loaded.runtime.using(schedule), torch.no_grad():
            for prompt, new in zip(prompts, generate_ids(loaded, prompts, n_new)):
                seq = prompt + new
                full = loaded.model(torch.tensor([seq], device=loaded.device)).logits[0].float().cpu()
                sequences.append(seq)
                logits.append(full)
        texts = [chat_text(loaded.tokenizer, prompt) for prompt in PROMPTS]
        tokens = [[int(i) for i in loaded.tokenizer(text, add_special_tokens=False)["input_ids"]] for text in texts]
        return cls(sequences, [len(p) for p in prompts], logits, list(zip(texts, tokens)))


def verify_transformers(ref: Reference, path: str | Path, fmt: str, tolerance: tuple[float, float]) -> dict[str, Any]:
    """Load the export into a transformers model and compare logits on the reference sequences (a GGUF of
    an architecture transformers does not read is read by rys-search's own reader, ggufread)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if fmt == "gguf":
        from ..ggufread import read_model
        from ..loading import gguf_family

        family, _ = gguf_family(str(path))
        if family.gguf_reader == "rys-search":  # an architecture transformers does not read: rys-search's reader
            model, _ = read_model(path, family)
        else:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    atol, rtol = tolerance
    worst, scale, agree, total = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for seq, expected in zip(ref.sequences, ref.logits):
            got = model(torch.tensor([seq])).logits[0].float()
            worst = max(worst, float((got - expected).abs().max()))
            scale = max(scale, float(expected.abs().max()))
            agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
            total += len(seq)
    del model
    gc.collect()
    bound = atol + rtol * scale
    result = {"max_abs_logit_diff": worst, "tolerance": bound, "top1_agreement": agree / total,
              "positions": total, "passed": worst <= bound}
    if not result["passed"]:
        raise VerificationFailed(
            f"through transformers the export's logits differ from the schedule's by up to {worst:.4g} "
            f"(tolerance {bound:.4g})"
        )
    return result


def verify_llama_cpp(ref: Reference, path: str | Path) -> dict[str, Any]:
    """Load a GGUF in llama.cpp; its arg-max at each generated position must be the source's greedy token."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise VerificationFailed(
            "llama-cpp-python is not installed, so the GGUF cannot be checked in llama.cpp: "
            "pip install 'rys-search[llama]' (or pass --no-verify)"
        ) from None
    import numpy as np

    longest = max(len(s) for s in ref.sequences)
    llm = Llama(model_path=str(path), n_ctx=max(64, longest + 8), logits_all=True, verbose=False,
                n_threads=max(1, min(8, os.cpu_count() or 1)), seed=0)
    checked, near_ties, tie_flips, mismatches = 0, 0, 0, []
    try:
        alike = sum(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == tokens
                    for text, tokens in ref.texts)
        for k, (seq, n_prompt, expected) in enumerate(zip(ref.sequences, ref.prompt_lengths, ref.logits)):
            llm.reset()
            llm.eval(seq)
            scores = np.asarray(llm.scores[: len(seq)])
            for pos in range(n_prompt - 1, len(seq) - 1):  # the logits at pos choose token pos + 1
                checked += 1
                top = expected[pos].topk(2).values
                tie = float(top[0] - top[1]) < NEAR_TIE
                near_ties += tie
                got = int(scores[pos].argmax())
                if got != seq[pos + 1]:
                    if tie:
                        tie_flips += 1
                    else:
                        mismatches.append({"prompt": k, "position": pos + 1, "expected": seq[pos + 1], "got": got})
    finally:
        if hasattr(llm, "close"):
            llm.close()
        del llm
        gc.collect()
    result = {"greedy_tokens_checked": checked, "mismatches": len(mismatches), "near_ties": near_ties,
              "near_tie_flips": tie_flips, "near_tie_margin": NEAR_TIE, "passed": not mismatches,
              "prompts_tokenized_alike": alike, "prompts_tokenized": len(ref.texts)}
    if alike < len(ref.texts):
        log.warning("llama.cpp splits %d of %d verification prompts into other tokens than the model's tokenizer "
                    "does: the GGUF's tokenizer (its pre-tokenizer, tokenizer.ggml.pre, or its special tokens) does "
                    "not fit it, so llama.cpp reads text otherwise than the model; the schedule's check, on token "
                    "ids, is not affected", len(ref.texts) - alike, len(ref.texts))
    if mismatches:
        first = mismatches[0]
        raise VerificationFailed(
            f"through llama.cpp the greedy tokens differ from the schedule's at {len(mismatches)} of {checked} "
            f"positions that are not near ties (first: prompt {first['prompt']}, position {first['position']}: "
            f"expected token {first['expected']}, got {first['got']})"
        )
    return result
