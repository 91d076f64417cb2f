"""Read RADOLAN files (plain, gz, bz2, tar, ODIM-HDF5; detected by magic bytes) and write them.

Archives are unpacked in memory with hard bounds on sizes and member counts, so a
decompression bomb or a hostile tar is a :class:`RadolanError`, not an exhausted machine.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from radinfill import atomic
from radinfill.radolan import hdf5
from radinfill.radolan.codec import Field, decode, encode
from radinfill.radolan.errors import RadolanError

#: Largest single product accepted: a DE4800 two-byte grid (42.2 MB) plus header.
MAX_PRODUCT_BYTES = 4800 * 4400 * 2 + 8192
#: Most bytes the decompressed streams of one file may expand to together, all layers and all
#: compressed tar members counted (e.g. the tar.bz2 of 25 DE1200 forecast members is 66 MB).
MAX_STREAM_BYTES = 512 * 1024 * 1024
MAX_MEMBERS = 1000
_MAX_NESTING = 3
#: Bytes read from a decompressing stream at a time: memory follows what the stream really
#: holds, never the budget (a ``read(budget)`` would allocate the whole budget up front).
_CHUNK_BYTES = 1024 * 1024


def sniff(data: bytes) -> str:
    """Container kind from magic bytes: ``gzip``, ``bz2``, ``tar``, ``hdf5`` or ``product``."""
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh":
        return "bz2"
    if data[257:262] == b"ustar":
        return "tar"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    return "product"


def read(path: str | os.PathLike[str]) -> list[Field]:
    """Read every product in a file: a plain product, gz/bz2 of one, or a tar of many.

    Raises
    ------
    RadolanError
        If any part cannot be read or decoded (message names the file and member).
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_STREAM_BYTES:
        raise RadolanError(
            f"file of {size} bytes is larger than {MAX_STREAM_BYTES}",
            source=str(path),
            kind="oversized",
        )
    return loads(path.read_bytes(), str(path))


def loads(data: bytes, source: str = "<bytes>") -> list[Field]:
    """Every product in the bytes of a file (as :func:`read`), for callers that already hold
    them (the service hashes and decodes the same bytes, so a file that changes in between
    cannot give a hash of one content and fields of another).

    Raises
    ------
    RadolanError
        If any part cannot be read or decoded, or ``data`` exceeds :data:`MAX_STREAM_BYTES`.
    """
    if len(data) > MAX_STREAM_BYTES:
        raise RadolanError(
            f"{len(data)} bytes is larger than {MAX_STREAM_BYTES}", source=source, kind="oversized"
        )
    return list(_fields(data, source, 0, _Budget(MAX_STREAM_BYTES)))


def read_one(path: str | os.PathLike[str]) -> Field:
    """Read a file that holds exactly one product."""
    fields = read(path)
    if len(fields) != 1:
        raise RadolanError(
            f"holds {len(fields)} products, expected exactly one",
            source=str(path),
            kind="unsupported",
        )
    return fields[0]


def analysis(fields: Sequence[Field], source: str = "<bytes>") -> Field:
    """The field of a file that is infilled: its only product, or the analysis (lead 0) of a
    forecast bundle such as DWD's ``composite_rv_YYYYMMDD_HHMM.tar`` (its other members are
    forecasts of the same nominal time).

    Raises
    ------
    RadolanError
        ``unsupported`` if the file holds several products or nominal times, or a bundle has
        no analysis member.
    """
    if len(fields) == 1:
        return fields[0]
    if len({(f.product, f.time) for f in fields}) != 1:
        raise RadolanError(
            f"holds {len(fields)} products of several kinds or times; one per file, or one "
            "forecast bundle",
            source=source,
            kind="unsupported",
        )
    analyses = [f for f in fields if f.header.lead_minutes == 0]
    if len(analyses) != 1:
        raise RadolanError(
            f"a bundle of {len(fields)} members with {len(analyses)} analyses (lead 0), "
            "expected one",
            source=source,
            kind="unsupported",
        )
    return analyses[0]


def member_name(field: Field, source: str) -> str | None:
    """The archive member ``field`` was read from, when ``source`` (the file) is an archive."""
    prefix = f"{source}:"
    return field.source.removeprefix(prefix) if field.source.startswith(prefix) else None


def write(field: Field, path: str | os.PathLike[str], mode: int = atomic.DEFAULT_MODE) -> None:
    """Atomically write ``field`` in its own format (RADOLAN binary, or ODIM-HDF5 for a field
    read from one); ``.gz``/``.bz2`` suffixes compress."""
    atomic.write_bytes(path, dumps(field, Path(path).name), mode)


def dumps(field: Field, name: str = "") -> bytes:
    """The bytes :func:`write` puts in a file called ``name`` (compressed for ``.gz``/``.bz2``;
    gzip without a timestamp, so the same field gives the same bytes).

    The format is the field's own, so a product goes out as it came in: binary products are
    encoded by :func:`~radinfill.radolan.codec.encode`, fields read from ODIM-HDF5 by
    :func:`~radinfill.radolan.hdf5.encode` (their original file with the changes).
    """
    data = hdf5.encode(field) if field.original else encode(field)
    return _compress(data, _suffix_kind(name))


def _suffix_kind(name: str) -> str:
    """``gzip``, ``bz2`` or ``product`` (none) for a file name's compression suffix."""
    return {".gz": "gzip", ".bz2": "bz2"}.get(Path(name).suffix, "product")


def _compress(data: bytes, kind: str) -> bytes:
    """``data`` compressed as ``kind`` (a :func:`sniff` kind; others leave it as is)."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "bz2":
        return bz2.compress(data)
    return data


def dumps_tar(archive: bytes, fields: Mapping[str, Field], source: str = "<bytes>") -> bytes:
    """A copy of a tar archive (plain, or inside gzip/bz2 as :func:`loads` reads it) in which the
    members named in ``fields`` hold those fields, encoded by :func:`dumps` under the member's
    name, and every other member is byte for byte the input's (header blocks included).

    Members keep their order, names and tar metadata (mode, owner, times, format); a replaced
    member gets its new size and checksum. This is how an infilled forecast bundle such as
    DWD's ``composite_rv_YYYYMMDD_HHMM.tar`` (analysis and forecast leads as ``-hd5``
    members) goes out in the layout it came in: only the members that changed differ.

    Parameters
    ----------
    archive
        The bytes of the input file.
    fields
        Member name (as in the archive, e.g. ``composite_rv_20250923_0855_000-hd5``) to the
        field to store there.
    source
        Where ``archive`` came from, for error messages.

    Raises
    ------
    RadolanError
        If ``archive`` is not a readable tar (``kind`` as for :func:`loads`), or a name in
        ``fields`` is not a file member of it (``unsupported``).
    """
    kind = sniff(archive)
    if kind in ("gzip", "bz2"):
        inner = _decompress(archive, kind, source, _Budget(MAX_STREAM_BYTES))
        return _compress(dumps_tar(inner, fields, source), kind)
    if kind != "tar":
        raise RadolanError(f"not a tar archive but {kind}", source=source, kind="unsupported")
    with _tar_errors(archive, source), tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        members = tar.getmembers()
    names = {m.name for m in members if m.isfile()}
    if unknown := sorted(set(fields) - names):
        raise RadolanError(
            f"no file member(s) {unknown} in the archive", source=source, kind="unsupported"
        )
    tar_format = tarfile.GNU_FORMAT if archive[257:265] == b"ustar  \x00" else tarfile.PAX_FORMAT
    parts = []
    for member in members:
        if member.name not in fields:
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            parts.append(archive[member.offset : end])
            continue
        data = dumps(fields[member.name], member.name)
        info = copy.copy(member)
        info.size = len(data)
        padding = -len(data) % tarfile.BLOCKSIZE
        parts += [info.tobuf(tar_format, tarfile.ENCODING, "surrogateescape"), data, bytes(padding)]
    body = b"".join(parts) + bytes(2 * tarfile.BLOCKSIZE)
    return body + bytes(-len(body) % tarfile.RECORDSIZE)


class _Budget:
    """Decompressed bytes one :func:`read` may still produce, shared by all layers and members.

    A per-stream bound alone would let a tar of many small compressed members expand
    without limit.
    """

    def __init__(self, left: int) -> None:
        self.left = left


def _fields(data: bytes, source: str, depth: int, budget: _Budget) -> Iterator[Field]:
    kind = sniff(data)
    if kind in ("product", "hdf5"):
        if len(data) > MAX_PRODUCT_BYTES:
            raise RadolanError(
                f"product of {len(data)} bytes exceeds {MAX_PRODUCT_BYTES}",
                source=source,
                kind="oversized",
            )
        yield decode(data, source=source)
        return
    if depth >= _MAX_NESTING:
        raise RadolanError("archives nested too deeply", source=source, kind="unsupported")
    if kind == "tar":
        for name, member in _tar_members(data, source):
            yield from _fields(member, f"{source}:{name}", depth + 1, budget)
    else:
        yield from _fields(_decompress(data, kind, source, budget), source, depth + 1, budget)


def _decompress(data: bytes, kind: str, source: str, budget: _Budget) -> bytes:
    """The decompressed stream, read in chunks until it ends or passes the budget."""
    chunks: list[bytes] = []
    size = 0
    try:
        buffer = io.BytesIO(data)
        with gzip.GzipFile(fileobj=buffer) if kind == "gzip" else bz2.BZ2File(buffer) as stream:
            while size <= budget.left and (chunk := stream.read(_CHUNK_BYTES)):
                chunks.append(chunk)
                size += len(chunk)
    except EOFError as err:  # the stream ends before its end marker: cut short
        raise RadolanError(
            f"truncated {kind} stream: {err}", source=source, kind="truncated"
        ) from None
    except (OSError, zlib.error, ValueError) as err:
        raise RadolanError(f"corrupt {kind} stream: {err}", source=source) from None
    if size > budget.left:
        raise RadolanError(
            f"{kind} stream expands beyond {MAX_STREAM_BYTES} bytes (all streams of the file)",
            source=source,
            kind="oversized",
        )
    budget.left -= size
    return b"".join(chunks)


def _tar_members(data: bytes, source: str) -> Iterator[tuple[str, bytes]]:
    with _tar_errors(data, source), tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        if len(members) > MAX_MEMBERS:
            raise RadolanError(
                f"tar holds {len(members)} files, more than {MAX_MEMBERS}",
                source=source,
                kind="oversized",
            )
        if not members:
            raise RadolanError("tar archive holds no files", source=source)
        for member in sorted(members, key=lambda m: m.name):
            _check_member(member, source)
            handle = archive.extractfile(member)
            if handle is None:
                continue
            yield member.name, handle.read(member.size)


@contextlib.contextmanager
def _tar_errors(data: bytes, source: str) -> Iterator[None]:
    """Turn what :mod:`tarfile` raises on the archive ``data`` into a RadolanError."""
    try:
        yield
    except (tarfile.TarError, OSError, EOFError) as err:
        # A whole archive ends with two zero blocks; one without them was cut short.
        cut = not data.endswith(bytes(2 * tarfile.BLOCKSIZE))
        raise RadolanError(
            f"{'truncated' if cut else 'corrupt'} tar archive: {err}",
            source=source,
            kind="truncated" if cut else "corrupt",
        ) from None


def _check_member(member: tarfile.TarInfo, source: str) -> None:
    """Refuse a member before reading it if it could expand beyond the archive's own bytes.

    A sparse member (which DWD never writes) can claim far more bytes than the archive holds;
    one larger than any product is refused unread. Every other member's bytes lie inside the
    archive (:mod:`tarfile` refuses an archive whose members run past its end), so reading
    them allocates no more than the archive's size.
    """
    where = f"{source}:{member.name}"
    if member.issparse():
        raise RadolanError("sparse tar member is not supported", source=where, kind="unsupported")
    if member.size > MAX_PRODUCT_BYTES:
        raise RadolanError(
            f"tar member of {member.size} bytes exceeds {MAX_PRODUCT_BYTES}",
            source=where,
            kind="oversized",
        )
