"""Test helpers over the real sample tree: list files, unpack them with the stdlib, shrink products.

Unpacking here deliberately uses only ``gzip``/``bz2``/``tarfile``, not the codec's own reader,
so that round-trip tests check the codec against an independent view of the same bytes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from radinfill.radolan.sites import SITES
from tests.conftest import SAMPLES

#: Product ids whose payload is one RVP6 byte per pixel; every other id uses two bytes.
RVP6 = ("RX", "WX", "EX")


def sample_files(root: Path = SAMPLES) -> list[str]:
    """Every data file below ``root`` as a sorted relative path (the README excluded).

    Empty when the sample tree is absent, so parametrised tests collect no cases (and the
    ``samples`` fixture skips the rest).
    """
    if not root.is_dir():
        return []
    files = (p for p in root.rglob("*") if p.is_file() and p.name != "README.md")
    return sorted(str(p.relative_to(root)) for p in files)


def unpack(data: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, raw bytes)`` of every product inside gz/bz2/tar layers of ``data``.

    Tar members are named ``archive:member`` and come in member-name order.
    """
    if data[:2] == b"\x1f\x8b":
        yield from unpack(gzip.decompress(data), name)
    elif data[:3] == b"BZh":
        yield from unpack(bz2.decompress(data), name)
    elif data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
            for member in members:
                handle = archive.extractfile(member)
                assert handle is not None
                yield from unpack(handle.read(), f"{name}:{member.name}")
    else:
        yield name, data


def raw_product(path: Path) -> bytes:
    """The one raw product inside ``path`` (a plain, gz or bz2 file)."""
    (only,) = unpack(path.read_bytes(), path.name)
    return only[1]


def shrink(product: bytes, rows: int, cols: int, payload: bytes | None = None) -> bytes:
    """A valid product on a ``rows`` x ``cols`` crop, made from a real one.

    The header is kept except for ``GP`` (rewritten) and ``BY`` (recomputed, same field
    width); the payload is ``payload`` or else the first ``rows * cols`` pixels of the
    original. This gives small, fast, realistic products of every header generation.
    """
    etx = product.index(b"\x03")
    head = product[:etx]
    width = 1 if head[:2].decode() in RVP6 else 2
    head = re.sub(rb"GP[ \d]{4}x[ \d]{4}", b"GP%4dx%4d" % (rows, cols), head, count=1)
    body = product[etx + 1 : etx + 1 + rows * cols * width] if payload is None else payload
    by = re.search(rb"BY( *\d+)", head)
    assert by is not None
    size = str(len(head) + 1 + len(body)).rjust(len(by.group(1))).encode()
    return head[: by.start(1)] + size + head[by.end(1) :] + b"\x03" + body


def haversine_km(lon: np.ndarray, lat: np.ndarray, site: str) -> np.ndarray:
    """Great-circle distance (km) of points from a radar site, written out independently of
    the code under test (which uses pyproj)."""
    s = SITES[site]
    p1, p2 = np.radians(s.lat), np.radians(lat)
    a = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon - s.lon) / 2) ** 2
    )
    return 2 * 6371.0088 * np.arcsin(np.sqrt(a))
