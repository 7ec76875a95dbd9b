"""The one exception type the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user (a schedule, a model path, an option): say what is wrong, in one line."""
