"""One trial: suggest a schedule, refuse a duplicate, screen it, score the probes, record it.

    >>> runner = StudyRunner(config, loaded, study, tracker, parent_run, runs=TrialRuns(tracker.uri))
    >>> study.optimize(runner, n_trials=1, callbacks=[runner.on_finished])
    >>> runner.wait_for_tracking()      # or wait_for_tracking(finish=False), the study's end, finish_tracking()

A schedule that fails the fixed-point screen is pruned with its reason, without paying for the
probes; a scored one records its scores, intervals and paired changes against the unmodified
model as trial attributes, and a promising one is confirmed on the expensive stage before the
trial ends (confirm.py). on_finished queues the finished trial for the writer process (its
MLflow run; in a study run alone, the trial itself: trial_runs.py, alone.py), updates the progress line and stops
the study after MAX_CONSECUTIVE_FAILURES failures in a row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import first_line
from ..schedule import LayerSchedule
from .config import StudyConfig
from .parallel import WORKER, Surplus, admitted, live_trials, original_of, utc_offset
from .recovery import fail_dead

__all__ = ["StudyRunner", "Timings"]

log = logging.getLogger(__name__)
MAX_CONSECUTIVE_FAILURES = 3


@dataclass
class Timings:
    load: float = 0.0
    evaluation: float = 0.0  # objectives: inside trials, and the confirmations after the loop
    after_loop: float = 0.0  # the part of evaluation spent after the loop (the end-of-study confirmations)
    tracking: float = 0.0  # MLflow, all of it that the study waited for
    trial_tracking: float = 0.0  # MLflow, inside the optimisation loop (the trials' runs: queueing and waits)
    tracking_beside: float = 0.0  # the trials' runs written by the writer process while trials ran (trial_runs.py)
    storing_beside: float = 0.0  # a study run alone: its trials stored by the writer process (alone.py)
    optimize: float = 0.0  # the whole loop

    def sampler(self) -> float:
        """Loop time that is neither evaluation nor tracking: Optuna's sampler and storage."""
        return max(0.0, self.optimize - (self.evaluation - self.after_loop) - self.trial_tracking)


@dataclass
class StudyRunner:
    config: StudyConfig
    loaded: Any
    study: Any
    tracker: Any = None
    parent_run: str | None = None
    progress: Any = None
    timings: Timings = field(default_factory=Timings)
    runs: Any = None  # the writer process (trial_runs.TrialRuns) that each finished trial is queued to

    def __post_init__(self) -> None:
        from ..scoring import get_objective

        self.n_layers = self.loaded.n_layers
        self.period = self.loaded.family.repeat_period
        self.limit = self.config.item_limit()
        self.probes = {n: get_objective(n, mode=self.config.mode, suites=list(self.config.suites)) for n in self.config.objectives}
        self.fixed_point = get_objective("fixed_point")
        self.baseline: dict[str, Any] = {}
        self.items: dict[int, dict[str, Any]] = {}
        self.consecutive_failures = 0
        self.stopped_reason: str | None = None
        self.trials_run = 0  # trials this worker took, surplus ones included
        self.surplus = 0
        self.confirmer = None
        if self.config.confirm.enabled:
            from .confirm import Confirmer

            self.confirmer = Confirmer(self.config, self.loaded, self.study)
        self.grid = None
        if self.config.sampler == "grid":
            from .space import grid_pairs

            self.grid = grid_pairs(self.n_layers, self.config.space, self.period)
        self.first_new = len(self.study.get_trials(deepcopy=False))  # trials from here on are this run's
        self.queued: set[int] = set()

    # ---- one trial ---------------------------------------------------------------------

    def suggest(self, trial) -> LayerSchedule:
        from .encoding import suggest_fixed
        from .space import suggest_grid, suggest_schedule

        if self.grid is not None:
            return suggest_grid(trial, self.n_layers, self.grid)
        suggest = suggest_fixed if self.config.encoding() == "fixed" else suggest_schedule
        return suggest(trial, self.n_layers, self.config.space, self.period)

    def _baseline(self, name: str):
        if name not in self.baseline:
            objective = self.probes[name]
            self.baseline[name] = objective.evaluate(
                self.loaded, LayerSchedule.identity(self.n_layers), split=self.config.split, limit=self.limit
            )
        return self.baseline[name]

    def __call__(self, trial) -> list[float]:
        import optuna

        trial.set_user_attr("worker", WORKER)  # first: a dead worker's trial can be told from a live one
        trial.set_user_attr("utc_offset", utc_offset())  # its times are this host's local times
        self.trials_run += 1
        schedule = self.suggest(trial)
        key = str(schedule)
        blocks = schedule.blocks(self.n_layers) or ()
        trial.set_user_attr("schedule", key)  # published before the checks below read the others'
        trial.set_user_attr("blocks", ",".join(str(b) for b in blocks) or "none")
        trial.set_user_attr("added_layers", schedule.added_layers(self.n_layers))
        live = live_trials(self.study)  # one read, after the schedule is published, for both checks
        if not admitted(self.study, trial, self.config.trials, live=live):
            reason = f"surplus: the study had {self.config.trials} trials finished or running when it started"
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("fail_reason", reason)
            raise Surplus(reason)
        first = original_of(self.study, trial, key, fail_dead=fail_dead, live=live)
        if first != trial.number:  # scored (or being scored) by a lower trial: never twice
            trial.set_user_attr("duplicate_of", first)
            trial.set_user_attr("pruned_reason", f"duplicate of trial {first}")
            raise optuna.TrialPruned(f"duplicate of trial {first}")
        if self.tracker is not None:  # the trial's run is open while it runs: a crash leaves it RUNNING
            t0 = time.perf_counter()
            unmodified = schedule.is_identity(self.n_layers)
            if self.runs is not None and self.runs.opens:  # alone: the writer opens it, stores its id with the trial
                self.runs.open(trial.number, self.config.name, self.parent_run, schedule=key, unmodified=unmodified)
            else:
                run = self.tracker.open_trial_run(self.parent_run, self.config.name, trial.number, schedule=key,
                                                  unmodified=unmodified)  # params when it closes
                trial.set_user_attr("mlflow_run", run)
            self._tracked(t0)
        start = time.perf_counter()
        items: dict[str, Any] = {}
        try:
            from ..scoring.memory import retry_out_of_memory

            return retry_out_of_memory(self.loaded, lambda: self._evaluate(trial, schedule, items))
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {first_line(exc, '')}"
            trial.set_user_attr("fail_reason", reason[:500])
            raise
        finally:
            seconds = time.perf_counter() - start
            self.timings.evaluation += seconds
            trial.set_user_attr("seconds", seconds)
            self.items[trial.number] = items

    def _tracked(self, since: float) -> None:
        """Count the seconds since `since` as the loop's tracking."""
        seconds = time.perf_counter() - since
        self.timings.tracking += seconds
        self.timings.trial_tracking += seconds

    def wait_for_tracking(self, stored_study: Any = None, quiet: bool = False, finish: bool = True) -> None:
        """Every finished trial written (the loop's last tracking), the writer process ended (finish)
        or still there for the study's end (trial_runs.TrialRuns.close_study; finish_tracking ends it).

        stored_study: the study's storage when the loop ran on an in-memory copy (alone.py): the
        loop's finished trials not yet queued (the one a Ctrl-C failed) are queued first, and the
        study attributes set during the loop are stored. quiet: a failed write is logged, not raised.
        """
        if self.runs is None:
            return
        t0 = time.perf_counter()
        if stored_study is not None:
            for trial in self.study.get_trials(deepcopy=False)[self.first_new:]:
                if trial.state.is_finished() and trial.number not in self.queued:
                    self._queue(trial)
        self._writer(self.runs.finish if finish else self.runs.drain, quiet)
        if stored_study is not None:
            from .alone import copy_study_attrs

            copy_study_attrs(self.study, stored_study)
        self._tracked(t0)
        self.timings.tracking_beside = self.runs.seconds
        self.timings.storing_beside = self.runs.stored_seconds

    def finish_tracking(self, quiet: bool = False) -> None:
        """The writer process ended once what it was given is written (after wait_for_tracking(finish=False))."""
        if self.runs is None:
            return
        t0 = time.perf_counter()
        self._writer(self.runs.finish, quiet)
        self.timings.tracking += time.perf_counter() - t0  # after the loop: not the loop's tracking
        self.timings.tracking_beside = self.runs.seconds

    @staticmethod
    def _writer(call: Any, quiet: bool) -> None:
        """call() (the writer's drain or finish); quiet: a failed write it raises is logged, not raised."""
        try:
            call()
        except Exception as exc:
            if not quiet:
                raise
            log.warning("%s", exc)

    def _evaluate(self, trial, schedule: LayerSchedule, items: dict[str, Any]) -> list[float]:
        import math

        import optuna

        from ..scoring import evaluate_probes, paired_change

        tokens = 0
        fp = None
        if self.config.screen.enabled or "fixed_point" in self.config.extra_objectives:
            fp = self.fixed_point.evaluate(self.loaded, schedule)
            tokens += fp.tokens
            items["fixed_point"] = fp.items
            trial.set_user_attr("fixed_point", {"score": fp.score, "interval": list(fp.interval), **fp.metrics})
            reason = self._screen(fp)
            if reason:
                trial.set_user_attr("pruned_reason", reason)
                trial.set_user_attr("tokens", tokens)
                raise optuna.TrialPruned(reason)
        values = []
        scores = {}
        # the probes share one engine pass: fuller batches, fewer forward calls
        together = evaluate_probes(list(self.probes.values()), self.loaded, schedule, split=self.config.split,
                                   limit=self.limit)
        for name, result in zip(self.probes, together):
            if not math.isfinite(result.score):
                raise FloatingPointError(f"the {name} score is {result.score} (non-finite model output?)")
            if schedule.is_identity(self.n_layers):
                self.baseline.setdefault(name, result)
            change, lo, hi = paired_change(result, self._baseline(name))
            tokens += result.tokens
            items[name] = result.items
            scores[name] = {"score": result.score, "interval": list(result.interval), "noise": result.noise,
                            "change": change, "change_interval": [lo, hi], "seconds": result.seconds}
            values.append(result.score)
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("tokens", tokens)
        if "fixed_point" in self.config.extra_objectives:
            values.append(fp.score)
        if "added_layers" in self.config.extra_objectives:
            values.append(float(schedule.added_layers(self.n_layers)))
        if self.confirmer is not None and self.confirmer.wanted(trial, values):
            self.confirmer.confirm(trial, schedule)  # the expensive stage, inside the trial: recorded on it
        else:
            trial.set_user_attr("verdict", "unmodified" if schedule.is_identity(self.n_layers) else "unconfirmed")
        if self.confirmer is not None:  # confirmed losses and broken output steer the sampler away (> 0: infeasible)
            trial.set_constraint("confirmed", 1.0 if trial.user_attrs["verdict"] in ("worse", "broken output") else 0.0)
        return values

    def _screen(self, fp) -> str | None:
        screen = self.config.screen
        if fp.metrics.get("kl", 0.0) > screen.max_kl:
            return f"fixed-point screen: next-token KL {fp.metrics['kl']:.3f} > {screen.max_kl}"
        for key, value in fp.metrics.items():
            if key.endswith("_contraction") and value > screen.max_contraction:
                return f"fixed-point screen: {key.split('_')[0]} contraction {value:.2f} > {screen.max_contraction}"
        return None

    # ---- after each trial ---------------------------------------------------------------

    def on_finished(self, study, trial) -> None:
        from optuna.trial import TrialState

        if trial.user_attrs.get("surplus"):
            self.surplus += 1  # not a failure of the model: the study was full
        elif trial.state == TrialState.FAIL:
            self.consecutive_failures += 1
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                self.stopped_reason = (f"{self.consecutive_failures} trials failed in a row; the last: "
                                       f"{trial.user_attrs.get('fail_reason', 'unknown error')}")
                study.stop()
        else:
            self.consecutive_failures = 0
        start = time.perf_counter()
        if self.runs is not None:
            self._queue(trial)
        self._tracked(start)
        if self.progress is not None:
            self.progress.update(study, trial, self)

    def _queue(self, trial) -> None:
        """Queue a finished trial for the writer process: stored (a study run alone), its MLflow run closed."""
        from ..tracking import trial_params

        self.queued.add(trial.number)
        self.runs.close(trial, self.config.name, self.parent_run, items=self.items.pop(trial.number, None),
                        params={**trial_params(trial), "sampler": self.config.sampler})
