"""Held-out scores of a study's Pareto members: evaluated once, then cached in the study.

The unmodified model's held-out per-item scores and each member's held-out scores and paired
changes are cached on the study (by schedule), so `rys-search pareto` loads the model only when
some member has not been scored yet.
"""

from __future__ import annotations

from typing import Any

from ..schedule import LayerSchedule

__all__ = ["heldout_scores"]


def heldout_scores(study: Any, config: Any, loaded: Any = None) -> int:
    """Score every Pareto member without held-out scores; return how many were scored."""
    from ..scoring import get_objective
    from ..scoring.stats import paired_interval
    from .study import load_study_model

    cached = study.user_attrs.get("heldout") or {}  # schedule -> held-out scores (finished trials are read-only)
    missing = [t for t in study.best_trials if t.user_attrs.get("schedule") not in cached]
    if not missing:
        return 0
    if loaded is None:
        loaded = load_study_model(config)
    limit = config.resolve(loaded.device.type == "cuda").item_limit()  # the same items the search used
    objectives = {n: get_objective(n, mode=config.mode, suites=list(config.suites)) for n in config.objectives}
    baseline = study.user_attrs.get("heldout_baseline") or {}
    for name, objective in objectives.items():
        if name not in baseline:
            result = objective.evaluate(loaded, LayerSchedule.identity(loaded.n_layers), split="heldout", limit=limit)
            baseline[name] = {"score": result.score, "interval": list(result.interval), "items": result.item_scores()}
    study.set_user_attr("heldout_baseline", baseline)
    for trial in missing:
        schedule = LayerSchedule.parse(trial.user_attrs["schedule"], n_layers=loaded.n_layers)
        scores = {}
        for name, objective in objectives.items():
            result = objective.evaluate(loaded, schedule, split="heldout", limit=limit)
            base = baseline[name]["items"]
            ids = [i for i in result.item_scores() if i in base]
            change, lo, hi = paired_interval([result.item_scores()[i] for i in ids], [base[i] for i in ids])
            scores[name] = {"score": result.score, "interval": list(result.interval), "change": change,
                            "change_interval": [lo, hi]}
        cached[trial.user_attrs["schedule"]] = scores
        study.set_user_attr("heldout", cached)
    return len(missing)
