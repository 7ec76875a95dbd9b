"""Reading GGUF files: the one place (with export) that imports the gguf package.

    >>> info = inspect_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> info.arch, info.block_count
    ('llama', 30)

A file that is missing, not GGUF, or cut short raises ModelFileError with one line that
says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["GGUFInfo", "ModelFileError", "inspect_gguf"]

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
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
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
    return GGUFInfo(path=path, arch=arch, block_count=block_count, n_tensors=len(reader.tensors), size=size)
