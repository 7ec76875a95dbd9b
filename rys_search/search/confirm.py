"""The confirmation stage: a promising trial is scored again, the expensive way, before any of its
changes is called a gain.

    >>> confirmer = Confirmer(config, loaded, study)      # config.confirm: mode, split, limit, benchmarks
    >>> if confirmer.wanted(trial, values):               # on the cheap Pareto front, or top k of an objective
    ...     confirmer.confirm(trial, schedule)            # trial attrs "confirmed" and "verdict"

Every trial is scored on the cheap stage (logprob probes on the search split) and the sampler
learns from those values. A trial whose cheap values put it on the study's Pareto front, or
among the best `top_k` of an objective, when it finishes is confirmed inside the same trial
(within the budget `max_confirmed`, spread evenly over the study: paced_budget): each objective
by its confirming suite (generate mode, the held-out split, working allowed, parse rates) and
every benchmark file the config names, each against the unmodified model with a paired interval.
A trial can only enter the front when it finishes, so deciding then misses nothing but what the
pace holds back: when the study's last trial is in, front members left unconfirmed are confirmed
with what remains of the budget (confirm_rest), and `rys-search pareto` confirms any still left.
Each schedule is evaluated by one trial only, so it is confirmed once, whatever the number of
workers or restarts.

The verdict (what the reports say):
- gain: some confirmed change has its paired interval above 0 without its parse rate having risen
  beyond the unmodified model's (a "parse shift": more answers in the asked format, not better
  answers), none has its interval below 0, and no output broke. The interval a gain must clear is
  family-wise: with k confirmed changes judged together each is taken at level 1 - 0.05/k
  (Bonferroni; 99% for five), so that one of them lying above 0 by chance is no likelier than 5%.
  A loss needs only its own 95% interval below 0 to deny a gain;
- mixed: confirmed gains and confirmed losses together;
- worse: confirmed losses only; no change: every confirmed change within its noise;
- broken output: the parse rate fell below the unmodified model's (scoring/objective.py parse_check);
- unconfirmed: only cheap values exist (a cheap change is never called a gain);
- unmodified: the reference itself.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from ..schedule import LayerSchedule

__all__ = ["Confirmer", "VERDICTS", "confirmed_front", "confirmed_of", "counts_against_budget", "paced_budget",
           "stage_specs", "verdict"]

log = logging.getLogger(__name__)
VERDICTS = ("gain", "mixed", "worse", "no change", "broken output", "unconfirmed", "unmodified")


def stage_specs(config: Any) -> list[Any]:
    """The confirmation stage of a resolved, pinned config: confirming suites, then benchmarks."""
    from ..scoring.benchmarks import parse_bench
    from ..scoring.stage import Spec

    c = config.confirm
    limit = c.limit or None
    specs = [Spec.probe(suite, c.mode, split=c.split, limit=limit) for suite in c.objectives.values()]
    for label, path in c.bench.items():
        name, mode, location = parse_bench(f"{label}={path}")
        specs.append(Spec.bench(name, mode, location, c.bench_limit or None))
    return specs


def verdict(confirmed: dict[str, Any] | None, unmodified: bool = False) -> str:
    if unmodified:
        return "unmodified"
    if not confirmed:
        return "unconfirmed"
    from ..scoring.stage import above_zero

    entries = [e for k, e in confirmed.items() if isinstance(e, dict) and "change_interval" in e]
    if any(e.get("broken_output") for e in entries):
        return "broken output"
    better = any(above_zero(e, len(entries)) and not e.get("parse_shift") for e in entries)
    worse = any(e["change_interval"][1] < 0 for e in entries)
    if better and worse:
        return "mixed"
    return "gain" if better else "worse" if worse else "no change"


def paced_budget(budget: int, finished: int, trials: int) -> int:
    """Confirmations allowed once `finished` of `trials` trials are done: the budget spread evenly over
    the study (at least one), so the early fronts of mostly random trials cannot spend it all; what
    is left at the end goes to the front's unconfirmed members (confirm_rest)."""
    return min(budget, max(1, math.ceil(budget * finished / max(1, trials))))


def counts_against_budget(trial: Any) -> bool:
    """Whether a trial was confirmed inside the study at the budget's cost (the unmodified model's
    confirmation, the baseline, is not)."""
    return bool(trial.user_attrs.get("confirmed")) and not trial.user_attrs.get("unmodified")


def _confirmed_in_trials(trials: list[Any]) -> int:
    """How many of these trials were confirmed inside the study, the unmodified model not counted."""
    return sum(1 for t in trials if counts_against_budget(t))


def _dominates(a: list[float], b: list[float], signs: list[int]) -> bool:
    """a dominates b: at least as good everywhere and better somewhere (signs: +1 maximise, -1 minimise)."""
    at_least = all(s * x >= s * y for x, y, s in zip(a, b, signs))
    return at_least and any(s * x > s * y for x, y, s in zip(a, b, signs))


def _signs(study: Any) -> list[int]:
    return [1 if d.name == "MAXIMIZE" else -1 for d in study.directions]


class Confirmer:
    def __init__(self, config: Any, loaded: Any, study: Any):
        from ..scoring.stage import Stage

        self.config = config
        self.loaded = loaded
        self.study = study
        self.specs = stage_specs(config)
        self.stage = Stage(self.specs, list(config.suites))
        self._baseline: dict[str, Any] | None = None

    # ---- which trials ---------------------------------------------------------------------

    def wanted(self, trial: Any, values: list[float], complete: list[Any] | None = None) -> bool:
        """Whether a trial with these cheap values is confirmed: on the front or in a top k, within budget.

        complete: the study's complete trials (read from storage when not given).
        """
        if complete is None:
            complete = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
        others = [t for t in complete if t.number != trial.number]
        allowed = paced_budget(int(self.config.confirm.max_confirmed), len(others) + 1, int(self.config.trials))
        if _confirmed_in_trials(others) >= allowed:
            return False
        signs = _signs(self.study)
        if not any(_dominates(list(t.values), values, signs) for t in others):
            return True  # on the cheap Pareto front as it stands now
        k = self.config.confirm.top_k
        for index, sign in enumerate(signs):
            better = sum(1 for t in others if sign * t.values[index] > sign * values[index])
            if better < k:
                return True
        return False

    # ---- the stage ------------------------------------------------------------------------

    def baseline(self) -> dict[str, Any]:
        """The unmodified model on the confirmation stage: stored on the study, computed once (again
        when it was stored by a version that read results otherwise: benchmarks.reading()).

        Two workers that both find it missing compute the same numbers and store them twice;
        nothing is lost either way.
        """
        if self._baseline is None:
            from ..scoring.benchmarks import reading

            attrs = self.study.user_attrs
            stored = attrs.get("confirm_baseline")
            if stored is None or attrs.get("confirm_reading") != reading():  # read otherwise: again
                start = time.perf_counter()
                stored = self.stage.baseline(self.loaded)
                self.study.set_user_attr("confirm_baseline", stored)
                self.study.set_user_attr("confirm_reading", reading())
                log.info("confirmation stage: unmodified model scored in %.1f s", time.perf_counter() - start)
            self._baseline = stored
        return self._baseline

    def measure(self, schedule: LayerSchedule) -> dict[str, Any]:
        """The schedule on the confirmation stage (the unmodified model: its baseline, changes 0)."""
        baseline = self.baseline()
        if schedule.is_identity(self.loaded.n_layers):
            return {k: {"score": v["score"], "interval": v["interval"], "change": 0.0, "change_interval": [0.0, 0.0],
                        **({"parse_rate": v["parse_rate"]} if v.get("parse_rate") is not None else {})}
                    for k, v in baseline.items()}
        row = self.stage.measure(self.loaded, schedule, baseline)
        for entry in row.values():
            entry.pop("seconds", None)
        return row

    def confirm_later(self, schedule: LayerSchedule) -> dict[str, Any]:
        """Confirm a finished trial's schedule (read-only in Optuna): the result goes on the study,
        under its own key, so two `pareto` processes never overwrite each other's entries."""
        row = self.measure(schedule)
        self.study.set_user_attr(f"confirmed:{schedule}", row)
        return row

    def confirm_rest(self, rows: list[dict[str, Any]]) -> int:
        """At the end of a study, confirm front members the pace left unconfirmed, within what is left
        of the budget, the most convincing cheap change first (the highest lower end of a cheap change
        interval); return how many were confirmed. `rys-search pareto` confirms any still left."""
        complete = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        used = _confirmed_in_trials(complete) + sum(1 for key in self.study.user_attrs if key.startswith("confirmed:"))
        left = int(self.config.confirm.max_confirmed) - used
        waiting = [r for r in rows if r["verdict"] == "unconfirmed"]

        def strength(row: dict[str, Any]) -> float:
            return max((row[k][0] for k in row if k.endswith("_change_interval")), default=float("-inf"))

        chosen = sorted(waiting, key=strength, reverse=True)[:max(0, left)]
        for row in chosen:
            self.confirm_later(LayerSchedule.parse(row["schedule"], n_layers=self.loaded.n_layers))
        return len(chosen)

    def confirm(self, trial: Any, schedule: LayerSchedule) -> dict[str, Any]:
        """Score the schedule on the confirmation stage and record it on the trial."""
        start = time.perf_counter()
        row = self.measure(schedule)
        seconds = time.perf_counter() - start
        trial.set_user_attr("confirmed", row)
        trial.set_user_attr("confirm_seconds", seconds)
        trial.set_user_attr("verdict", verdict(row, schedule.is_identity(self.loaded.n_layers)))
        return row


def confirmed_of(study: Any, trial: Any, attrs: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A trial's confirmed values: recorded in the trial during the study, or in the study by a later
    `rys-search pareto` (finished trials are read-only), keyed by schedule."""
    found = trial.user_attrs.get("confirmed")
    if found is None:
        attrs = study.user_attrs if attrs is None else attrs
        found = attrs.get(f"confirmed:{trial.user_attrs.get('schedule')}")
    return found


def confirmed_front(study: Any, complete: list[Any], config: Any, attrs: dict[str, Any]) -> list[Any]:
    """The Pareto set among confirmed trials, on their confirmed changes.

    Dimensions: each searched objective's confirmed change (maximised), then the extra objectives'
    own values (fixed_point, added_layers: exact, so no confirmation needed). A trial whose
    output broke cannot be on it.
    """
    mapping = config.confirm.objectives
    names = study.user_attrs.get("objectives") or []
    signs = _signs(study)
    points = []
    for t in complete:
        confirmed = confirmed_of(study, t, attrs)
        if not confirmed or verdict(confirmed) == "broken output":
            continue
        point = []
        for index, name in enumerate(names):
            key = f"{mapping[name]}:{config.confirm.mode}" if name in mapping else None
            if key is not None:
                if key not in confirmed:
                    break
                point.append(confirmed[key]["change"])
            else:
                point.append(t.values[index])
        else:
            points.append((t, point))
    return [t for t, p in points if not any(_dominates(q, p, signs) for _, q in points if q is not p)]
