"""The `rys-search` command line.

    rys-search info [--model M] [--json]
    rys-search info --families [--json]
    rys-search chat [--model M] [--schedule S | --rys I,J] "prompt"
    rys-search eval [--model M] [--schedule S] [--objectives math,eq,reasoning,fixed_point]
                    [--mode logprob|generate] [--split search|heldout] [--limit N] [--json]
    rys-search validate [--model M] --schedule S --bench gsm8k=FILE --bench bbh=DIR
                        --bench eqbench=FILE [--limit N] [--json]
    rys-search run [--config FILE] [--study NAME] [--trials N] [--sampler tpe] ...
                   [--storage URL] [--tracking-uri URI] [--workers N | --gpus 0,1]
    rys-search pareto [--study NAME] [--json]
    rys-search ls
    rys-search status [--study NAME]
    rys-search export --study NAME (--trial N | --pareto) --format gguf|hf --out DIR [--force]

run, pareto, status, ls and export take the same study-locating flags (--study, --config,
--storage, --tracking-uri; _study_options), so a run's flags can be repeated after it.
    rys-search export [--model M] (--schedule S | --rys I,J) --format gguf|hf --out DIR [--type q8_0]
    rys-search ui --study NAME [--compare pareto|3,5,8] [--dashboard] [--port N]
    rys-search report --study NAME [--out FILE.html]

Bad input (a schedule, a model path, an option) ends with one line on stderr and exit
status 2; --debug shows the traceback instead. Heavy libraries are imported inside the
commands, so `rys-search --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError, first_line

__all__ = ["main"]


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="HF id or folder, a .gguf file, or 'default' (SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA, fp32 on CPU)")


def _schedule_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--schedule", help="layer path, e.g. 0-9,10-12x2,13-29 (inclusive ranges, xN = N runs)")
    group.add_argument("--rys", metavar="I,J", help="the RYS pair: layers I..J-1 run twice")


def _study_options(parser: argparse.ArgumentParser) -> None:
    """The flags that locate a study, the same for run, pareto, status, ls and export --study."""
    where = parser.add_argument_group("which study (the same flags for run, pareto, status, ls and export)")
    where.add_argument("--study", help="study name (default: the config's name, 'default')")
    where.add_argument("--config", help="study config TOML (default: studies/default.toml); its name and storage locate the study")
    where.add_argument("--storage", help="Optuna storage URL (default: sqlite:///studies/NAME.db)")
    where.add_argument("--tracking-uri", dest="tracking_uri",
                       help="MLflow tracking URI (default for run: sqlite:///mlruns/mlflow.db; after it: the one the study recorded)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rys-search",
        description="Find, measure and ship RYS layer schedules: repeat blocks of a model's layers, no training.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="family, layer count, hidden size, parameters, supported or not")
    _model_options(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--families", action="store_true", help="list the supported model families instead")
    info.set_defaults(func=cmd_info)

    chat = sub.add_parser("chat", help="the greedy answer under a schedule, with the model's chat template")
    _model_options(chat)
    _schedule_options(chat)
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.set_defaults(func=cmd_chat)

    ev = sub.add_parser("eval", help="score a schedule on objectives, with intervals and changes against the unmodified model")
    _model_options(ev)
    _schedule_options(ev)
    ev.add_argument("--objectives", default="math,eq,reasoning,fixed_point", help="comma-separated objective names")
    ev.add_argument("--mode", default="logprob", help="logprob (teacher-forced, fast) or generate (greedy, parsed)")
    ev.add_argument("--split", default="search", help="search or heldout")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N items of each objective")
    ev.add_argument("--suites", action="append", default=[], metavar="DIR", help="also read probe suites from DIR")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=cmd_eval)

    val = sub.add_parser("validate", help="check a schedule on real benchmark files (GSM8K, BIG-Bench-Hard, EQ-Bench)")
    _model_options(val)
    _schedule_options(val)
    val.add_argument("--bench", action="append", default=[], metavar="NAME=PATH",
                     help="gsm8k=FILE.jsonl, bbh=DIR or eqbench=FILE.json; repeat for several")
    val.add_argument("--mode", default="logprob", help="logprob or generate")
    val.add_argument("--limit", type=int, default=None, help="first N items of each benchmark (of each BBH task)")
    val.add_argument("--json", action="store_true", help="print JSON")
    val.set_defaults(func=cmd_validate)

    cal = sub.add_parser("calibrate", help="measure how well each objective's changes track real benchmarks' across schedules")
    _model_options(cal)
    cal.add_argument("--bench", action="append", default=[], metavar="NAME[:MODE]=PATH",
                     help="gsm8k=FILE.jsonl, bbh=DIR, eqbench=FILE.json (each in its own harness's mode unless "
                          ":logprob or :generate is given); repeat for several")
    cal.add_argument("--schedules", type=int, default=60, help="schedules to sample (default 60): a thinned "
                     "single-block grid plus random multi-block schedules")
    cal.add_argument("--objectives", help="objectives to calibrate, e.g. math@1:logprob,eq@2,fixed_point "
                     "(default: every suite version in each mode it supports, and the fixed-point figures)")
    cal.add_argument("--limit", type=int, help="probe items per objective (default: all on a GPU, 24 on a CPU)")
    cal.add_argument("--bench-limit", dest="bench_limit", type=int, help="items per benchmark (per BBH task)")
    cal.add_argument("--seed", type=int, default=0, help="seed of the schedule sample")
    cal.add_argument("--suites", action="append", default=[], metavar="DIR", help="also read probe suites from DIR")
    cal.add_argument("--out", help="the calibration file (default studies/NAME.calibration.json); "
                     "the same command again resumes it")
    _study_options(cal)  # --study NAME: calibrate on that study's complete trials (its model and schedules)
    cal.add_argument("--json", action="store_true", help="print the summary table as JSON")
    cal.set_defaults(func=cmd_calibrate)

    run = sub.add_parser("run", help="search schedules with Optuna, log every trial to MLflow, keep a Pareto front")
    _study_options(run)
    run.add_argument("--model", help="HF id or folder, a .gguf file, or 'default'")
    run.add_argument("--trials", type=int, help="finished trials in all (default: 500 on a GPU, 12 on a CPU)")
    run.add_argument("--sampler", help="tpe (default), nsga2, nsga3, gp, random or grid")
    run.add_argument("--seed", type=int)
    run.add_argument("--objectives", help="comma-separated probe objectives, e.g. math,eq,reasoning")
    run.add_argument("--extra-objectives", dest="extra_objectives", help="fixed_point and/or added_layers")
    run.add_argument("--mode", help="logprob or generate")
    run.add_argument("--limit", type=int, help="items per objective (0: all; default: all on a GPU, 24 on a CPU)")
    run.add_argument("--no-confirm", dest="confirm", action="store_false",
                     help="skip the confirmation stage: every change stays unconfirmed (the config's [confirm])")
    run.add_argument("--device")
    run.add_argument("--dtype")
    run.add_argument("--suites", action="append", help="also read probe suites from DIR")
    run.add_argument("--workers", type=int, help="start N worker processes on this host, all on the one study")
    run.add_argument("--gpus", help="start one worker per listed GPU (CUDA_VISIBLE_DEVICES), e.g. 0,1")
    run.add_argument("--worker-index", dest="worker_index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_run)

    par = sub.add_parser("pareto", help="a study's Pareto set: cheap and confirmed values, verdicts, benchmark checks")
    _study_options(par)
    par.add_argument("--bench", action="append", default=[], metavar="NAME[:MODE]=PATH",
                     help="check every member on a benchmark file (gsm8k=FILE, bbh=DIR, eqbench=FILE); cached")
    par.add_argument("--bench-limit", dest="bench_limit", type=int, help="items per benchmark (per BBH task)")
    par.add_argument("--no-confirm", dest="confirm", action="store_false",
                     help="do not confirm the members the study left unconfirmed")
    par.add_argument("--json", action="store_true")
    par.set_defaults(func=cmd_pareto)

    ls = sub.add_parser("ls", help="list studies (in --storage or the config's storage, else every studies/*.db)")
    _study_options(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    st = sub.add_parser("status", help="summarise one study")
    _study_options(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    exp = sub.add_parser("export", help="write schedules as GGUF (llama.cpp) or Hugging Face checkpoints, verified")
    _study_options(exp)  # with --trial N or --pareto: export from the study
    pick = exp.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, help="the study's trial number to export")
    pick.add_argument("--pareto", action="store_true", help="export every schedule of the study's Pareto front")
    exp.add_argument("--holds", action="store_true",
                     help="with --pareto: only the members whose change holds on the benchmarks (rys-search pareto --bench)")
    exp.add_argument("--model", default=None, help="without --study: HF id or folder, a .gguf file, or 'default'")
    exp.add_argument("--device", default=None, help="where verification runs (default: cuda if present)")
    _schedule_options(exp)
    exp.add_argument("--format", required=True, help="gguf (llama.cpp, LM Studio, Ollama) or hf (transformers, vLLM)")
    exp.add_argument("--out", required=True, metavar="DIR", help="folder that receives the exports")
    exp.add_argument("--type", dest="gguf_type", help="GGUF from a Hugging Face model: f16 (default), bf16, q8_0 or f32")
    exp.add_argument("--dtype", default=None, help="HF export: float32, bfloat16 or float16 (default: the source's)")
    exp.add_argument("--force", action="store_true", help="replace an existing export")
    exp.add_argument("--no-verify", dest="verify", action="store_false",
                     help="skip loading the export back through transformers and llama.cpp")
    exp.add_argument("--json", action="store_true", help="print the results as JSON")
    exp.set_defaults(func=cmd_export)

    ui = sub.add_parser("ui", help="open the study in the MLflow UI (and optuna-dashboard) at the Pareto front")
    _study_options(ui)
    ui.add_argument("--compare", default="pareto", help="pareto (default) or trial numbers, e.g. 3,5,8")
    ui.add_argument("--port", type=int, default=5000, help="port for mlflow ui (default 5000)")
    ui.add_argument("--dashboard", action="store_true", help="also start optuna-dashboard (pip install 'rys-search[ui]')")
    ui.add_argument("--dashboard-port", dest="dashboard_port", type=int, default=8080)
    ui.add_argument("--for", dest="hold", type=float, default=None, metavar="SECONDS",
                    help="stop after SECONDS (default: run until Ctrl-C)")
    ui.set_defaults(func=cmd_ui)

    rep = sub.add_parser("report", help="one self-contained HTML page of a study: scores, Pareto front, checks, plots")
    _study_options(rep)
    rep.add_argument("--out", help="the HTML file (default: NAME-report.html)")
    rep.set_defaults(func=cmd_report)
    return parser


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _rys_pair(text: str) -> tuple[int, int]:
    from .schedule import ScheduleError

    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ScheduleError(f"--rys takes two whole numbers I,J, got {text!r}")
    return int(parts[0]), int(parts[1])


def resolve_schedule(args: argparse.Namespace, n_layers: int):
    """The schedule named by --schedule or --rys, checked against the model's depth."""
    from .schedule import LayerSchedule

    if getattr(args, "rys", None) is not None:
        i, j = _rys_pair(args.rys)
        return LayerSchedule.rys(n_layers, i, j)
    if getattr(args, "schedule", None) is not None:  # an empty string is a mistake, not "no schedule"
        return LayerSchedule.parse(args.schedule, n_layers=n_layers)
    return LayerSchedule.identity(n_layers)


def _check_syntax(args: argparse.Namespace) -> None:
    """Refuse a malformed --schedule before paying for the model load."""
    from .schedule import LayerSchedule

    if getattr(args, "schedule", None) is not None:
        LayerSchedule.parse(args.schedule)
    if getattr(args, "rys", None) is not None:
        _rys_pair(args.rys)


def _describe(config: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from .architectures import UnsupportedFamily, family_for

    try:
        family, supported = family_for(config.model_type).name, True
    except UnsupportedFamily:
        family, supported = None, False
    try:
        with torch.device("meta"):  # shapes only: no memory, no weights read
            skeleton = AutoModelForCausalLM.from_config(config)
        parameters = sum(p.numel() for p in skeleton.parameters())
    except (ValueError, KeyError, ImportError, TypeError, NotImplementedError) as exc:  # a family transformers lacks
        logging.getLogger("rys_search").debug("no parameter count for %s: %s", config.model_type, exc)
        parameters = None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {
        "model_type": config.model_type,
        "family": family,
        "supported": supported,
        "layers": getattr(text, "num_hidden_layers", None),
        "hidden_size": getattr(text, "hidden_size", None),
        "parameters": parameters,
    }


def _print_families(as_json: bool) -> int:
    """One line per family data file: what rys-search knows about it."""
    from .architectures import families

    rows = [{
        "family": f.name, "model_types": list(f.model_types), "gguf_arch": f.gguf_arch,
        "gguf_from_hf": f.gguf_from_hf,
        # who reads a GGUF of the family: transformers, or rys-search's own reader
        "gguf_reader": f.gguf_reader,
        "gguf_repeat_period": f.repeat_period,
        "per_layer_config": list(f.per_layer_config) + [s.entry for s in f.layer_sets],
    } for f in families().values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'family':<11}{'model_type':<13}{'GGUF arch':<11}{'GGUF from HF':<14}{'GGUF read by':<14}"
          f"{'GGUF period':<13}per-layer entries")
    for r in rows:
        print(f"{r['family']:<11}{','.join(r['model_types']):<13}{r['gguf_arch']:<11}"
              f"{'yes' if r['gguf_from_hf'] else 'no':<14}{r['gguf_reader']:<14}"
              f"{r['gguf_repeat_period']:<13}{', '.join(r['per_layer_config'])}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .loading import load_config

    if args.families:
        return _print_families(args.json)
    _quiet_transformers()
    config, source = load_config(args.model)
    facts = {"model": source.spec, "source": source.location, "format": source.kind, **_describe(config)}
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    params = f"{facts['parameters']:,}" if facts["parameters"] is not None else "unknown"
    support = "supported" if facts["supported"] else "not supported"
    print(f"model        {facts['model']} ({facts['source']})")
    print(f"family       {facts['family'] or facts['model_type']} ({support})")
    print(f"layers       {facts['layers']}")
    print(f"hidden size  {facts['hidden_size']}")
    print(f"parameters   {params}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import greedy_answer
    from .loading import load_model

    _quiet_transformers()
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1")
    _check_syntax(args)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    schedule = resolve_schedule(args, loaded.n_layers)
    loaded.runtime.set_schedule(schedule)
    added = schedule.added_layers(loaded.n_layers)
    print(f"[{loaded.source.name}: schedule {schedule}, {len(schedule)} layers ({added:+d})]", file=sys.stderr)
    print(greedy_answer(loaded, args.prompt, max_new_tokens=args.max_new_tokens))
    return 0


def _log_to_stderr(level: int) -> None:
    logger = logging.getLogger("rys_search")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rys-search: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _comparisons(loaded: Any, objectives: list[Any], schedule: Any, split: str, limit: int | None) -> list[dict[str, Any]]:
    """Each objective on the unmodified model and under the schedule, with the paired change."""
    from .scoring import paired_change
    from .scoring.stage import warn_cut

    rows = []
    for objective in objectives:
        base = objective.evaluate(loaded, _identity_of(loaded), split=split, limit=limit)
        warn_cut(f"{objective.name}:{objective.mode}", base.metrics.get("cut"))
        row: dict[str, Any] = {"objective": objective.name, "version": objective.version, "mode": objective.mode,
                               "unmodified": base.to_dict()}
        if schedule.is_identity(loaded.n_layers):
            row["result"] = base.to_dict()
        else:
            result = objective.evaluate(loaded, schedule, split=split, limit=limit)
            change, lo, hi = paired_change(result, base)
            row["result"] = result.to_dict()
            row["change"] = {"mean": change, "interval": [lo, hi], "within_noise": lo <= 0.0 <= hi}
        rows.append(row)
    return rows


def _identity_of(loaded: Any):
    from .schedule import LayerSchedule

    return LayerSchedule.identity(loaded.n_layers)


def _print_table(loaded: Any, schedule: Any, rows: list[dict[str, Any]], heading: str) -> None:
    added = schedule.added_layers(loaded.n_layers)
    print(f"{loaded.source.name} · schedule {schedule} ({len(schedule)} layers, {added:+d}) · {heading}")
    print(f"{'objective':<14}{'items':>6}{'score':>9}{'noise':>8}  {'95% interval':<19}{'unmodified':>11}"
          f"{'change':>9}  {'95% paired interval':<21}{'seconds':>8}")
    for row in rows:
        r, b = row["result"], row["unmodified"]
        lo, hi = r["interval"]
        line = (f"{row['objective'] + ' v' + str(row['version']):<14}{len(r['items']):>6}{r['score']:>9.2f}"
                f"{'±' + format(r['noise'], '.2f'):>8}  {f'[{lo:.2f}, {hi:.2f}]':<19}{b['score']:>11.2f}")
        if "change" in row:
            c = row["change"]
            clo, chi = c["interval"]
            note = " (within noise)" if c["within_noise"] else ""
            line += f"{c['mean']:>+9.2f}  {f'[{clo:+.2f}, {chi:+.2f}]':<21}{r['seconds']:>8.1f}{note}"
        else:
            line += f"{'':>9}  {'':<21}{r['seconds']:>8.1f}"
        print(line)
        extra = {k: v for k, v in r["metrics"].items()}
        if extra:
            print(" " * 14 + "  ".join(f"{k} {v:.3g}" for k, v in extra.items()))


def cmd_eval(args: argparse.Namespace) -> int:
    from .loading import load_model
    from .scoring import get_objective

    _quiet_transformers()
    _check_syntax(args)
    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    if not names:
        raise UserError("--objectives names no objective")
    objectives = [get_objective(n, mode=args.mode, suites=args.suites) for n in names]  # fail before loading
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    schedule = resolve_schedule(args, loaded.n_layers)
    rows = _comparisons(loaded, objectives, schedule, args.split, args.limit)
    if args.json:
        print(json.dumps({"model": loaded.source.spec, "schedule": str(schedule), "split": args.split,
                          "mode": args.mode, "objectives": rows}, indent=1))
    else:
        _print_table(loaded, schedule, rows, f"split {args.split} · mode {args.mode}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .loading import load_model
    from .scoring.benchmarks import read_benchmark

    _quiet_transformers()
    _check_syntax(args)
    if not args.bench:
        raise UserError("name at least one benchmark: --bench gsm8k=FILE, --bench bbh=DIR or --bench eqbench=FILE")
    objectives = []
    for spec in args.bench:
        name, sep, location = spec.partition("=")
        if not sep or not location:
            raise UserError(f"--bench takes NAME=PATH, got {spec!r}")
        objectives.append(read_benchmark(name.strip(), location.strip(), mode=args.mode, limit_per_task=args.limit))
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    schedule = resolve_schedule(args, loaded.n_layers)
    rows = _comparisons(loaded, objectives, schedule, "all", None)
    if args.json:
        print(json.dumps({"model": loaded.source.spec, "schedule": str(schedule), "mode": args.mode,
                          "benchmarks": rows}, indent=1))
    else:
        _print_table(loaded, schedule, rows, f"benchmarks · mode {args.mode}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import re

    from dataclasses import replace

    from .loading import load_model
    from .scoring.benchmarks import reading
    from .scoring.stage import Spec
    from .search import calibrate as cal
    from .search.config import CPU_LIMIT, load_config

    _quiet_transformers()
    if not args.bench:
        raise UserError("name at least one benchmark: --bench gsm8k=FILE, --bench bbh=DIR or --bench eqbench=FILE")
    benches = cal.bench_specs(args.bench, args.bench_limit)
    wanted = [w.strip() for w in args.objectives.split(",") if w.strip()] if args.objectives else None
    probes = cal.probe_specs(args.suites, [w for w in wanted if w != "fixed_point"] if wanted else None)
    figures = Spec.figures() if wanted is None or "fixed_point" in wanted else []
    for number, name in (("--schedules", args.schedules), ("--limit", args.limit), ("--bench-limit", args.bench_limit)):
        if name is not None and name < 1:
            raise UserError(f"{number} must be at least 1")
    study = None
    model = args.model
    if args.study:
        from .search.storage import open_study, stored_config

        study = open_study(_study_config(args), create=False)
        model = stored_config(study).model
    key = cal.model_key(model)  # a missing model file fails here, before anything is written
    name = args.study or "calibration-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", key.split(":")[0]).removesuffix(".gguf")
    path = Path(args.out) if args.out else cal.calibration_path(name)
    loaded = load_model(model, device=args.device, dtype=args.dtype)
    limit = args.limit if args.limit is not None else (None if loaded.device.type == "cuda" else CPU_LIMIT)
    if study is not None:
        schedules = cal.study_schedules(study, loaded.n_layers)
        if not schedules:
            raise UserError(f"study {args.study!r} has no complete trial with a repeated block to calibrate on")
    else:
        schedules = cal.sample_schedules(loaded.n_layers, load_config().space, loaded.family.repeat_period,
                                         args.schedules, args.seed)
    probes = [replace(p, limit=limit) for p in probes]
    settings = {"objectives": [s.key for s in probes + figures], "benchmarks": {s.key: s.path for s in benches},
                "limit": limit, "bench_limit": args.bench_limit, "schedules": [str(s) for s in schedules],
                "reading": reading()}
    state = cal.run_calibration(loaded, schedules, probes + benches + figures, path, model=str(model), key=key,
                                settings=settings, suites=args.suites, study=args.study)
    pictures = cal.figures(state)
    for filename, figure in pictures.items():
        stem = path.name.removesuffix(".json").removesuffix(".calibration")
        figure.savefig(path.parent / f"{stem}-{filename.removeprefix('calibration-')}", dpi=110)
    from .search.config import StudyConfig
    from .tracking import Tracker

    uri = args.tracking_uri or StudyConfig().tracking_location()
    Tracker(uri).log_calibration(name, state, pictures)
    import matplotlib.pyplot as plt

    for figure in pictures.values():
        plt.close(figure)
    if args.json:
        print(json.dumps({"path": str(path), "table": state["table"], "versions": state["versions"],
                          "seconds_per_schedule": state["seconds_per_schedule"]}, indent=1))
    else:
        print("\n".join(cal.format_table(state)))
        print(f"stored in {path} (scatter plots beside it) and in MLflow ({uri})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .search.study import run_study

    _quiet_transformers()
    overrides = {k: getattr(args, k) for k in (
        "model", "trials", "sampler", "seed", "objectives", "extra_objectives", "mode", "limit", "device", "dtype",
        "suites")}
    if not args.confirm:
        overrides["confirm"] = {"enabled": False}
    config = _study_config(args, overrides)
    from .scoring import get_objective

    for name in config.objectives:  # an unknown objective fails here, before the model loads
        get_objective(name, mode=config.mode, suites=list(config.suites))
    from .search.storage import storage_for
    from .tracking import Tracker

    storage_for(config.storage_url())  # an unreachable storage or tracking server ends here, before the model loads
    tracker = Tracker(config.tracking_location())
    if args.workers is not None or args.gpus is not None:
        return _launch_workers(args, config)
    summary = run_study(config, progress=True, worker_index=args.worker_index, tracker=tracker)
    if args.worker_index is not None:  # one of several: the launcher prints the study's summary
        sec = summary["seconds"]
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = summary["worker"] + (f", CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else "")
        print(f"worker {args.worker_index} ({where}): {summary['worker_trials']} trials taken, "
              f"{summary['surplus_trials']} surplus; load {sec['load']:.1f} s, evaluation {sec['evaluation']:.1f} s, "
              f"total {sec['total']:.1f} s" + (f"; stopped: {summary['stopped_reason']}" if summary["stopped_reason"] else ""))
        return 1 if summary["stopped_reason"] else 0
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return 1 if summary["stopped_reason"] else 0
    from .search.calibrate import calibration_for, describe_for_run, model_key

    # how far the objectives are known to track real benchmarks (or, once, that nobody measured it)
    for line in describe_for_run(calibration_for(model_key(config.model)), summary["config"]["objectives"],
                                 config.mode):
        print(line)
    _print_pareto(summary["pareto"], summary["config"]["objectives"])
    sec = summary["seconds"]
    beside = sec.get("tracking_beside", 0.0) + sec.get("storing_beside", 0.0)  # MLflow runs; trials of a study run alone
    print(f"study {summary['study']}: {summary['finished_trials']}/{summary['trials_target']} finished trials "
          f"({summary['status']}); storage {summary['storage']}")
    if summary.get("confirmed_at_end"):
        print(f"confirmed at the end: {summary['confirmed_at_end']} front members the paced budget had left")
    print(f"time: load {sec['load']:.1f} s, evaluation {sec['evaluation']:.1f} s, sampler {sec['sampler']:.1f} s, "
          f"tracking {sec['tracking']:.1f} s (and {beside:.1f} s written beside the trials), "
          f"total {sec['total']:.1f} s")
    print(f"see every trial: {summary['mlflow_ui']}")
    print(f"compare the Pareto front: rys-search ui --study {summary['study']}; "
          f"a report: rys-search report --study {summary['study']}")
    if summary["stopped_reason"]:
        print(f"rys-search: stopped: {summary['stopped_reason']}", file=sys.stderr)
        return 1
    return 0


def _launch_workers(args: argparse.Namespace, config: Any) -> int:
    """--workers / --gpus: run the workers (storage and tracking are ready), print the study's summary."""
    from .search.workers import run_workers, worker_command, worker_envs

    envs = worker_envs(args.workers, args.gpus, device=config.device)
    code, summary = run_workers(config, worker_command(args), envs)
    if summary is None:  # the study was never created: the workers said why
        return code or 2
    objectives = summary.pop("objectives")
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return code
    _print_pareto(summary["pareto"], objectives)
    print(f"study {config.name}: {summary['finished_trials']}/{summary['trials_target']} finished trials, "
          f"{summary['workers']} workers, {summary['seconds']:.1f} s; storage {summary['storage']}")
    if summary["trials_this_launch"]:
        print(f"{summary['trials_this_launch']} trials finished in this launch: {summary['trials_per_minute']:.2f} "
              f"per minute from the first trial's start to the last one's end ({summary['trial_window_s']:.1f} s)")
    return code


def _print_pareto(rows: list[dict[str, Any]], objectives: list[str]) -> None:
    """The front as a user reads it: per member its verdict, then cheap and confirmed changes side by side."""
    from .search.reports import verdict_counts

    counts = verdict_counts(rows)
    gains = counts.get("gain", 0)
    print(f"Pareto front ({len(rows)} schedules): " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    print("  change = against the unmodified model [paired 95% interval]; cheap = the search's logprob probes "
          "(search split), confirmed = the confirmation stage")
    for row in rows:
        holds = {True: "  holds on the benchmarks", False: "  does not hold on the benchmarks"}.get(row.get("holds"), "")
        print(f"  #{row['trial']:<4} {row['schedule']:<32} +{row['added_layers']:<3} {row['verdict']}{holds}")
        parts = []
        for name in objectives:
            if f"{name}_change_interval" in row:
                lo, hi = row[f"{name}_change_interval"]
                parts.append(f"{name} {row[f'{name}_change']:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        if parts:
            print("        cheap:     " + "  ".join(parts))
        for label, entries in (("confirmed", row.get("confirmed")), ("benchmark", row.get("bench"))):
            if entries:
                cells = []
                for key, e in entries.items():
                    lo, hi = e["change_interval"]
                    parsed = f" parsed {100 * e['parse_rate']:.0f}%" if e.get("parse_rate") is not None else ""
                    parsed += f" ({100 * e['cut_rate']:.0f}% cut off)" if e.get("cut_rate") else ""
                    broken = (" BROKEN OUTPUT" if e.get("broken_output") else
                              " (parse shift: not counted)" if e.get("parse_shift") else "")
                    cells.append(f"{key} {e['change']:+.2f} [{lo:+.2f}, {hi:+.2f}]{parsed}{broken}")
                print(f"        {label + ':':<11}" + "  ".join(cells))
    if not gains:
        print("  no confirmed gain on this front: every change above is unconfirmed or did not hold up")


def _study_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    """The study config the study-locating flags name: --config, with --study/--storage/--tracking-uri on top."""
    from .search.config import load_config

    located = {"name": args.study, "storage": args.storage, "tracking_uri": args.tracking_uri}
    return load_config(args.config, {**located, **(overrides or {})})


def cmd_pareto(args: argparse.Namespace) -> int:
    from .schedule import LayerSchedule
    from .search.calibrate import bench_specs
    from .search.confirm import Confirmer
    from .search.reports import pareto_rows, tracking_uri_of
    from .search.storage import open_study, stored_config
    from .search.study import load_study_model
    from .tracking import ui_command
    from .search.validation import validate_front

    if args.bench_limit is not None and args.bench_limit < 1:
        raise UserError("--bench-limit must be at least 1")
    benches = bench_specs(args.bench, args.bench_limit)  # a bad --bench fails before anything loads
    located = _study_config(args)
    study = open_study(located, create=False)
    config = stored_config(study)
    rows = pareto_rows(study)
    loaded = None

    def load():
        nonlocal loaded
        if loaded is None:
            _quiet_transformers()
            loaded = load_study_model(config)
        return loaded

    waiting = [r for r in rows if r["verdict"] == "unconfirmed"]
    if args.confirm and config.confirm.enabled and waiting:
        load()
        resolved = config.resolve(loaded.device.type == "cuda")
        confirmer = Confirmer(resolved, loaded, study)
        for row in waiting:
            print(f"rys-search: confirming #{row['trial']} {row['schedule']}", file=sys.stderr)
            confirmer.confirm_later(LayerSchedule.parse(row["schedule"], n_layers=loaded.n_layers))
        rows = pareto_rows(study)
    if benches and validate_front(study, rows, benches, load, list(config.suites)):
        rows = pareto_rows(study)
    try:
        _publish(study, located)
    except Exception as exc:  # the Pareto set is printed even when the tracking store is out of reach
        logging.getLogger("rys_search").warning("MLflow's Pareto tags not updated: %s", first_line(exc))
    if args.json:
        print(json.dumps({"study": study.study_name, "pareto": rows}, indent=1, default=str))
        return 0
    _print_pareto(rows, config.objectives)
    uri = tracking_uri_of(study, located)
    if uri:
        print(f"see every trial: {ui_command(uri)}")
    return 0


def _publish(study: Any, config: Any) -> None:
    """Bring the MLflow UI's Pareto tags and saved views up to date (when the study has a tracking store)."""
    from .search.reports import tracking_uri_of

    uri = tracking_uri_of(study, config)
    if not uri:
        return
    from .search.publish import name_objectives, publish_front
    from .tracking import Tracker

    name_objectives(study)
    publish_front(Tracker(uri), study)


def cmd_ui(args: argparse.Namespace) -> int:
    from .search.publish import study_facts
    from .search.storage import open_study
    from .tracking import Tracker
    from .ui import parse_compare, serve

    compare = parse_compare(args.compare)
    config = _study_config(args)
    study = open_study(config, create=False)
    from .search.reports import tracking_uri_of

    facts = study_facts(study)
    facts["tracking_uri"] = tracking_uri_of(study, config)
    if not facts["tracking_uri"]:
        raise UserError(f"study {study.study_name!r} has no MLflow tracking store recorded")
    _publish(study, config)
    if args.dashboard:
        import importlib.util

        if importlib.util.find_spec("optuna_dashboard") is not None:
            from .search.publish import dashboard_notes

            dashboard_notes(study)  # each trial's scores as a readable note above its raw attributes
    serve(facts, Tracker(facts["tracking_uri"]).experiment_id, config.storage_url(), compare, port=args.port,
          dashboard=args.dashboard, dashboard_port=args.dashboard_port, hold=args.hold)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import render_report
    from .search.storage import open_study, stored_config
    from .search.summary import study_summary

    config = _study_config(args)
    study = open_study(config, create=False)
    data = study_summary(study)
    figures = {}
    if data["n_layers"] and data["pareto"]:
        import io

        import matplotlib.pyplot as plt

        from .search.plots import study_figures

        for name, figure in study_figures(study, stored_config(study), data["n_layers"]).items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            plt.close(figure)
            figures[name] = buffer.getvalue()
    out = Path(args.out or f"{study.study_name}-report.html")
    staging = out.with_name(f".{out.name}.tmp")
    staging.write_text(render_report(data, figures, storage=args.storage), encoding="utf-8")
    staging.replace(out)
    print(f"{out} ({out.stat().st_size / 1024:.0f} KiB): {len(data['pareto'])} Pareto members, {len(figures)} figures")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .search.reports import list_studies

    config = _study_config(args)
    rows = list_studies(config.storage or None, name=args.study)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    if not rows:
        print("no studies")
    for r in rows:
        print(f"{r['study']:<24} {r['finished']:>5} finished  {r['trials']:>5} trials  started {r['started']}  {r['storage']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .search.reports import study_status

    facts = study_status(_study_config(args))
    if args.json:
        print(json.dumps(facts, indent=1, default=str))
        return 0
    print(f"study        {facts['study']} ({facts['storage']})")
    print(f"model        {facts['model']}, sampler {facts['sampler']}, objectives {', '.join(facts['objectives'])}")
    print(f"trials       {facts['finished']} finished of {facts['target']}: "
          + ", ".join(f"{k.lower()} {v}" for k, v in facts["states"].items()))
    for name, best in facts["best"].items():
        print(f"best {name:<8}{best['value']:.2f} (trial {best['trial']}, {best['schedule']})")
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(facts["verdicts"].items())) or "empty"
    print(f"Pareto       {facts['pareto_size']} schedules: {verdicts}")
    if facts["gains"]:
        print("gains        " + ", ".join(f"#{g['trial']} {g['schedule']}" for g in facts["gains"]) + " (confirmed)")
    else:
        print("gains        none confirmed")
    if facts.get("mlflow_ui"):
        print(f"MLflow       {facts['mlflow_ui']}")
    return 0


def _export_jobs(args: argparse.Namespace) -> tuple[str, list[Any], str | None]:
    """The model spec, the jobs (schedule text or LayerSchedule + what the study knew), the study's MLflow."""
    from .export import ExportJob

    if args.study is None and args.config is None:
        if args.trial is not None or args.pareto:
            raise UserError("--trial and --pareto need --study NAME (or --config FILE naming the study)")
        if args.schedule is None and args.rys is None:
            raise UserError("name what to export: --schedule S or --rys I,J, or --study NAME with --trial N or --pareto")
        _check_syntax(args)
        return args.model or "default", [ExportJob(schedule=None)], None
    if args.model is not None or args.schedule is not None or args.rys is not None:
        raise UserError("with --study the model and schedule come from the study: drop --model/--schedule/--rys")
    if args.trial is None and not args.pareto:
        raise UserError("with --study name --trial N or --pareto")
    from .export.jobs import study_jobs
    from .search.reports import pareto_rows, tracking_uri_of, trial_facts
    from .search.storage import open_study, stored_config

    config = _study_config(args)
    study = open_study(config, create=False)
    rows = pareto_rows(study) if args.pareto else None
    if args.holds:
        if rows is None:
            raise UserError("--holds goes with --pareto")
        checked = [r for r in rows if "holds" in r]
        if not checked:
            raise UserError(f"no benchmark checks in study {args.study!r} yet: run rys-search pareto --study "
                            f"{args.study} --bench NAME=PATH first")
        rows = [r for r in checked if r["holds"]]
        if not rows:
            raise UserError(f"no member of study {args.study!r}'s Pareto front holds on the benchmarks; nothing exported")
    attrs = study.user_attrs
    jobs = study_jobs(study, trial=args.trial, pareto=rows, facts=lambda t: trial_facts(study, t, attrs))
    return stored_config(study).model, jobs, tracking_uri_of(study, config)


def cmd_export(args: argparse.Namespace) -> int:
    from . import __version__
    from .export import FORMATS, VerificationFailed, check_target, export_schedule, target_path
    from .loading import load_model, pick_device, pick_dtype

    _quiet_transformers()
    if args.format not in FORMATS:
        raise UserError(f"unknown export format {args.format!r}; use gguf or hf")
    if args.format == "gguf" and args.dtype is not None:
        raise UserError("--dtype is for --format hf; a GGUF takes --type (from a Hugging Face source)")
    if args.format == "hf" and args.gguf_type is not None:
        raise UserError("--type is for --format gguf; an HF export takes --dtype")
    hf_dtype = pick_dtype(args.dtype, pick_device("cpu")) if args.dtype is not None else None
    from .export.jobs import source_facts

    spec, jobs, tracking_uri = _export_jobs(args)
    source, family, n_layers, config = source_facts(spec)
    for job in jobs:
        if job.schedule is None:
            job.schedule = resolve_schedule(args, n_layers)
        job.schedule.check(n_layers)
        if job.schedule.is_identity(n_layers):
            raise UserError(f"schedule {job.schedule} repeats nothing: it is the unmodified model")
        check_target(target_path(args.out, source.name, job.schedule, args.format), args.force)
    if hf_dtype is None and args.format == "hf" and getattr(config, "dtype", None):
        hf_dtype = pick_dtype(str(config.dtype).removeprefix("torch."), pick_device("cpu"))  # the source's
    # Verification compares in float32: the source's own weights, against the export loaded back.
    # Each export loads the source afresh (from the dequantized cache) and lets it go before
    # loading its output back, so memory holds one model at a time.
    def loaded():
        return load_model(spec, device=args.device, dtype="float32")
    results = []
    for job in jobs:
        try:
            result = export_schedule(job, args.format, args.out, source=source, family=family, n_layers=n_layers,
                                     loaded=loaded, gguf_type=args.gguf_type, hf_dtype=hf_dtype, force=args.force,
                                     verify=args.verify, rys_version=__version__)
        except VerificationFailed as exc:
            print(f"rys-search: verification failed, nothing kept: {exc}", file=sys.stderr)
            return 1
        results.append(result)
        if job.mlflow_run and tracking_uri:
            from .tracking import Tracker

            Tracker(tracking_uri).log_export(job.mlflow_run, result)
        if not args.json:
            _print_export(result)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    return 0


def _print_export(result: dict[str, Any]) -> None:
    from .export import verification_lines

    size = result["bytes"] / 2**20
    print(f"{result['path']}  ({result['format']}, {result['written_as']}, {size:.1f} MiB, "
          f"schedule {result['schedule']}, {result['seconds']:.1f} s)")
    for check, line in verification_lines(result.get("verification")).items():
        print(f"  {check}: {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # transformers' GGUF conversion draws a bare tqdm bar; we say what happens in one log line.
    os.environ.setdefault("TQDM_DISABLE", "1")
    _log_to_stderr(logging.DEBUG if args.debug else logging.INFO)
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"rys-search: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rys-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
