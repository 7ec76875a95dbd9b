"""Keep what the MLflow UI shows of a study current: Pareto tags on trial runs, saved views.

    >>> publish_front(tracker, study)        # after the study closes, and after `rys-search pareto`
    >>> settle_runs(tracker, study, parent)  # the study's end: trial runs reconciled, then the front published

Each trial run of the study carries `rys.pareto` = "true" or "false"; the experiment carries the
study's saved views (runs table of the Pareto members, and of all trials). Optuna's own view of
the study gets the objective names (`study.set_metric_names`), so optuna-dashboard labels its
axes with them.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["dashboard_notes", "name_objectives", "publish_front", "settle_runs", "study_facts", "trial_note"]


def name_objectives(study: Any) -> None:
    """Give the study's objectives their names (once; optuna-dashboard shows them)."""
    names = study.user_attrs.get("objectives")
    if names and len(names) == len(study.directions) and study.metric_names != list(names):
        study.set_metric_names(list(names))


def publish_front(tracker: Any, study: Any, runs: list[Any] | None = None) -> dict[str, Any]:
    """Tag the Pareto members' runs and save the study's views; return the members' numbers.

    runs: the study's trial runs as tracker.trial_runs just read them (default: read here)."""
    name = study.study_name
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    members = {t.number for t in study.best_trials} if complete else set()
    if runs is None:  # read once for both (hundreds of runs: a second read cost 0.5 s)
        runs = tracker.trial_runs(name)
    changed = tracker.mark_pareto(name, members, runs=runs)
    objectives = list(study.user_attrs.get("objectives") or [])
    extra = ["rys.verdict"] if any(t.user_attrs.get("verdict") for t in complete) else []
    tracker.save_views(name, objectives, extra_columns=extra, runs=runs)
    return {"members": sorted(members), "changed": changed}


def settle_runs(tracker: Any, study: Any, parent: str, skip: Callable[[Any], bool] | None = None,
                publish: bool = True) -> dict[str, int]:
    """The study's trial runs at its end: reconciled with the study (tracker.reconcile, skip as there),
    then, where publish, the objectives named and the front published. One read of the runs serves
    both unless the reconcile changed some (then the front reads them again). Returns the reconcile's
    counts."""
    runs = tracker.trial_runs(study.study_name)
    fixed = tracker.reconcile(study, study.study_name, parent, skip=skip, runs=runs)
    if publish:
        name_objectives(study)  # a study made before objectives were named
        publish_front(tracker, study, runs=None if any(fixed.values()) else runs)
    return fixed


def study_facts(study: Any) -> dict[str, Any]:
    """What the UIs need to point at a study: ids, tracking URI, Pareto members, trial runs."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    return {
        "study": study.study_name,
        "study_id": study._study_id,  # optuna-dashboard's URLs use the storage's id
        "tracking_uri": study.user_attrs.get("tracking_uri"),
        "parent_run": study.user_attrs.get("mlflow_parent_run"),
        "objectives": list(study.user_attrs.get("objectives") or []),
        "pareto": sorted(t.number for t in study.best_trials) if complete else [],
        "runs": {t.number: t.user_attrs["mlflow_run"] for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("mlflow_run")},
        "complete": sorted(t.number for t in complete),
    }


def trial_note(trial: Any, member: bool) -> str:
    """A trial's scores as a short Markdown table (optuna-dashboard shows it above the raw attributes)."""
    attrs = trial.user_attrs
    head = f"**#{trial.number}** `{attrs.get('schedule', '?')}`, +{attrs.get('added_layers', '?')} layers"
    head += " · Pareto member" if member else ""
    if attrs.get("verdict"):
        head += f" · verdict: {attrs['verdict']}"
    lines = [head, ""]
    scores = attrs.get("scores") or {}
    if scores:
        lines += ["| objective | score | 95% interval | change | 95% interval |", "|---|---:|---:|---:|---:|"]
        for name, s in scores.items():
            lo, hi = (s.get("interval") or [float("nan")] * 2)[:2]
            clo, chi = (s.get("change_interval") or [float("nan")] * 2)[:2]
            lines.append(f"| {name} | {s.get('score', float('nan')):.2f} | [{lo:.2f}, {hi:.2f}] | "
                         f"{s.get('change', float('nan')):+.2f} | [{clo:+.2f}, {chi:+.2f}] |")
    confirmed = {k: e for k, e in (attrs.get("confirmed") or {}).items() if isinstance(e, dict) and "change" in e}
    if confirmed:  # the confirmation stage's values: what the verdict was decided on
        lines += ["", "confirmed (held-out split, generate mode, benchmark files):", "",
                  "| objective | score | change | 95% interval | parse rate |", "|---|---:|---:|---:|---:|"]
        for name, e in confirmed.items():
            clo, chi = (e.get("change_interval") or [float("nan")] * 2)[:2]
            rate = e.get("parse_rate")
            flags = [f for f, on in (("broken output", e.get("broken_output")), ("parse shift", e.get("parse_shift"))) if on]
            lines.append(f"| {name} | {e.get('score', float('nan')):.2f} | {e['change']:+.2f} | [{clo:+.2f}, {chi:+.2f}] | "
                         + (f"{rate:.0%}" if rate is not None else "") + (f" ({', '.join(flags)})" if flags else "") + " |")
    fixed = attrs.get("fixed_point") or {}
    if fixed:
        worst = [v for k, v in fixed.items() if k.endswith("_contraction")]
        text = f"fixed point: score {fixed.get('score', float('nan')):.3f}, KL {fixed.get('kl', float('nan')):.3f}"
        lines += ["", text + (f", worst block contraction {max(worst):.2f}" if worst else "")]
    reason = attrs.get("pruned_reason") or attrs.get("fail_reason")
    if reason:
        lines += ["", f"{trial.state.name.lower()}: {reason}"]
    return "\n".join(lines) + "\n"


def dashboard_notes(study: Any) -> int:
    """Write each finished trial's note for optuna-dashboard (once); return how many were written."""
    from types import SimpleNamespace

    from optuna_dashboard import get_note, save_note

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    members = {t.number for t in study.best_trials} if complete else set()
    written = 0
    for trial in study.get_trials(deepcopy=False):
        if not trial.state.is_finished():
            continue
        # save_note takes a live trial; a finished one is addressed by storage, study and id
        handle = SimpleNamespace(storage=study._storage, study=study, _trial_id=trial._trial_id)
        note = trial_note(trial, trial.number in members)
        if get_note(handle) != note:
            save_note(handle, note)
            written += 1
    return written
