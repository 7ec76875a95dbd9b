"""Greedy chat answers, to see what a schedule does to a model's behaviour.

    >>> loaded = load_model("default")
    >>> with loaded.runtime.using("0-9,10-12x2,13-29"):
    ...     print(greedy_answer(loaded, "What is 17*23?"))
"""

from __future__ import annotations

from typing import Any

__all__ = ["chat_ids", "chat_input_ids", "greedy_answer"]


def chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt as one user turn in the model's chat template (raw text if it has none).

    A thinking model's think block is closed (``enable_thinking=False``) so it answers directly.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            enable_thinking=False,
            return_dict=True,
        )["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return [int(i) for i in ids]


def chat_input_ids(tokenizer: Any, prompt: str):
    """chat_ids as a (1, length) tensor."""
    import torch

    return torch.tensor([chat_ids(tokenizer, prompt)], dtype=torch.long)


def greedy_answer(loaded: Any, prompt: str, max_new_tokens: int = 128) -> str:
    import torch

    ids = chat_input_ids(loaded.tokenizer, prompt).to(loaded.device)
    with torch.no_grad():
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    return loaded.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
