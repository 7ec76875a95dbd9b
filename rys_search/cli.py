"""The `rys-search` command line.

    rys-search info [--model M] [--json]
    rys-search chat [--model M] [--schedule S | --rys I,J] "prompt"

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
from typing import Any, Sequence

from .errors import UserError

__all__ = ["main"]


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="HF id or folder, a .gguf file, or 'default' (SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA, fp32 on CPU)")


def _schedule_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--schedule", help="layer path, e.g. 0-9,10-12x2,13-29 (inclusive ranges, xN = N runs)")
    group.add_argument("--rys", metavar="I,J", help="the RYS pair: layers I..J-1 run twice")


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
    info.set_defaults(func=cmd_info)

    chat = sub.add_parser("chat", help="the greedy answer under a schedule, with the model's chat template")
    _model_options(chat)
    _schedule_options(chat)
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.set_defaults(func=cmd_chat)
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
    from .schedule import LayerSchedule, ScheduleError

    if getattr(args, "rys", None):
        i, j = _rys_pair(args.rys)
        return LayerSchedule.rys(n_layers, i, j)
    if getattr(args, "schedule", None):
        return LayerSchedule.parse(args.schedule, n_layers=n_layers)
    return LayerSchedule.identity(n_layers)


def _check_syntax(args: argparse.Namespace) -> None:
    """Refuse a malformed --schedule before paying for the model load."""
    from .schedule import LayerSchedule

    if getattr(args, "schedule", None):
        LayerSchedule.parse(args.schedule)
    if getattr(args, "rys", None):
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
    except Exception:
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


def cmd_info(args: argparse.Namespace) -> int:
    from .loading import load_config

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
