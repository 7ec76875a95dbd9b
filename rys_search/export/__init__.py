"""Export a schedule as a GGUF file (llama.cpp) or a Hugging Face checkpoint, verified.

    >>> result = export_schedule(job, "gguf", "exports/", loaded=lambda: load_model(spec),
    ...                          source=resolve_model(spec))
    >>> result["path"], result["verification"]

A GGUF source is copied byte for byte (export/gguf.py), a Hugging Face source is
converted (f32, f16, bf16 or q8_0); a Hugging Face export comes from either. The output is
written into a staging folder beside the target, verified (exported model loaded back and
compared with the weight-shared run of the schedule on the source), and renamed into
place only then. An existing target is never replaced without force=True; a failed
verification or a full disk leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..schedule import LayerSchedule
from .verify import VerificationFailed

__all__ = ["ExportJob", "FORMATS", "VerificationFailed", "check_target", "export_schedule", "target_path",
           "verification_lines"]

FORMATS = ("gguf", "hf")
log = logging.getLogger(__name__)


@dataclass
class ExportJob:
    """One schedule to export, with what the search knew about it."""

    schedule: LayerSchedule
    study: str | None = None
    trial: int | None = None
    scores: dict[str, Any] = field(default_factory=dict)  # the cheap stage's (search split)
    confirmed: dict[str, Any] = field(default_factory=dict)  # the confirmation stage's, where it ran
    verdict: str | None = None  # gain, mixed, worse, no change, broken output, unconfirmed
    bench: dict[str, Any] = field(default_factory=dict)  # benchmark checks (rys-search pareto --bench)
    mlflow_run: str | None = None  # the trial's MLflow run, where the export is recorded


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def target_path(out_dir: str | Path, source_name: str, schedule: LayerSchedule, fmt: str) -> Path:
    """out_dir/<source>.rys-<schedule>.gguf, or the folder out_dir/<source>.rys-<schedule>."""
    stem = _slug(Path(source_name).name.removesuffix(".gguf"))
    name = f"{stem}.rys-{_slug(str(schedule).replace(',', '_'))}"
    return Path(out_dir) / (name + ".gguf" if fmt == "gguf" else name)


def check_target(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"export target {path} already exists; pass --force to replace it")


def check_period(family: Any, order: tuple[int, ...], fmt: str) -> None:
    """GGUF runtimes derive some layer kinds from the position (gemma3: period 6): keep them."""
    period = family.repeat_period
    if fmt != "gguf" or period <= 1:
        return
    for pos, src in enumerate(order):
        if src % period != pos % period:
            raise UserError(
                f"a {family.name} GGUF decides each layer's attention kind by its position (period {period}); "
                f"position {pos} would run layer {src}, of a different kind: repeat blocks whose length is a "
                f"multiple of {period}, or export --format hf (its config keeps per-layer types)"
            )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def source_hash(source: Any) -> str | None:
    """sha256 of a GGUF source, or of a folder's safetensors hashes (None for neither)."""
    location = Path(source.location)
    if source.kind == "gguf":
        return _file_hash(location)
    files = sorted(location.glob("*.safetensors")) if location.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(_file_hash(f).encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, read once per process while its size and modification time stay the same."""
    return file_sha256(path)


class _Bar:
    """A byte progress bar on stderr (quiet when stderr is not a terminal)."""

    def __init__(self, total: int, name: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name[:40],
                        file=sys.stderr, disable=None, leave=False)

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(
            f"not enough free disk space in {folder}: the export needs about {needed / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB are free"
        )


def _disk_full(exc: OSError, folder: Path) -> UserError:
    return UserError(f"disk full while writing the export into {folder} ({exc.strerror}); nothing was kept")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def export_schedule(
    job: ExportJob,
    fmt: str,
    out_dir: str | Path,
    *,
    source: Any,
    family: Any,
    n_layers: int,
    loaded: Callable[[], Any],
    gguf_type: str | None = None,
    hf_dtype: Any = None,
    force: bool = False,
    verify: bool = True,
    rys_version: str = "",
) -> dict[str, Any]:
    """Write, verify and move one export into place; return what was done and measured.

    `loaded()` returns the source model (LoadedModel); it is called once, only when the
    export needs the weights in torch (a Hugging Face source, an HF export, or verification),
    and the model is consumed (its weights let go) before the export is loaded back, so
    the two never share memory.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use gguf or hf")
    schedule = job.schedule.check(n_layers)
    order = schedule.expand()
    check_period(family, order, fmt)
    if fmt == "gguf" and source.kind == "gguf" and gguf_type is not None:
        raise UserError("a GGUF source is copied byte for byte; --type applies to a Hugging Face source only")
    target = target_path(out_dir, source.name, schedule, fmt)
    check_target(target, force)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".rys-export-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    staged = staging / target.name
    started = time.perf_counter()
    provenance = {
        "version": rys_version, "schedule": str(schedule), "layer_map": list(order),
        "source": source.name, "source_sha256": source_hash(source), "source_block_count": n_layers,
        "study": job.study, "trial": job.trial, "scores": job.scores or None, "confirmed": job.confirmed or None,
        "verdict": job.verdict, "bench": job.bench or None,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from .card import model_card

    result: dict[str, Any] = {"path": str(target), "format": fmt, "schedule": str(schedule), "trial": job.trial}
    needs_torch = verify or fmt == "hf" or source.kind != "gguf"
    inexact = ""  # why the export cannot reproduce the source's logits exactly, where a GGUF cannot say it all
    try:
        model = loaded() if needs_torch else None
        if model is not None:
            model.runtime.reset()
        if fmt == "gguf":
            from .gguf import plan_from_gguf, plan_from_hf, write_gguf

            provenance["model_card"] = model_card(provenance, fmt, target.name)
            suffix = f"(RYS {schedule})"
            if source.kind == "gguf":
                plan = plan_from_gguf(source.location, order, family.gguf_per_layer_keys, provenance, suffix)
                result["written_as"] = "bytes copied from the source GGUF"
            else:
                kind = gguf_type or "f16"
                plan = plan_from_hf(model.model, model.tokenizer, family, order, kind, provenance,
                                    f"{source.name} {suffix}")
                result["written_as"] = kind
            inexact = plan.inexact
            _check_space(out_dir, plan.nbytes + (64 << 20))
            bar = _Bar(plan.nbytes, target.name)
            try:
                write_gguf(plan, staged, progress=bar)
            finally:
                bar.close()
        else:
            from .hf import export_bytes, write_hf

            dtype = hf_dtype or next(model.model.parameters()).dtype
            needed = export_bytes(model.model, family, order, dtype)
            _check_space(out_dir, needed + (64 << 20))
            staged.mkdir()
            bar = _Bar(needed, target.name)
            try:
                write_hf(model.model, model.tokenizer, family, order, staged, dtype=dtype, progress=bar)
            finally:
                bar.close()
            result["written_as"] = str(dtype).removeprefix("torch.")
        result["write_seconds"] = time.perf_counter() - started
        result["bytes"] = _size(staged)
        if verify:
            t0 = time.perf_counter()
            result["verification"] = _verify(model, schedule, staged, fmt, result["written_as"], inexact)
            result["verify_seconds"] = time.perf_counter() - t0
        if fmt == "hf":
            card = model_card(provenance, fmt, target.name, verification_lines(result.get("verification")))
            (staged / "README.md").write_text(card, encoding="utf-8")
        if target.exists():
            _remove(target)  # only reached with force
        os.replace(staged, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(exc, out_dir) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result["seconds"] = time.perf_counter() - started
    return result


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


_LOSSY = {"f16": "f16", "bf16": "bf16", "q8_0": "q8_0", "float16": "f16", "bfloat16": "bf16"}


def _tolerance_kind(written_as: str, reference_dtype: Any) -> str:
    """Exact for copied bytes and weights in the reference's own dtype; else the bound of the type written."""
    if str(reference_dtype) == f"torch.{written_as}":
        return "exact"
    return _LOSSY.get(written_as, "exact")


def _verify(loaded: Any, schedule: LayerSchedule, path: Path, fmt: str, written_as: str,
            inexact: str = "") -> dict[str, Any]:
    """Reference outputs from the source, then the source freed, then the export loaded back.

    inexact: why the export, read back, cannot give the source's logits (a GGUF that cannot hold
    everything the model does); the logit comparison is then not run, and llama.cpp's greedy
    check decides, as for llama.cpp's own conversions of such models.
    """
    import gc

    from .verify import TOLERANCES, Reference, verify_llama_cpp, verify_transformers

    ref = Reference.build(loaded, schedule)
    kind = _tolerance_kind(written_as, loaded.dtype)
    loaded.model = loaded.runtime = None  # consumed: the weights go before the export is loaded
    gc.collect()
    if inexact:
        checks: dict[str, Any] = {"transformers": {"skipped": inexact}}
    else:
        checks = {"transformers": verify_transformers(ref, path, fmt, TOLERANCES[kind])}
        checks["transformers"]["tolerance_kind"] = kind
    if fmt == "gguf":
        checks["llama_cpp"] = verify_llama_cpp(ref, path)
    return checks


def verification_lines(verification: dict[str, Any] | None) -> dict[str, str]:
    """One line per check (transformers, llama.cpp): what the model card and `rys-search export` print."""
    if not verification:
        return {"not verified": "exported with --no-verify"}
    lines = {}
    t = verification.get("transformers")
    if t and "skipped" in t:
        lines["transformers"] = f"not run: {t['skipped']}"
    elif t:
        lines["transformers"] = (f"max logit difference {t['max_abs_logit_diff']:.3g} (tolerance {t['tolerance']:.3g}) "
                                 f"over {t['positions']} positions, top-1 agreement {t['top1_agreement']:.3f}")
    c = verification.get("llama_cpp")
    if c:
        lines["llama.cpp"] = (f"{c['greedy_tokens_checked']} greedy tokens, {c['mismatches']} different; "
                              f"{c['near_tie_flips']} of {c['near_ties']} near ties (gap < {c['near_tie_margin']}) flipped")
        if "prompts_tokenized" in c:
            lines["llama.cpp"] += (f"; {c['prompts_tokenized_alike']} of {c['prompts_tokenized']} prompts' text "
                                   f"tokenized as the model's tokenizer does")
    return lines
