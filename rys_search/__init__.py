"""rys-search: find, measure and ship RYS layer schedules (repeat blocks of a model's layers).

    >>> from rys_search import LayerSchedule, load_model
    >>> loaded = load_model("default")
    >>> loaded.runtime.set_schedule(LayerSchedule.parse("0-9,10-12x2,13-29"))

Heavy modules (torch, transformers) load on first use, not on import.
"""

from __future__ import annotations

from typing import Any

from .errors import UserError
from .schedule import Block, LayerSchedule, ScheduleError

__all__ = ["Block", "LayerSchedule", "ScheduleError", "ScheduledModel", "UserError", "load_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from .loading import load_model

        return load_model
    if name == "ScheduledModel":
        from .runtime import ScheduledModel

        return ScheduledModel
    raise AttributeError(name)
