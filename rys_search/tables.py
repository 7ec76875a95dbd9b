"""One check for the TOML tables the project reads: architectures, probe suites, study configs.

    >>> check_table(data, {"name": str, "version": int}, "objectives/math.toml", required=("name",), error=SuiteError)

Unknown keys, missing required keys and values of the wrong type are refused with one message
naming the file (and table) and the key. A bool is not a number; a whole number is a float.
"""

from __future__ import annotations

from typing import Any

from .errors import UserError

__all__ = ["check_table", "check_type"]


def check_table(data: Any, kinds: dict[str, Any], where: str, required: tuple[str, ...] = (),
                error: type[Exception] = UserError) -> dict[str, Any]:
    """data, with whole numbers given for floats made floats; kinds maps each known key to its type(s)."""
    if not isinstance(data, dict):
        raise error(f"{where} must be a table")
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise error(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(kinds))}")
    missing = [k for k in required if k not in data]
    if missing:
        raise error(f"{where}: missing keys {', '.join(missing)}")
    return {key: check_type(where, key, value, kinds[key], error) for key, value in data.items()}


def check_type(where: str, key: str, value: Any, kind: Any, error: type[Exception] = UserError) -> Any:
    """value if it is a kind (a type or a tuple of types), else an error naming where and key."""
    if kind is None:  # checked by the caller
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds and any(k in (int, float) for k in kinds):
        raise error(f"{where}: {key} must be a number, got {value!r}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds):
        name = " or ".join(k.__name__ for k in kinds)
        raise error(f"{where}: {key} must be {name}, got {value!r}")
    return value
