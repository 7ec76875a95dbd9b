"""The one exception type the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations

__all__ = ["UserError", "first_line"]


class UserError(Exception):
    """Bad input from the user (a schedule, a model path, an option): say what is wrong, in one line."""


def first_line(exc: BaseException, empty: str | None = None) -> str:
    """The first line of an exception's message; for an empty message, `empty` (default: its type's name)."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if empty is None else empty
