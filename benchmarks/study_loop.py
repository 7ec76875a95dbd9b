"""The study loop's own cost: sampler, tracking and evaluation seconds per trial as a study grows.

    python benchmarks/study_loop.py --trials 500                      # stub objective, CPU, minutes
    python benchmarks/study_loop.py --trials 500 --sampler grid       # the grid sweep, stub objective
    python benchmarks/study_loop.py --trials 500 --model .stage/qwen.gguf   # real model and probes (GPU)
    python benchmarks/study_loop.py --trials 300 --profile loop.prof  # cProfile of the loop, top 25 printed
    python benchmarks/study_loop.py --trials 500 --compare-tpe        # TPE settings: cost and hypervolume
    python benchmarks/study_loop.py --trials 500 --compare-split      # TPE's split memo against Optuna's split

Runs `run_study` itself (Optuna storage on SQLite, MLflow on SQLite, progress line, the
multi-worker checks) in a fresh folder. Without --model the objectives are a stub: each
schedule's scores are a fixed function of its blocks (a smooth landscape plus hash noise, so a
sampler has something to learn and proposes duplicates as a real study does), stored with the
same attributes and per-item records as real scores, so tracking writes what it writes in a
real study; --eval-seconds adds a sleep per scored trial. The stub study has no confirmation
stage (there is no model to confirm on); its cost is evaluation, measured with --model. Per trial, from the runner's own
timings: evaluation (objectives), tracking (MLflow inside the loop: queueing the trial's run for
the writer process and waiting for it at the end, search/trial_runs.py) and sampler (the rest of the
loop: Optuna's sampler and storage, the duplicate and admission checks, the progress line).
The table gives each as the mean over the 10 trials ending at trial 50, 250 and 500 (and the
last), then totals. To compare before and after, run the other checkout's copy of this script:
it puts its own checkout first on sys.path, so PYTHONPATH alone would not change the code it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _noise(key: str, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5


def stub_scores(schedule, n_layers: int) -> dict[str, float]:
    """Math / eq / reasoning for a schedule: peaks at middle blocks, costs for depth, noise."""
    blocks = schedule.blocks(n_layers) or ()
    key = str(schedule)
    base = {"math": 60.0, "eq": 50.0, "reasoning": 30.0}
    centres = {"math": 0.45, "eq": 0.6, "reasoning": 0.35}
    out = {}
    for name, value in base.items():
        for b in blocks:
            mid = (b.start + b.end) / 2 / n_layers
            gain = 6.0 * (1 - 8 * (mid - centres[name]) ** 2) - 0.4 * (b.end - b.start + 1) * b.extra
            value += gain
        out[name] = max(0.0, min(100.0, value + 3.0 * _noise(key, name)))
    return out


def install_stub(items_per_objective: int, eval_seconds: float, prune_share: float) -> None:
    """Replace StudyRunner._evaluate (scores) by the stub, with the real one's trial attributes."""
    import optuna

    from rys_search.search.runner import StudyRunner

    def evaluate(self, trial, schedule, items):
        if eval_seconds:
            time.sleep(eval_seconds)
        key = str(schedule)
        if not schedule.is_identity(self.n_layers) and _noise(key, "screen") + 0.5 < prune_share:
            reason = "fixed-point screen: next-token KL 2.500 > 2.0"
            trial.set_user_attr("fixed_point", {"score": 0.0, "interval": [0.0, 0.0], "kl": 2.5})
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        values, scores = [], {}
        stub = stub_scores(schedule, self.n_layers)
        for name in self.config.objectives:  # pinned keys ('math@1'): the stub scores the suite's name
            score = stub[name.split("@")[0]]
            items[name] = [{"id": f"{name}-{k}", "score": round(score / 100 + 0.1 * _noise(f"{key}{k}", name), 4),
                            "exact": k % 2} for k in range(items_per_objective)]
            scores[name] = {"score": score, "interval": [score - 2, score + 2], "noise": 1.5,
                            "change": score - 50, "change_interval": [score - 52, score - 48], "seconds": eval_seconds}
            values.append(score)
        trial.set_user_attr("fixed_point", {"score": 0.5, "interval": [0.4, 0.6], "kl": 0.1})
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("tokens", 1000)
        if "added_layers" in self.config.extra_objectives:
            values.append(float(schedule.added_layers(self.n_layers)))
        return values

    StudyRunner._evaluate = evaluate


def install_recorder(rows: list[tuple[float, float, float, str]]) -> None:
    """After each trial: (clock, evaluation so far, loop tracking so far, state)."""
    from rys_search.search.runner import StudyRunner

    original = StudyRunner.on_finished

    def on_finished(self, study, trial):
        original(self, study, trial)
        rows.append((time.perf_counter(), self.timings.evaluation, self.timings.trial_tracking, trial.state.name))

    StudyRunner.on_finished = on_finished


def per_trial(rows):
    """Each trial's seconds from the recorder's rows (the first trial, which has no row before it, is left out)."""
    out, last = [], rows[0][:3]
    for clock, evaluation, tracking, state in rows[1:]:
        wall, ev, tr = clock - last[0], evaluation - last[1], tracking - last[2]
        out.append({"evaluation": ev, "tracking": tr, "sampler": max(0.0, wall - ev - tr), "state": state})
        last = (clock, evaluation, tracking)
    return out


TPE_VARIANTS = {  # name -> TPESampler settings (constant_liar as the study uses it, for several workers)
    "the study's (search/tpe.py)": None,
    "multivariate+group, Optuna's": dict(multivariate=True, group=True, constant_liar=True),
    "multivariate+group, 20 startup": dict(multivariate=True, group=True, constant_liar=True, n_startup_trials=20),
    "multivariate, no group": dict(multivariate=True, constant_liar=True),
    "independent": dict(constant_liar=True),
}


def stub_search(sampler, trials: int, n_layers: int) -> tuple[list[float], list, list[str]]:
    """A study of the stub landscape in memory, the default space, the unmodified model first: the seconds
    of each trial's proposal, the scores told (None: a pruned duplicate) and the schedules proposed.

    As in a study, a schedule proposed again is a pruned duplicate: it spends a trial and teaches nothing.
    """
    import warnings

    import optuna

    from rys_search.search.config import load_config
    from rys_search.search.space import UNMODIFIED, suggest_schedule

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_config().space
    study = optuna.create_study(directions=["maximize"] * 3, sampler=sampler)
    study.enqueue_trial({}, user_attrs={UNMODIFIED: True})
    seconds, points, proposed = [], [], []
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask()
        schedule = suggest_schedule(trial, n_layers, space)
        seconds.append(time.perf_counter() - t0)
        if str(schedule) in proposed:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            points.append(None)
        else:
            values = list(stub_scores(schedule, n_layers).values())
            study.tell(trial, values)
            points.append(tuple(values))
        proposed.append(str(schedule))
    return seconds, points, proposed


def compare_split(trials: int, n_layers: int, seeds: list[int]) -> None:
    """The study's TPE with Optuna's own split of the trials, then with its memo (search/tpe_split.py),
    in turn for each seed on the stub landscape: seconds of proposing, and whether both proposed the same."""
    from optuna.samplers._tpe import sampler as tpe

    from rys_search.search.samplers import build_sampler
    from rys_search.search.tpe_split import memoize_split

    memoize_split()
    memo = tpe._split_trials
    print(f"the study's TPE, {trials} trials of the stub landscape ({n_layers} layers), in memory")
    own, memoized = "Optuna's split", "split memo"
    try:
        for seed in seeds:
            got = {}
            for name, split in ((own, memo.__wrapped__), (memoized, memo)):
                sampler = build_sampler("tpe", seed=seed)
                tpe._split_trials = split  # looked up by TPE at each call
                seconds, _, proposed = stub_search(sampler, trials, n_layers)
                got[name] = proposed
                print(f"seed {seed}  {name:<15} {sum(seconds):6.2f} s proposing, {len(set(proposed))} distinct schedules")
            print(f"seed {seed}  same proposals: {got[own] == got[memoized]}")
    finally:
        tpe._split_trials = memo


def compare_tpe(trials: int, n_layers: int, seeds: list[int]) -> None:
    """TPE settings on the stub landscape, in memory: sampler seconds per trial and hypervolume reached."""
    import optuna

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from search_efficiency import hypervolume

    from rys_search.search.samplers import build_sampler

    runs = {}
    for name, settings in TPE_VARIANTS.items():
        for seed in seeds:
            sampler = build_sampler("tpe", seed=seed, shared=True) if settings is None else \
                optuna.samplers.TPESampler(seed=seed, **settings)
            seconds, points, proposed = stub_search(sampler, trials, n_layers)
            runs[(name, seed)] = (seconds, points, len(set(proposed)), trials)
    ref = tuple(min(p[k] for _, pts, _, _ in runs.values() for p in pts if p) - 1e-9 for k in range(3))
    best = max(hypervolume([p for p in pts if p], ref) for _, pts, _, _ in runs.values())
    marks = [m for m in (50, 250, 500) if m <= trials]
    print(f"TPE settings on the stub landscape ({n_layers} layers, the default space), in memory, "
          f"{trials} trials, seeds {seeds}; mean over seeds")
    print(f"{'settings':<32} " + " ".join(f"{'s/trial@' + str(m):>12}" for m in marks)
          + " " + " ".join(f"{'HV@' + str(m):>8}" for m in marks) + f" {'distinct':>9}")
    for name in TPE_VARIANTS:
        rows = [runs[(name, seed)] for seed in seeds]
        cost = [statistics.fmean(statistics.fmean(r[0][max(0, m - 10) : m]) for r in rows) for m in marks]
        hv = [statistics.fmean(hypervolume([p for p in r[1][:m] if p], ref) / best for r in rows) for m in marks]
        distinct = statistics.fmean(r[2] for r in rows)
        print(f"{name:<32} " + " ".join(f"{c:>12.4f}" for c in cost) + " " + " ".join(f"{h:>8.1%}" for h in hv)
              + f" {distinct:>9.0f}")
    print("HV: hypervolume of the trials so far over the best final one of all runs (reference: the worst scores seen); "
          "distinct: schedules scored (the rest were duplicates)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--model", default=None, help="a real model (otherwise the stub objective)")
    parser.add_argument("--limit", type=int, default=None, help="items per objective (real model; default all)")
    parser.add_argument("--items", type=int, default=200, help="per-item records per objective (stub)")
    parser.add_argument("--eval-seconds", type=float, default=0.0, help="sleep per scored trial (stub)")
    parser.add_argument("--prune-share", type=float, default=0.1, help="share of schedules the stub screen prunes")
    parser.add_argument("--n-layers", type=int, default=28, help="layers of the stub model (Qwen2.5-1.5B: 28)")
    parser.add_argument("--workdir", default=None, help="folder for studies/ and mlruns/ (default: a temporary one)")
    parser.add_argument("--profile", default=None, help="write a cProfile of the run here and print its top entries")
    parser.add_argument("--compare-tpe", action="store_true",
                        help="instead: TPE settings on the stub landscape in memory (cost per trial, hypervolume)")
    parser.add_argument("--compare-split", action="store_true",
                        help="instead: the study's TPE with Optuna's split and with its split memo, in turn (seconds, "
                             "the same proposals)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds for --compare-tpe and --compare-split")
    args = parser.parse_args()
    if args.compare_tpe or args.compare_split:
        (compare_tpe if args.compare_tpe else compare_split)(args.trials, args.n_layers, [int(s) for s in args.seeds.split(",")])
        return

    from rys_search.search.config import load_config
    from rys_search.search.study import run_study

    rows: list = []
    install_recorder(rows)
    overrides = {"trials": args.trials, "sampler": args.sampler, "name": "loop"}
    if args.sampler == "grid":
        from rys_search.search.config import SearchSpace

        overrides["space"] = SearchSpace(max_blocks=1, width=(1, 8), extra_passes=(1, 1), max_added_layers=8, region=(1, -2))
    if args.model:
        from rys_search.search.study import load_study_model

        overrides["model"] = args.model
        if args.limit is not None:
            overrides["limit"] = args.limit
        t0 = time.perf_counter()
        loaded = load_study_model(load_config(overrides=overrides))
        print(f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s")
    else:
        install_stub(args.items, args.eval_seconds, args.prune_share)
        overrides["model"] = "stub"
        overrides["limit"] = 1
        overrides["confirm"] = {"enabled": False}  # the stub has no model to confirm on (its cost is evaluation)
        loaded = SimpleNamespace(n_layers=args.n_layers, family=SimpleNamespace(repeat_period=1),
                                 device=SimpleNamespace(type="cpu"), token_budget=None, runtime=None)
    config = load_config(overrides=overrides)
    folder = args.workdir or tempfile.mkdtemp(prefix="study-loop-")
    os.chdir(folder)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    summary = run_study(config, loaded=loaded, progress=True, out=open(os.devnull, "w"))
    total = time.perf_counter() - start
    if profiler is not None:
        import pstats

        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(25)
    trials = per_trial(rows)
    states = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"{'stub objective' if not args.model else args.model}, sampler {args.sampler}, {summary['finished_trials']} "
          f"finished trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, {states['FAIL']} failed), "
          f"status {summary['status']}" + (f" ({summary['stopped_reason']})" if summary.get("stopped_reason") else ""))
    print(f"seconds per trial, mean of the 10 trials ending at trial N:")
    print(f"{'trial':>6} {'sampler':>9} {'tracking':>9} {'evaluation':>11}")
    marks = sorted({m for m in (50, 250, 500) if m <= len(rows)} | {len(rows)})
    for mark in marks:
        window = trials[max(0, mark - 11) : mark - 1]  # trials[k] is trial k + 2 of this run
        line = [statistics.fmean(t[k] for t in window) for k in ("sampler", "tracking", "evaluation")]
        print(f"{mark:>6} {line[0]:>9.4f} {line[1]:>9.4f} {line[2]:>11.4f}")
    seconds = summary["seconds"]
    print(f"totals: {total:.1f} s in run_study = sampler {seconds['sampler']:.1f} s, tracking {seconds['tracking']:.1f} s "
          f"(in the loop {sum(t['tracking'] for t in trials):.1f} s; the writer process's "
          f"{seconds.get('tracking_beside', 0.0):.1f} s of MLflow runs and {seconds.get('storing_beside', 0.0):.1f} s "
          f"storing trials beside them not counted), evaluation {seconds['evaluation']:.1f} s, "
          f"load {seconds['load']:.1f} s; sampler + tracking = "
          f"{(seconds['sampler'] + seconds['tracking']) / max(total, 1e-9):.0%} of the run")
    print(f"study folder: {folder}")


if __name__ == "__main__":
    main()
