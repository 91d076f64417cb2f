"""Atomic file replacement: write to a hidden temp file, fsync, rename, fsync the directory.

A reader polling the target directory sees either the old file or the complete new one,
never a partial file, and a crash leaves at most a hidden ``.NAME.part-*`` file behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

DEFAULT_MODE = 0o644
#: Characters a temporary name keeps; others become ``_``.
_PLAIN = re.compile(r"[^A-Za-z0-9._-]")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], mode: int = DEFAULT_MODE) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit, move it into place atomically.

    The caller writes the temporary file completely (any library, any number of opens).
    If the block raises, the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    # The temporary name is plain ASCII whatever the target's, for libraries (netCDF/HDF5)
    # that cannot open other names; the final rename takes any name.
    prefix = f".{_PLAIN.sub('_', target.name)}.part-"
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = DEFAULT_MODE) -> None:
    """Atomically replace ``path`` with ``data``."""
    with replacing(path, mode) as tmp:
        tmp.write_bytes(data)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
