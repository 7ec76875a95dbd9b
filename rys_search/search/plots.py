"""The study's figures for its MLflow parent run: Pareto front, (i, j) heatmap, history, importances.

matplotlib only (Agg), imported when a study closes.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

__all__ = ["study_figures"]
log = logging.getLogger(__name__)


def _complete(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]


def study_figures(study: Any, config: Any, n_layers: int) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = config.objective_names()
    trials = _complete(study)
    figures: dict[str, Any] = {}
    best = {t.number for t in study.best_trials} if trials else set()

    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        for t in trials:
            on = t.number in best
            ax.scatter(t.values[a], t.values[b], c="tab:red" if on else "tab:gray", s=30 if on else 12,
                       alpha=0.9 if on else 0.5)
            if t.user_attrs.get("added_layers", 1) == 0:
                ax.scatter(t.values[a], t.values[b], marker="*", s=160, c="black", label="unmodified")
        ax.set_xlabel(names[a])
        ax.set_ylabel(names[b])
        ax.grid(alpha=0.3)
    fig.suptitle(f"{config.name}: Pareto front (red) among {len(trials)} complete trials")
    fig.tight_layout()
    figures["pareto_front.png"] = fig

    fig, axes = plt.subplots(1, len(config.objectives), figsize=(5 * len(config.objectives), 4.2), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], config.objectives)):
        grid = np.full((n_layers + 1, n_layers + 1), np.nan)
        for t in trials:
            blocks = t.user_attrs.get("blocks", "")
            change = t.user_attrs.get("scores", {}).get(name, {}).get("change")
            if change is None or blocks in ("", "none") or "," in blocks or not blocks.endswith("x2"):
                continue  # the heatmap holds single contiguous blocks run twice: the (i, j) of RYS
            rng = blocks[:-2]
            i, j = (int(rng), int(rng)) if "-" not in rng else (int(x) for x in rng.split("-"))
            grid[j + 1, i] = change
        limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
        image = ax.imshow(grid, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit)
        ax.set_xlabel("i (first repeated layer)")
        ax.set_ylabel("j (one past the last)")
        ax.set_title(f"{name}: change vs unmodified")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    figures["ij_heatmap.png"] = fig

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        xs = [t.number for t in trials]
        ys = [t.values[k] for t in trials]
        ax.scatter(xs, ys, s=10, c="tab:blue", alpha=0.6)
        if ys:
            maximize = study.directions[k].name == "MAXIMIZE"
            best_so_far = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
            ax.step(xs, best_so_far, where="post", c="tab:red")
        ax.set_xlabel("trial")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle("optimisation history (red: best so far)")
    fig.tight_layout()
    figures["history.png"] = fig

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        importances = _importances(study, k)
        if importances:
            keys = list(importances)[:10]
            ax.barh(keys[::-1], [importances[x] for x in keys][::-1], color="tab:green")
        else:
            ax.text(0.5, 0.5, "too few trials", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name}: parameter importance")
    fig.tight_layout()
    figures["importances.png"] = fig
    return figures


def _importances(study: Any, k: int) -> dict[str, float]:
    import optuna

    import warnings

    if len(_complete(study)) < 5:
        return {}
    sign = -1.0 if study.directions[k].name == "MAXIMIZE" else 1.0  # the evaluator ranks low values as good
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[k])
    except (ValueError, RuntimeError) as exc:  # dynamic spaces can leave no parameter common to enough trials
        log.debug("no parameter importances: %s", exc)
        return {}
