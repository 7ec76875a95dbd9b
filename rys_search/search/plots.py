"""The study's figures for its MLflow parent run and its report.

    >>> figures = study_figures(study, config, n_layers)   # {"pareto_front.png": Figure, ...}

Pareto front (every pair of objectives), optimisation history, parameter importances, and the
layer view that fits the study: for single-block (grid) studies the RYS literature's (i, j)
heatmap of the change against the unmodified model; for multi-block studies, where a heatmap
cell is one schedule out of hundreds, the per-layer view (layers.png): how often each layer is
repeated among the good trials against all trials, and the mean change by block start and width.

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


def study_figures(study: Any, config: Any, n_layers: int, trials: list[Any] | None = None) -> dict[str, Any]:
    """The study's figures by file name; trials: its trials where the caller holds them all (a study run
    alone: the loop's, the same as stored), else they are read from its storage (once)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .trials_view import given_trials

    study = given_trials(study, study.get_trials(deepcopy=False) if trials is None else trials)
    names = config.objective_names()
    trials = _complete(study)
    figures: dict[str, Any] = {}
    best = {t.number for t in study.best_trials} if trials else set()

    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    groups = {  # one scatter per group, not per trial: a figure of hundreds of artists draws slowly
        "front": ([t for t in trials if t.number in best], {"c": "tab:red", "s": 30, "alpha": 0.9}),
        "rest": ([t for t in trials if t.number not in best], {"c": "tab:gray", "s": 12, "alpha": 0.5}),
        "unmodified": ([t for t in trials if t.user_attrs.get("added_layers", 1) == 0],
                       {"marker": "*", "s": 160, "c": "black", "label": "unmodified"}),
    }
    for ax, (a, b) in zip(axes[0], pairs):
        for group in ("rest", "front", "unmodified"):  # drawn in this order: the front over the rest
            members, style = groups[group]
            if members:
                ax.scatter([t.values[a] for t in members], [t.values[b] for t in members], **style)
        ax.set_xlabel(names[a])
        ax.set_ylabel(names[b])
        ax.grid(alpha=0.3)
    fig.suptitle(f"{config.name}: Pareto front (red) among {len(trials)} complete trials")
    fig.tight_layout()
    figures["pareto_front.png"] = fig

    if single_block(config):
        figures["ij_heatmap.png"] = _ij_heatmap(plt, trials, config, n_layers)
    else:
        figures["layers.png"] = layer_view(plt, trials, list(config.objectives), n_layers)
    figures.update(_history_and_importances(plt, study, trials, names))
    return figures


def single_block(config: Any) -> bool:
    """A study whose schedules repeat one block: the (i, j) heatmap is its natural picture."""
    return config.sampler == "grid" or config.space.max_blocks == 1


def _ij_heatmap(plt, trials, config, n_layers: int):
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
    return fig


def _history_and_importances(plt, study, trials, names) -> dict[str, Any]:
    figures = {}
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


def trial_blocks(trial) -> list[tuple[int, int, int]]:
    """(start, width, extra passes) of each block a trial repeats, read from its "blocks" attribute."""
    text = trial.user_attrs.get("blocks", "")
    found = []
    for part in (text.split(",") if text and text != "none" else []):
        span, _, runs = part.partition("x")
        first, _, last = span.partition("-")
        try:
            start, end, extra = int(first), int(last or first), int(runs or 2) - 1
        except ValueError:
            continue
        found.append((start, end - start + 1, extra))
    return found


def good_trials(trials, name: str, share: float = 0.25) -> list:
    """The top share (at least one) of the modified trials by their change in objective `name`."""
    scored = [t for t in trials if trial_blocks(t) and (t.user_attrs.get("scores") or {}).get(name, {}).get("change") is not None]
    scored.sort(key=lambda t: t.user_attrs["scores"][name]["change"], reverse=True)
    return scored[: max(1, int(round(share * len(scored))))] if scored else []


def layer_counts(trials, n_layers: int) -> np.ndarray:
    """Per layer, the share of trials that repeat it (any number of extra passes)."""
    counts = np.zeros(n_layers)
    for t in trials:
        hit = np.zeros(n_layers, dtype=bool)
        for start, width, _ in trial_blocks(t):
            hit[start : min(n_layers, start + width)] = True
        counts += hit
    return counts / max(1, len(trials))


def change_by_block(trials, name: str, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean change in `name` (and trial count) by block start (columns) and width (rows)."""
    widths = max([w for t in trials for _, w, _ in trial_blocks(t)] or [1])
    total, count = np.zeros((widths + 1, n_layers)), np.zeros((widths + 1, n_layers))
    for t in trials:
        change = (t.user_attrs.get("scores") or {}).get(name, {}).get("change")
        if change is None:
            continue
        for start, width, _ in trial_blocks(t):
            if start < n_layers:
                total[width, start] += change
                count[width, start] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean[1:], count[1:]


def layer_view(plt, trials, objectives: list[str], n_layers: int):
    """Per objective: layer repeat frequency among the good trials vs all, and change by block start and width."""
    from matplotlib.ticker import MaxNLocator

    modified = [t for t in trials if trial_blocks(t)]
    fig, axes = plt.subplots(len(objectives), 2, figsize=(13, 3.6 * len(objectives)), squeeze=False)
    everyone = layer_counts(modified, n_layers)
    layers = np.arange(n_layers)
    for row, name in enumerate(objectives):
        good = good_trials(trials, name)
        ax = axes[row][0]
        ax.bar(layers, layer_counts(good, n_layers), color="tab:green", alpha=0.8,
               label=f"top quarter by {name} change ({len(good)} trials)")
        ax.step(layers, everyone, where="mid", color="black", lw=1.2, label=f"all modified trials ({len(modified)})")
        ax.set_xlim(-0.5, n_layers - 0.5)
        ax.set_ylim(0, 1.35)  # room for the legend above the bars
        ax.set_xlabel("layer")
        ax.set_ylabel("share that repeat it")
        ax.set_title(f"{name}: which layers the best trials repeat")
        ax.legend(fontsize=8, loc="upper left", ncol=2, framealpha=0.9)
        ax.grid(alpha=0.3)
        ax = axes[row][1]
        mean, count = change_by_block(modified, name, n_layers)
        limit = np.nanmax(np.abs(mean)) if np.isfinite(mean).any() else 1.0
        limit = limit if limit > 0 else 1.0
        image = ax.imshow(mean, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto",
                          extent=(-0.5, n_layers - 0.5, 0.5, mean.shape[0] + 0.5))
        for (w, s), c in np.ndenumerate(count):
            if c and mean.shape[0] * n_layers <= 400:
                ax.text(s, w + 1, int(c), ha="center", va="center", fontsize=7, color="0.2")
        ax.set_xlabel("block start (layer)")
        ax.set_ylabel("block width (layers)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name}: mean change vs unmodified, by block (numbers: trials)")
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.tight_layout()
    return fig


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
