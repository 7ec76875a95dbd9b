"""Where a study's sampler and tracking seconds go: `rys-search run` with timers around their pieces.

    python benchmarks/study_breakdown.py run --config study.toml      # any `rys-search run` arguments
    python benchmarks/study_breakdown.py run --trials 500 --model qwen.gguf --no-confirm

Runs the command itself, in this process, with each function below wrapped in a timer; after
the study's own summary (its `time:` line: load, evaluation, sampler, tracking, total) it prints
the seconds and calls of each, largest first. Only this process is timed: the writer process
(search/trial_runs.py) opens and closes trials' runs and draws the study's figures beside it,
and what the study waits for shows as StudyRunner.wait_for_tracking (after the loop) and
StudyRunner.finish_tracking (the study's end). Tracker.__init__ includes the command's own check
of the tracking store, made before the study's clock starts. The timers cost microseconds a call.
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIMED = [
    ("rys_search.search.study", "load_study_model"), ("rys_search.search.study", "open_study"),
    ("rys_search.tracking", "Tracker.__init__"), ("rys_search.tracking", "Tracker.study_run"),
    ("rys_search.tracking", "Tracker.reconcile"), ("rys_search.tracking", "Tracker.open_trial_run"),
    ("rys_search.tracking", "Tracker.close_study"), ("rys_search.search.plots", "study_figures"),
    ("rys_search.search.publish", "publish_front"), ("rys_search.search.publish", "settle_runs"),
    ("rys_search.tracking", "Tracker.trial_runs"),
    ("rys_search.search.runner", "StudyRunner._evaluate"), ("rys_search.search.runner", "StudyRunner.suggest"),
    ("rys_search.search.runner", "StudyRunner._queue"), ("rys_search.search.runner", "StudyRunner.wait_for_tracking"),
    ("rys_search.search.runner", "StudyRunner.finish_tracking"), ("rys_search.search.runner", "live_trials"),
    ("rys_search.search.runner", "admitted"), ("rys_search.search.runner", "original_of"),
    ("rys_search.search.progress", "Progress.update"),
    ("optuna.samplers", "TPESampler.sample_relative"), ("optuna.samplers", "TPESampler.infer_relative_search_space"),
    ("optuna.samplers", "TPESampler.sample_independent"), ("optuna.study.study", "Study.ask"),
    ("optuna.study.study", "Study.tell"),
]


def wrap(module: str, attr: str, spent: dict[str, list[float]]) -> bool:
    """Time every call of module.attr ("Class.method" too) into spent[attr]; False where there is none."""
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    function = getattr(owner, name, None)
    if function is None:
        return False

    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            entry = spent.setdefault(attr, [0.0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    setattr(owner, name, timed)
    return True


def main() -> int:
    started = time.perf_counter()
    spent: dict[str, list[float]] = {}
    missing = [attr for module, attr in TIMED if not wrap(module, attr, spent)]
    from rys_search.cli import main as cli

    code = cli(sys.argv[1:])
    print(f"breakdown (this process, {time.perf_counter() - started:.1f} s in all):")
    for attr, (seconds, calls) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        print(f"  {attr:45} {seconds:8.2f} s  {calls:6d} calls")
    if missing:
        print(f"  not in this code: {', '.join(missing)}")
    return code


if __name__ == "__main__":  # the writer process imports this file again (spawn): it must not run the study
    sys.exit(main())
