"""The fixed-point objective: what the residual stream does when a block runs again.

One forward pass under the schedule over a neutral reference text (objectives/neutral.txt,
one passage a line), plus one pass of the unmodified model for the KL term; no generation.
For each repeated block, with h_0 its input on the first pass and h_k its output after pass k:

- contraction: |h_{k+1} - h_k| / |h_k - h_{k-1}| for each further pass (token-averaged step
  sizes; geometric mean over passes). Below 1 the block settles towards a fixed point, above
  1 it diverges.
- seam: |h_1 - h_0| / |h_0|, how far the block's input on the repeat is from its input on the
  first pass (the mismatch at the seam where layer j-1 feeds layer i).
- kl: the mean next-token KL(unmodified || scheduled) over the text, in nats.

The scalar, per passage and then averaged (higher is better, the unmodified model scores
exactly 0):

    fixed_point_score = -( kl + sum over blocks of max(0, ln contraction) )

Drift of the output distribution always costs; a diverging block costs its log growth rate;
a contracting block costs nothing more. The seam is reported, not scored: every repeat has
one, and what it does to the output is already in the KL. The first token of each passage
(an attention sink with outsized norms) is left out of every figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .engine import _pad_id, _pad_left, batches_by_length
from .objective import Objective
from .registry import register
from .suites import builtin_dir

__all__ = ["FixedPointObjective"]

MAX_TOKENS = 64
LOGIT_ELEMENTS = {"cpu": 2**25, "cuda": 2**29}  # bound on batch x tokens x vocab per pass


class FixedPointObjective(Objective):
    name = "fixed_point"
    version = 1

    def __init__(self, mode: str = "logprob", suites: Any = None, text: str | Path | None = None):
        self.mode = mode  # the same in both modes: there is nothing to generate
        self.text_path = Path(text) if text else builtin_dir() / "neutral.txt"

    def passages(self, limit: int | None = None) -> list[str]:
        if not self.text_path.is_file():
            raise UserError(f"reference text {self.text_path} does not exist")
        lines = [line.strip() for line in self.text_path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line]
        return lines[:limit] if limit else lines

    def _score(self, loaded: Any, *, split: str, limit: int | None):
        import torch

        runtime = loaded.runtime
        schedule = runtime.schedule
        passages = self.passages(limit)
        if schedule.is_identity(runtime.n_layers):  # exactly neutral, by definition
            items = [{"id": f"passage-{k:03d}", "score": 0.0, "kl": 0.0} for k in range(len(passages))]
            return items, {"kl": 0.0, "blocks": 0.0}, 0
        tokenizer = loaded.tokenizer
        seqs = [list(tokenizer(p)["input_ids"])[:MAX_TOKENS] for p in passages]
        repeats = schedule.repeats()
        boundaries = sorted({pos + k * width for pos, width, count in repeats for k in range(count + 1)})
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        cap = LOGIT_ELEMENTS.get(loaded.device.type, LOGIT_ELEMENTS["cpu"])
        budget = max(max(len(s) for s in seqs), min(cap // vocab, getattr(loaded, "token_budget", None) or cap))
        pad = _pad_id(tokenizer)
        per_seq: list[dict[str, Any]] = [{} for _ in seqs]
        tokens = 0
        for batch in batches_by_length([len(s) for s in seqs], budget):
            ids, mask, positions, key = _pad_left([seqs[i] for i in batch], pad, loaded.device, keyed=True)
            keep = mask.clone()
            first = mask.argmax(dim=1)  # the first real token of each row
            keep[torch.arange(len(batch)), first] = 0
            kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            with torch.no_grad():  # both passes reuse the unmodified prefix (the second is all prefix)
                out, states = runtime.forward(key, capture=boundaries, **kwargs)
                scheduled = out.logits.float().log_softmax(-1)
                with runtime.using(_identity(runtime)):
                    base = runtime.forward(key, **kwargs)[0].logits.float().log_softmax(-1)
                kl = (base.exp() * (base - scheduled)).sum(-1)  # (batch, tokens)
            tokens += 2 * int(mask.sum())
            weights = keep.float()
            count = weights.sum(-1).clamp(min=1.0)
            kl_rows = ((kl * weights).sum(-1) / count).double().cpu().numpy()
            blocks = [_block_figures(states, pos, width, n, weights, count) for pos, width, n in repeats]
            for row, i in enumerate(batch):
                per_seq[i]["kl"] = float(kl_rows[row])
                per_seq[i]["blocks"] = [block[row] for block in blocks]
            del scheduled, base, kl, states
        items = []
        for k, figures in enumerate(per_seq):
            penalty = sum(max(0.0, math.log(b["contraction"])) for b in figures["blocks"] if b["contraction"] > 0)
            items.append({"id": f"passage-{k:03d}", "score": -(figures["kl"] + penalty), **figures})
        metrics = {"kl": float(np.mean([s["kl"] for s in per_seq])), "blocks": float(len(repeats))}
        for b, (pos, width, count) in enumerate(repeats):
            contraction = [s["blocks"][b]["contraction"] for s in per_seq]
            metrics[f"block{b}_contraction"] = float(np.exp(np.mean(np.log(np.maximum(contraction, 1e-12)))))
            metrics[f"block{b}_seam"] = float(np.mean([s["blocks"][b]["seam"] for s in per_seq]))
        return items, metrics, tokens


def _identity(runtime: Any):
    from ..schedule import LayerSchedule

    return LayerSchedule.identity(runtime.n_layers)


def _block_figures(states, pos: int, width: int, count: int, weight, n) -> list[dict[str, Any]]:
    """Step sizes, contraction and seam of one repeated block for each passage (batch row)."""
    import torch

    h = [states[pos + k * width].float() for k in range(count + 1)]  # h_0 .. h_count, (rows, tokens, hidden)

    def mean_norm(x):
        return (x.norm(dim=-1) * weight).sum(-1) / n

    steps = torch.stack([mean_norm(h[k + 1] - h[k]) for k in range(count)], dim=1)  # (rows, count)
    seam = ((h[1] - h[0]).norm(dim=-1) / h[0].norm(dim=-1).clamp(min=1e-12) * weight).sum(-1) / n
    steps, seam = steps.double().cpu().numpy(), seam.double().cpu().numpy()
    out = []
    for row in range(steps.shape[0]):
        s = [float(x) for x in steps[row]]
        ratios = [s[k] / s[k - 1] for k in range(1, count) if s[k - 1] > 0]
        contraction = math.exp(sum(math.log(max(r, 1e-12)) for r in ratios) / len(ratios)) if ratios else 0.0
        out.append({"steps": s, "contraction": contraction, "seam": float(seam[row])})
    return out


register("fixed_point", lambda mode="logprob", suites=None: FixedPointObjective(mode=mode, suites=suites))
