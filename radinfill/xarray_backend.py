"""xarray backend engine ``radinfill``: ``xr.open_dataset(path, engine="radinfill")``.

Registered through the ``xarray.backends`` entry point, so any xarray code can open RADOLAN
files without importing radinfill. The engine is named ``radinfill`` so that it does not
shadow wradlib's ``radolan`` engine when both are installed. Files are recognised by their
content, never by their name (DWD names rarely have a suffix): a RADOLAN header (two-character
product id, 15 digits of time and station, tokens, ETX) at the start, or a gzip, bz2 or tar
container whose first product has one, or an ODIM-HDF5 composite.
"""

from __future__ import annotations

import bz2
import io
import os
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import xarray as xr
from xarray.backends import BackendEntrypoint

from radinfill.dataset import open_radolan
from radinfill.radolan import RadolanError, header, sniff

#: Bytes of a (decompressed) stream inspected when guessing; covers a tar member header and
#: the longest legal RADOLAN header.
_SNIFF_BYTES = 64 * 1024
#: Raw bytes read from a file when guessing: one complete bz2 block (at most 900 kB of
#: input compresses to at most this) so that a bz2 stream yields its first bytes.
_READ_BYTES = 1024 * 1024
_MAX_NESTING = 3
_ODIM_MARK = b"ODIM_H5"


class RadinfillBackendEntrypoint(BackendEntrypoint):
    """Open DWD RADOLAN composites as CF datasets (see :func:`radinfill.dataset.to_dataset`)."""

    description: ClassVar[str] = (
        "Open DWD RADOLAN composites (binary, gz/bz2/tar bundles, ODIM-HDF5) as CF datasets"
    )
    url: ClassVar[str] = "https://www.dwd.de/DE/leistungen/radolan/radolan.html"
    open_dataset_parameters: ClassVar[tuple[str, ...]] = ("filename_or_obj", "drop_variables")

    def open_dataset(
        self,
        filename_or_obj: object,
        *,
        drop_variables: str | Iterable[str] | None = None,
    ) -> xr.Dataset:
        """Read every product in the file into one dataset, minus ``drop_variables``.

        Raises
        ------
        TypeError
            If ``filename_or_obj`` is not a path (file objects and stores are not supported).
        RadolanError
            If the file cannot be decoded.
        """
        ds = open_radolan(_path(filename_or_obj))
        if drop_variables is not None:
            names = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
            ds = ds.drop_vars(names, errors="ignore")
        return ds

    def guess_can_open(self, filename_or_obj: object) -> bool:
        """True if the file's first bytes look like a RADOLAN product or a container of one."""
        try:
            with open(_path(filename_or_obj), "rb") as handle:
                head = handle.read(_READ_BYTES)
        except (TypeError, OSError):
            return False
        return looks_like_radolan(head)


def looks_like_radolan(head: bytes, depth: int = 0) -> bool:
    """Whether the first bytes of a file are a RADOLAN product, or gz/bz2/tar of one.

    Only the beginning is inspected (compressed streams are decompressed up to
    ``_SNIFF_BYTES``; a tar's first file member is examined), so a truncated ``head`` is fine.
    """
    kind = sniff(head)
    if kind == "product":
        return _is_radolan_header(head)
    if kind == "hdf5":
        return _ODIM_MARK in head[: header.MAX_HEADER_BYTES]
    if depth >= _MAX_NESTING:
        return False
    inner = _first_member(head) if kind == "tar" else _decompressed_head(head, kind)
    return inner is not None and looks_like_radolan(inner, depth + 1)


def _path(filename_or_obj: object) -> Path:
    if isinstance(filename_or_obj, str | os.PathLike):
        return Path(os.fspath(filename_or_obj))
    raise TypeError(
        f"the radinfill engine reads files by path, not {type(filename_or_obj).__name__} objects"
    )


def _is_radolan_header(head: bytes) -> bool:
    try:
        raw, _ = header.split(head)
        header.parse(raw)
    except RadolanError:
        return False
    return True


def _decompressed_head(data: bytes, kind: str) -> bytes | None:
    """The first ``_SNIFF_BYTES`` of a possibly truncated gzip or bz2 stream."""
    try:
        if kind == "gzip":
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data, _SNIFF_BYTES)
        return bz2.BZ2Decompressor().decompress(data, max_length=_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error, ValueError):
        return None


def _first_member(data: bytes) -> bytes | None:
    """The first bytes of the first regular file in a possibly truncated tar stream."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
            for member in archive:
                if member.isfile():
                    handle = archive.extractfile(member)
                    return None if handle is None else handle.read(header.MAX_HEADER_BYTES)
    except (tarfile.TarError, OSError, EOFError):
        return None
    return None
