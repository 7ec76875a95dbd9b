"""Reading GGUF files (gguf is imported here, in ggufmap and in export/gguf.py only).

    >>> info = inspect_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> info.arch, info.block_count
    ('llama', 30)
    >>> with fast_gguf_load(path) as stats:               # around transformers' own GGUF load
    ...     model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)

A file that is missing, not GGUF, or cut short raises ModelFileError with one line that
says which.

A first load through transformers spends its time in four places: parsing the file's header
(its tokenizer arrays element by element, each a numpy.memmap slice) once for the config, once
for the tokenizer and once for the weights; turning each parsed element into a Python value, in
every one of those passes; building gguf-py's tensor-name map once per submodule of the model;
and dequantizing every tensor on one core. `fast_gguf_load` leaves transformers' loader as it is
(names, q/k permutation, dtypes) and changes only those steps while it is active: the file is
parsed once, through a plain ndarray view of its memory map (PlainReader: the same bytes without
memmap's per-slice bookkeeping), each element is turned into a value once, the name map is built
once per (architecture, layer count), and the tensors are dequantized ahead of the loader by a
pool of threads over all cores (gguf-py's own code, a few hundred rows per task; numpy releases
the GIL in its loops), at most `window` bytes ahead. Dequantization is a pure function of each
row's bytes, so the tensors are the same.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

__all__ = ["FastLoadStats", "GGUFInfo", "ModelFileError", "dequantized", "fast_gguf_load", "inspect_gguf", "parsed"]

GGUF_MAGIC = b"GGUF"


class ModelFileError(UserError):
    """A model file that is missing, unreadable, of the wrong format or incomplete."""


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    arch: str
    block_count: int
    n_tensors: int
    size: int
    keys: frozenset[str] = frozenset()  # the metadata keys present


def check_magic(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def inspect_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Read the header and tensor table; check that every tensor's data lies inside the file."""
    path = Path(path)
    check_magic(path)
    size = path.stat().st_size
    try:
        reader = parsed(path)
    except Exception as exc:  # the reader fails in many ways on a cut file: report it as such
        raise ModelFileError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=reader.data_offset)
    if end > size:
        raise ModelFileError(f"{path} is truncated: its tensors need {end} bytes but the file has {size}")
    try:
        arch = reader.fields["general.architecture"].contents()
        block_count = int(reader.fields[f"{arch}.block_count"].contents())
    except KeyError as exc:
        raise ModelFileError(f"{path} lacks the GGUF metadata key {exc.args[0]}") from None
    return GGUFInfo(path=path, arch=arch, block_count=block_count, n_tensors=len(reader.tensors), size=size,
                    keys=frozenset(reader.fields))


@lru_cache(maxsize=None)
def plain_reader() -> type:
    """gguf-py's GGUFReader, its header read through a plain ndarray view of the file's memory map."""
    import numpy as np
    from gguf.gguf_reader import GGUFReader  # the class itself, also while fast_gguf_load stands in for gguf.GGUFReader

    class PlainReader(GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self._plain = self.data.view(np.ndarray)
            count, dtype = int(count), np.dtype(dtype)
            arr = plain[offset:offset + dtype.itemsize * count].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return PlainReader


def parsed(path: str | os.PathLike) -> Any:
    """The plain reader of path, parsed once for the header check and the load that follows it (the
    tokenizer's arrays make a parse take seconds); a file changed since (size, mtime) is parsed again."""
    where = os.path.realpath(path)
    stat = os.stat(where)
    return _parsed(where, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1)  # the newest file's header, kept for its load
def _parsed(where: str, size: int, mtime_ns: int) -> Any:
    return plain_reader()(where)


@dataclass
class FastLoadStats:
    """What fast_gguf_load did: files parsed, tensors dequantized ahead (hits, by name) or by the loader (misses)."""

    parsed: int = 0  # files read (a header the check parsed is reused, not parsed again)
    hits: int = 0
    misses: int = 0
    threads: int = 0
    names: list[str] = field(default_factory=list)


@contextmanager
def fast_gguf_load(path: str | os.PathLike, threads: int | None = None, window: int = 2 << 30) -> Iterator[FastLoadStats]:
    """While active, transformers' GGUF loading of this file parses it once and gets its tensors
    dequantized ahead by `threads` threads (default: every core this process may use)."""
    import gguf

    stats = FastLoadStats(threads=threads or _cores())
    target = os.path.realpath(path)
    original = {name: getattr(gguf, name) for name in ("GGUFReader", "dequantize", "get_tensor_name_map")}
    readers: dict[str, Any] = {}
    name_maps: dict[tuple[Any, int], Any] = {}
    ahead: dict[str, _Prefetcher] = {}

    def reader(file, mode="r", *args, **kwargs):
        where = os.path.realpath(file)
        if mode != "r" or args or kwargs:
            return original["GGUFReader"](file, mode, *args, **kwargs)
        if where not in readers:
            readers[where] = parsed(where)
            stats.parsed += 1
        return readers[where]

    def dequantize(data, qtype):
        if target in readers and target not in ahead:  # the loader has begun on the tensors: start the pool
            ahead[target] = _Prefetcher(readers[target], stats, original["dequantize"], window)
        for prefetcher in ahead.values():
            result = prefetcher.take(data, qtype)
            if result is not None:
                return result
        if qtype != gguf.GGMLQuantizationType.F32:  # an F32 tensor is a view of the file: nothing to do ahead
            stats.misses += 1
        return original["dequantize"](data, qtype)

    def get_tensor_name_map(arch, n_blocks):
        if (arch, n_blocks) not in name_maps:
            name_maps[(arch, n_blocks)] = original["get_tensor_name_map"](arch, n_blocks)
        return name_maps[(arch, n_blocks)]

    gguf.GGUFReader, gguf.dequantize, gguf.get_tensor_name_map = reader, dequantize, get_tensor_name_map
    try:
        with _parse_once():
            yield stats
    finally:
        gguf.GGUFReader, gguf.dequantize, gguf.get_tensor_name_map = (
            original["GGUFReader"], original["dequantize"], original["get_tensor_name_map"])
        for prefetcher in ahead.values():
            prefetcher.close()


def dequantized(reader: Any, threads: int | None = None, window: int = 2 << 30) -> Iterator[tuple[Any, Any]]:
    """(tensor, its values as a float32 ndarray) for each tensor of a parsed file, in file order; the
    quantized ones dequantized ahead by the pool fast_gguf_load uses, at most `window` bytes ahead."""
    import gguf

    stats = FastLoadStats(threads=threads or _cores())
    prefetcher = _Prefetcher(reader, stats, gguf.dequantize, window)
    try:
        for tensor in reader.tensors:
            values = prefetcher.take(tensor.data, tensor.tensor_type)
            yield tensor, (values if values is not None else gguf.dequantize(tensor.data, tensor.tensor_type))
    finally:
        prefetcher.close()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _parse_once() -> Iterator[None]:
    """While active, transformers turns each header element of a GGUF into a Python value once: the
    config, tokenizer and weight passes all parse every field, the tokenizer's ~10^5-element arrays
    included. The values (ints, floats, bools, strings) are immutable, so sharing them is safe."""
    try:
        import transformers.modeling_gguf_pytorch_utils as utils

        original = utils._gguf_parse_value
    except (ImportError, AttributeError):  # a transformers that parses otherwise: nothing to share
        yield
        return
    memo: dict[int, tuple[Any, Any, Any]] = {}

    def parse(value, data_type):
        kind = tuple(data_type) if isinstance(data_type, list) else data_type
        hit = memo.get(id(value))
        if hit is None or hit[0] is not value or hit[1] != kind:  # the part itself is kept: its id stays its own
            hit = memo[id(value)] = (value, kind, original(value, data_type))
        return hit[2]

    utils._gguf_parse_value = parse
    try:
        yield
    finally:
        utils._gguf_parse_value = original


class _Prefetcher:
    """Dequantizes a reader's tensors in file order on a thread pool, keeping at most `window` bytes
    of results that the loader has not taken yet; take() hands them over by tensor identity."""

    CHUNK = 1 << 19  # output elements per task: large tensors are split by rows

    def __init__(self, reader: Any, stats: FastLoadStats, dequantize: Any, window: int):
        from concurrent.futures import ThreadPoolExecutor

        from gguf import GGMLQuantizationType
        from gguf import quants

        self.stats, self.dequantize, self.window = stats, dequantize, window
        # a block of rows at once: gguf's dequantize works through 16-row groups, holding the GIL between them
        self.by_rows = {q: cls.dequantize_rows for q, cls in getattr(quants, "_type_traits", {}).items()
                        if hasattr(cls, "dequantize_rows")}
        self.tensors = [t for t in reader.tensors if t.tensor_type != GGMLQuantizationType.F32]
        self.order = {id(t.data): k for k, t in enumerate(self.tensors)}
        self.pool = ThreadPoolExecutor(max(1, stats.threads), thread_name_prefix="dequantize")
        self.pending: dict[int, tuple[Any, list[Any]]] = {}  # index -> (output, futures)
        self.submitted = 0
        self.held = 0

    def _fill(self, need: int) -> None:
        """Submit tensors in file order until index `need` is submitted and the window is full."""
        import numpy as np

        while self.submitted < len(self.tensors) and (self.submitted <= need or self.held < self.window):
            k = self.submitted
            tensor = self.tensors[k]
            data, qtype = tensor.data, tensor.tensor_type
            if data.ndim == 2 and data.shape[0] > 1:
                probe = self.dequantize(data[:1], qtype)  # one row: the output's width and dtype
                out = np.empty((data.shape[0], probe.shape[-1]), dtype=probe.dtype)
                step = max(1, self.CHUNK // max(1, probe.shape[-1]))
                futures = [self.pool.submit(self._rows, out, data, qtype, lo, min(lo + step, data.shape[0]))
                           for lo in range(0, data.shape[0], step)]
            else:
                out = None
                futures = [self.pool.submit(self.dequantize, data, qtype)]
            self.pending[k] = (out, futures)
            self.held += int(tensor.n_elements) * 4
            self.submitted += 1

    def _rows(self, out, data, qtype, lo: int, hi: int) -> None:
        out[lo:hi] = self.by_rows.get(qtype, lambda rows: self.dequantize(rows, qtype))(data[lo:hi])

    def take(self, data: Any, qtype: Any):
        """The tensor whose bytes are `data`, dequantized (None: not one of this file's, or taken before)."""
        k = self.order.get(id(data))
        if k is None or self.tensors[k].data is not data or self.tensors[k].tensor_type != qtype:
            return None
        if k < self.submitted and k not in self.pending:
            return None
        self._fill(k)
        out, futures = self.pending.pop(k)
        results = [f.result() for f in futures]
        self.held -= int(self.tensors[k].n_elements) * 4
        self.stats.hits += 1
        self.stats.names.append(self.tensors[k].name)
        self._fill(k)
        return out if out is not None else results[0]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
