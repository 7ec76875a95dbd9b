"""The chat template (the one place prompts become a user turn) and greedy chat answers.

    >>> loaded = load_model("default")
    >>> with loaded.runtime.using("0-9,10-12x2,13-29"):
    ...     print(greedy_answer(loaded, "What is 17*23?"))
"""

from __future__ import annotations

from typing import Any

__all__ = ["chat_ids", "chat_input_ids", "chat_text", "greedy_answer"]


def chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt as one user turn in the model's chat template (raw text if it has none).

    A thinking model's think block is closed (``enable_thinking=False``) so it answers directly.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = _user_turn(tokenizer, prompt, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return [int(i) for i in ids]


def chat_text(tokenizer: Any, prompt: str) -> str:
    """The text chat_ids tokenizes: the user turn in the chat template (the prompt itself if it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return _user_turn(tokenizer, prompt, tokenize=False)
    return prompt


def _user_turn(tokenizer: Any, prompt: str, **kwargs: Any) -> Any:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         enable_thinking=False, **kwargs)


def chat_input_ids(tokenizer: Any, prompt: str):
    """chat_ids as a (1, length) tensor."""
    import torch

    return torch.tensor([chat_ids(tokenizer, prompt)], dtype=torch.long)


def greedy_answer(loaded: Any, prompt: str, max_new_tokens: int = 128) -> str:
    """The model's greedy answer to one user turn under the runtime's current schedule."""
    from .scoring.generation import greedy_generate

    texts, _ = greedy_generate(loaded, [chat_ids(loaded.tokenizer, prompt)], max_new_tokens)
    return texts[0]
