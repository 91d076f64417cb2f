"""Fuzz the readers of untrusted input for a bounded time: RADOLAN files, ODIM-HDF5, checkpoints.

Usage: ``python bench/fuzz.py [--seconds N] [--target decode|hdf5|odim-write|checkpoint|all]
[--engine auto|atheris|hypothesis] [--input-seconds S] [--samples DIR] [--out DIR]``

Targets, each seeded with real inputs and fuzzed for ``--seconds`` (default 60):

* ``decode``: :func:`radinfill.radolan.loads`, the service's entry (a file's bytes to fields),
  seeded with every real sample as stored (plain, gz, bz2, tar) and the products inside them;
* ``hdf5``: the same entry on the real ODIM-HDF5 composite (:mod:`radinfill.radolan.hdf5`),
  mutated byte-wise and structurally (attributes, groups and the data set rewritten with h5py);
* ``odim-write``: :func:`radinfill.radolan.hdf5.encode`, the ODIM writer, mirroring each such
  mutant: the field is the first real composite's with its holes filled, its ``original`` (the
  file the writer copies and rewrites) the input, so the writer meets every file the reader
  might have let through;
* ``checkpoint``: :func:`radinfill.model.load_checkpoint` on a directory written from the
  input, seeded with small checkpoints of every variant and the shipped model; metadata.json
  is mutated as JSON (wrong types, huge numbers, missing keys, nested junk, NaN, non-UTF-8) and
  the safetensors bytes as bytes (the metadata's ``sha256`` follows the mutated weights, so
  the safetensors parser and the network builder see them).

Every input must satisfy three properties, or it is saved to ``--out`` and counted:

1. only the documented error escapes: :class:`~radinfill.radolan.RadolanError`, resp.
   :class:`~radinfill.model.metadata.CheckpointError` (anything else is an *escape*);
2. no hang: it finishes within ``--input-seconds`` (default 10; a ``SIGALRM`` watchdog
   interrupts Python code, libFuzzer's ``-timeout`` also native code under atheris);
3. its peak allocation stays below a bound derived from the input and the grid (below).

Memory is the larger of the tracemalloc peak (Python objects and numpy arrays) and the growth
of the resident-set high-water mark (``VmHWM``, reset per input; it sees HDF5 and torch, whose
allocations tracemalloc cannot). The bound for a RADOLAN or HDF5 input of ``L`` bytes is::

    SLACK + COPIES * (L + X) + PIXEL_BYTES * P

``X`` is what its compressed layers really expand to (counted here with the standard library,
at most the codec's own :data:`~radinfill.radolan.io.MAX_STREAM_BYTES` budget); ``COPIES`` = 4
covers the decompressed chunks and their join, the tar member read and the header/payload
split. ``P`` bounds the pixels decoded: a binary product has at least one byte per pixel
(RVP6) and no grid larger than the biggest catalogued one, DE4800 (4800 x 4400), so
``P = sum(min(product bytes, 4800 * 4400))``; an HDF5 product is compressed inside the file,
so it counts the whole DE4800 grid. ``PIXEL_BYTES`` = 32: the stored word (at most 8 bytes:
the ODIM reader refuses wider types), the float64 scaling product (8), the float32 values (4),
the flag planes and their temporaries (1 each). ``SLACK`` (16 MiB) absorbs interpreter and
library noise. For a checkpoint with ``M`` bytes of metadata and ``W`` of weights the bound is
``SLACK_CHECKPOINT + 64 * M + 8 * W``: parsed JSON costs at most ~24 bytes of objects (plus
tracemalloc's own records) per byte of text, and the weights are read, parsed and copied into
a network whose tensors must have the weights' shapes (each stored element at least one byte,
at most four as float32).

Engines: with ``atheris`` importable (``pip install atheris``) the fuzzing is coverage-guided
by libFuzzer (one worker process per target, radinfill and the stdlib container modules
instrumented), its own byte mutations mixed with the format-aware mutations below; without it,
hypothesis draws the same format-aware mutations at random. Prints one table row per target:
inputs, distinct errors, escapes, hangs, inputs over the memory bound, the slowest input, the
largest peak with its bound, and the largest peak/bound ratio. Exits 1 if any property broke.
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
import types
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from radinfill.defaults import SHIPPED_MODEL
from radinfill.radolan import RadolanError, hdf5, loads, sniff
from radinfill.radolan.io import MAX_STREAM_BYTES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = REPO.parent / "shared" / "data" / "radolan"
TARGETS = ("decode", "hdf5", "odim-write", "checkpoint")

#: Pixels of the biggest catalogued grid (DE4800, 4800 x 4400): no product decodes to more.
BIGGEST_GRID = 4800 * 4400
#: Copies the reader may hold of each input or decompressed byte (chunks and their join,
#: a tar member, the header/payload split).
COPIES = 4
#: Bytes per decoded pixel at the decoder's peak (stored word, float64 product, float32
#: values, flag planes and temporaries).
PIXEL_BYTES = 32
#: Interpreter and library noise per input.
SLACK = 16 * 1024 * 1024
#: The same for checkpoints: torch allocates workspaces when it builds a network.
SLACK_CHECKPOINT = 64 * 1024 * 1024
#: Bytes of Python objects (and their tracemalloc records) per byte of metadata JSON.
JSON_OBJECT_BYTES = 64
#: Bytes per weights byte: read, parsed, and copied into a float32 network of equal shapes.
WEIGHT_COPIES = 8
#: Bytes at the start of a product where its ASCII header lies (mutations favour them).
HEADER_REGION = 512
#: Examples per hypothesis run; runs repeat until the time is up.
BATCH = 50
#: Modules whose Python code atheris instruments for coverage.
INSTRUMENTED = ("radinfill", "tarfile", "gzip", "bz2", "_compression", "json", "h5py")

#: ``choose(low, high)``: an integer in [low, high], from hypothesis or a seeded RNG.
Choose = Callable[[int, int], int]
Mutation = Callable[[Choose, bytes], bytes]


# --- what an input really holds -------------------------------------------------------------------


@dataclass
class Contents:
    """What the layers of one input expand to, seen with the standard library only."""

    expanded: int = 0
    products: list[bytes] = field(default_factory=list)


def contents(data: bytes, cap: int = MAX_STREAM_BYTES) -> Contents:
    """Bytes decompressed from every gz/bz2 layer of ``data`` (at most ``cap`` in all) and the
    innermost products (plain, HDF5 or unrecognised bytes); broken layers count up to the break.
    """
    found = Contents()
    _walk(data, found, cap, 0)
    return found


def _walk(data: bytes, found: Contents, cap: int, depth: int) -> None:
    kind = sniff(data)
    if kind in ("product", "hdf5") or depth > 3:
        found.products.append(data)
    elif kind == "tar":
        for member in _tar_members(data):
            _walk(member, found, cap, depth + 1)
    else:
        inner = _inflate(data, kind, cap - found.expanded)
        found.expanded += len(inner)
        _walk(inner, found, cap, depth + 1)


def _tar_members(data: bytes) -> Iterator[bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive.getmembers():
                end = member.offset_data + member.size
                if member.isfile() and not member.issparse() and end <= len(data):
                    yield data[member.offset_data : end]
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return


def _inflate(data: bytes, kind: str, cap: int) -> bytes:
    chunks, size = [], 0
    try:
        buffer = io.BytesIO(data)
        with gzip.GzipFile(fileobj=buffer) if kind == "gzip" else bz2.BZ2File(buffer) as stream:
            while size <= cap and (chunk := stream.read(1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
    except (OSError, EOFError, ValueError, zlib.error):
        pass
    return b"".join(chunks)


def radolan_bound(data: bytes) -> int:
    """Most bytes reading ``data`` may allocate (see the module docstring for the derivation)."""
    found = contents(data)
    pixels = sum(
        BIGGEST_GRID if sniff(p) == "hdf5" else min(len(p), BIGGEST_GRID) for p in found.products
    )
    return SLACK + COPIES * (len(data) + found.expanded) + PIXEL_BYTES * pixels


def checkpoint_bound(data: bytes) -> int:
    """Most bytes loading the checkpoint packed in ``data`` may allocate."""
    meta, weights = unpack_checkpoint(data)
    return SLACK_CHECKPOINT + JSON_OBJECT_BYTES * len(meta) + WEIGHT_COPIES * len(weights)


# --- one input, checked ---------------------------------------------------------------------------


class InputTimeout(BaseException):
    """Raised by the watchdog in the fuzzed code (a BaseException, so that no ``except
    Exception`` of the code under test can turn a hang into a documented error)."""


@dataclass
class Target:
    """A function under test with its documented error, memory bound and seeds."""

    name: str
    run: Callable[[bytes], object]
    allowed: type[Exception]
    bound: Callable[[bytes], int]
    seeds: list[bytes]
    mutations: Sequence[Mutation]
    label: Callable[[Exception], str]


@dataclass
class Stats:
    """What the inputs of one target did; JSON-serialisable (atheris workers send it back)."""

    target: str
    engine: str
    inputs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    escapes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    over_bound: list[str] = field(default_factory=list)
    max_seconds: float = 0.0
    peak: int = 0
    peak_bound: int = 0
    worst_ratio: float = 0.0

    @property
    def violations(self) -> int:
        """Inputs that broke a property."""
        return len(self.escapes) + len(self.hangs) + len(self.over_bound)


def probe(
    target: Target, data: bytes, stats: Stats, out: Path, limit: float, alarm: bool = True
) -> None:
    """Run one input, record its outcome in ``stats`` and save it to ``out`` if it broke a
    property: only the allowed error, at most ``limit`` seconds (``alarm`` arms the SIGALRM
    watchdog; libFuzzer keeps time itself), peak memory within the target's bound."""
    bound = target.bound(data)
    tracemalloc.reset_peak()
    traced_start = tracemalloc.get_traced_memory()[0]
    rss_start = _reset_rss_peak()
    started = time.perf_counter()
    problem = None
    try:
        with watchdog(limit if alarm else None):
            target.run(data)
    except target.allowed as err:
        key = target.label(err)
        stats.errors[key] = stats.errors.get(key, 0) + 1
    except InputTimeout:
        problem = stats.hangs, "hang", f"over {limit} s"
    except Exception as err:
        problem = stats.escapes, "escape", f"{type(err).__name__}: {err}"[:300]
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] - traced_start
    peak = max(traced, _rss_peak() - rss_start)
    stats.inputs += 1
    stats.max_seconds = max(stats.max_seconds, seconds)
    if peak > stats.peak:
        stats.peak, stats.peak_bound = peak, bound
    stats.worst_ratio = max(stats.worst_ratio, peak / bound)
    if problem is None and seconds > limit:
        problem = stats.hangs, "hang", f"{seconds:.1f} s"
    if problem is None and peak > bound:
        problem = stats.over_bound, "memory", f"peak {peak} bytes > bound {bound}"
    if problem is not None:
        found, kind, what = problem
        path = out / f"{target.name}-{kind}-{hashlib.sha256(data).hexdigest()[:12]}.bin"
        path.write_bytes(data)
        found.append(f"{path.name}: {what}")


@contextmanager
def watchdog(seconds: float | None) -> Iterator[None]:
    """Raise :class:`InputTimeout` in the running code after ``seconds`` (wall clock).

    Restores any outer ``SIGALRM`` timer (pytest-timeout uses one) with the time it had left.
    """
    if seconds is None:
        yield
        return

    def expire(signum: int, frame: types.FrameType | None) -> None:
        raise InputTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = max(outer - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def _status_bytes(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _reset_rss_peak() -> int:
    """Reset the resident-set high-water mark (Linux ``clear_refs``); the resident size now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 1 << 62  # no reset possible: RSS growth is not measured
    return _status_bytes("VmRSS")


def _rss_peak() -> int:
    return _status_bytes("VmHWM")


def error_label(kind: str, message: str) -> str:
    """A distinct-error key: the kind and the message with numbers, hex and quoted text blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    return f"{kind}: " + re.sub(r"0x[0-9a-f]+|\d+", "N", text)[:100]


def radolan_label(err: Exception) -> str:
    """:func:`error_label` of a :class:`RadolanError` (its kind and reason)."""
    assert isinstance(err, RadolanError)
    return error_label(err.kind, err.reason)


def warm_up(target: Target) -> None:
    """Run every seed once, unmeasured: first calls import and initialise libraries (torch's
    CPU kernels, pyproj grids), which is no cost of the input that happens to come first."""
    for seed in target.seeds:
        try:
            target.run(seed)
        except target.allowed:
            continue


# --- mutations ------------------------------------------------------------------------------------


def mutate(choose: Choose, seeds: Sequence[bytes], mutations: Sequence[Mutation]) -> bytes:
    """A seed with one to three mutations applied."""
    data = seeds[choose(0, len(seeds) - 1)]
    for _ in range(choose(1, 3)):
        data = mutations[choose(0, len(mutations) - 1)](choose, data)
    return data


def _position(choose: Choose, size: int) -> int:
    """An offset into ``size`` bytes, half the time inside the header region."""
    limit = size if choose(0, 1) else min(size, HEADER_REGION)
    return choose(0, max(limit - 1, 0))


#: Byte values header numbers and separators are made of, then anything.
_BYTES = b" 0123456789x<>,E+-\x03\x00\xff"


def overwrite(choose: Choose, data: bytes) -> bytes:
    """Replace one byte (a header character or any value)."""
    if not data:
        return data
    pos = _position(choose, len(data))
    value = _BYTES[choose(0, len(_BYTES) - 1)] if choose(0, 1) else choose(0, 255)
    return data[:pos] + bytes([value]) + data[pos + 1 :]


def truncate(choose: Choose, data: bytes) -> bytes:
    """Cut the input short (a file still being written)."""
    return data[: _position(choose, len(data) + 1)]


def insert(choose: Choose, data: bytes) -> bytes:
    """Insert up to 64 bytes of one value."""
    pos = _position(choose, len(data) + 1)
    return data[:pos] + bytes([_BYTES[choose(0, len(_BYTES) - 1)]]) * choose(1, 64) + data[pos:]


def delete(choose: Choose, data: bytes) -> bytes:
    """Remove up to 64 bytes."""
    pos = _position(choose, len(data) + 1)
    return data[:pos] + data[pos + choose(1, 64) :]


_TOKENS = re.compile(rb"BY|GP|MS|PR|INT|VS|LV|VV|ST|RM|BG|MF|VR|QN|U")
#: Extreme header values: huge or zero grids and lengths, absurd precisions and text lengths.
_EXTREMES = (
    b"9999999999",
    b"      0",
    b"4800x4400",
    b"9999x9999",
    b"   0x   0",
    b"   1x   1",
    b"1200x1100",
    b"999<",
    b"  0",
    b" E+09",
    b" E-99",
    b"99",
    b"-1",
    b"<" + b"x" * 40,
)


def header_token(choose: Choose, data: bytes) -> bytes:
    """Overwrite the value after a header token (``GP``, ``BY``, ``MS`` ...) with an extreme."""
    end = data.find(b"\x03", 0, 4096)
    hits = list(_TOKENS.finditer(data, 0, end if end > 0 else min(len(data), 4096)))
    if not hits:
        return data
    at = hits[choose(0, len(hits) - 1)].end()
    value = _EXTREMES[choose(0, len(_EXTREMES) - 1)]
    return data[:at] + value + data[at + len(value) * choose(0, 1) :]


def wrap(choose: Choose, data: bytes) -> bytes:
    """Put the (mutated) bytes into a container: gzip, bz2 or a tar of one or two members."""
    kind = choose(0, 2)
    if kind == 0:
        return gzip.compress(data, compresslevel=1, mtime=0)
    if kind == 1:
        return bz2.compress(data, compresslevel=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("a", "b")[: choose(1, 2)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


BYTE_MUTATIONS: tuple[Mutation, ...] = (overwrite, truncate, insert, delete)
RADOLAN_MUTATIONS: tuple[Mutation, ...] = (*BYTE_MUTATIONS, header_token, header_token, wrap)

#: Values ODIM attributes are set to: out of range, wrong type, wrong shape, huge text.
_ODIM_VALUES: tuple[Any, ...] = (
    0,
    -1,
    2**40,
    1e308,
    float("nan"),
    float("inf"),
    b"",
    b"garbage",
    b"20250230",
    np.zeros(3),
    np.arange(1000.0).reshape(1000, 1, 1),
    "x" * 10000,
)
_ODIM_SHAPES = ((1200, 1100), (1, 1), (1100, 1200), (0, 0), (4, 4, 4), (4800, 4400))
_ODIM_TYPES = ("u1", "i8", "f4", "f8", "S8", "u2")


def odim_structure(choose: Choose, data: bytes) -> bytes:
    """Rewrite one ODIM attribute, delete an attribute or object, or replace the data set with
    another shape and type (h5py on a copy; bytes that are no HDF5 file come back as given)."""
    if sniff(data) != "hdf5":
        return data
    buffer = io.BytesIO(data)
    try:
        with h5py.File(buffer, "r+") as h5:
            _edit_odim(choose, h5)
    except Exception:  # a file h5py cannot edit stays as it was
        return data
    return buffer.getvalue()


def _edit_odim(choose: Choose, h5: h5py.File) -> None:
    paths = [""]
    h5.visit(paths.append)
    path = paths[choose(0, len(paths) - 1)]
    node = h5[path] if path else h5
    action = choose(0, 3)
    if action == 0 and path:
        del h5[path]
    elif action == 1 and node.attrs:
        names = sorted(node.attrs)
        del node.attrs[names[choose(0, len(names) - 1)]]
    elif action == 2:
        shape = _ODIM_SHAPES[choose(0, len(_ODIM_SHAPES) - 1)]
        dtype = _ODIM_TYPES[choose(0, len(_ODIM_TYPES) - 1)]
        if "dataset1/data1/data" in h5:
            del h5["dataset1/data1/data"]
        h5.create_dataset("dataset1/data1/data", shape=shape, dtype=dtype, compression="gzip")
    else:
        names = sorted(node.attrs) or ["extra"]
        name = names[choose(0, len(names) - 1)]
        node.attrs[name] = _ODIM_VALUES[choose(0, len(_ODIM_VALUES) - 1)]


HDF5_MUTATIONS: tuple[Mutation, ...] = (*BYTE_MUTATIONS, odim_structure, odim_structure)


# --- checkpoints ----------------------------------------------------------------------------------

#: Stands for the SHA-256 of the (mutated) weights in packed metadata, filled in before loading.
WEIGHTS_SHA256 = b"@WEIGHTS_SHA256@"


def pack_checkpoint(meta: bytes, weights: bytes) -> bytes:
    """One fuzz input from the two files of a checkpoint (4-byte length of the metadata first)."""
    return struct.pack("<I", len(meta)) + meta + weights


def unpack_checkpoint(data: bytes) -> tuple[bytes, bytes]:
    """(metadata, weights) of a packed input; a length beyond the input takes all of it."""
    if len(data) < 4:
        return data, b""
    (size,) = struct.unpack("<I", data[:4])
    return data[4 : 4 + size], data[4 + size :]


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


#: JSON values metadata entries are set to: wrong types, huge numbers, junk, deep nesting.
_JSON_VALUES: tuple[Any, ...] = (
    None,
    True,
    -1,
    0,
    10**9,
    10**40,
    1e308,
    1.5,
    "",
    "x" * 1000,
    [],
    {},
    [10**6, 10**6],
    [3] * 100,
    [1] * 5000,
    "lstm_attention",
    _nested(50),
    {"a": _nested(20)},
)
#: Raw text spliced into the metadata: what JSON-aware edits cannot write.
_JSON_TEXT = (b"NaN", b"Infinity", b"\xff\xfe", b"[" * 3000, b"9" * 5000, b"\x00", b'"\\ud800"')


def _edit_json(choose: Choose, doc: Any) -> Any:
    """``doc`` with one entry (top level or one level down, e.g. in ``hparams``) replaced or
    deleted."""
    if not isinstance(doc, dict) or not doc:
        return _JSON_VALUES[choose(0, len(_JSON_VALUES) - 1)]
    keys = sorted(doc)
    key = keys[choose(0, len(keys) - 1)]
    action = choose(0, 3)
    if action == 0:
        return {k: v for k, v in doc.items() if k != key}
    if action == 1 and isinstance(doc[key], dict):
        return {**doc, key: _edit_json(choose, doc[key])}
    return {**doc, key: _JSON_VALUES[choose(0, len(_JSON_VALUES) - 1)]}


def metadata_json(choose: Choose, data: bytes) -> bytes:
    """Edit metadata.json as JSON (wrong types, huge numbers, missing keys, nested junk)."""
    meta, weights = unpack_checkpoint(data)
    try:
        doc = json.loads(meta)
    except (ValueError, RecursionError):
        return data
    return pack_checkpoint(json.dumps(_edit_json(choose, doc)).encode(), weights)


#: Hyper-parameter names of the networks (and one they do not take) and absurd values for them.
_HPARAMS = (
    "widths",
    "kernels",
    "window",
    "aux_channels",
    "attention_reduction",
    "lstm_kernel",
    "lstm_levels",
    "lstm",
    "unknown",
)
_ABSURD = (
    [4, 10**6],
    [10**4, 10**4],
    [3, 10001],
    [1] * 5000,
    [0, 8],
    10**9,
    0,
    -3,
    4,
    2.5,
    "8",
    None,
    True,
)


def hparams_json(choose: Choose, data: bytes) -> bytes:
    """Set one network hyper-parameter in metadata.json to an absurd value (a gigantic channel
    count or kernel, thousands of levels, zero, a wrong type)."""
    meta, weights = unpack_checkpoint(data)
    try:
        doc = json.loads(meta)
    except (ValueError, RecursionError):
        return data
    if not isinstance(doc, dict) or not isinstance(doc.get("hparams"), dict):
        return data
    name = _HPARAMS[choose(0, len(_HPARAMS) - 1)]
    doc["hparams"][name] = _ABSURD[choose(0, len(_ABSURD) - 1)]
    if name == "window" and choose(0, 1):
        doc["window"] = doc["hparams"]["window"]  # consistent, so that the build is reached
    return pack_checkpoint(json.dumps(doc).encode(), weights)


def metadata_text(choose: Choose, data: bytes) -> bytes:
    """Splice raw text into metadata.json (NaN, bad UTF-8, deep nesting, giant numbers)."""
    meta, weights = unpack_checkpoint(data)
    pos = choose(0, len(meta))
    text = _JSON_TEXT[choose(0, len(_JSON_TEXT) - 1)]
    return pack_checkpoint(meta[:pos] + text + meta[pos + choose(0, 8) :], weights)


def weights_bytes(choose: Choose, data: bytes) -> bytes:
    """A byte mutation of the safetensors file, most often of its 8-byte length and JSON header."""
    meta, weights = unpack_checkpoint(data)
    if choose(0, 2) == 0 and len(weights) >= 8:
        size = (0, 1, 2**31, 2**63, len(weights), 8)[choose(0, 5)]
        weights = struct.pack("<Q", size) + weights[8:]
    else:
        weights = BYTE_MUTATIONS[choose(0, len(BYTE_MUTATIONS) - 1)](choose, weights)
    return pack_checkpoint(meta, weights)


#: Values a tensor entry of the safetensors header is set to.
_TENSOR_EDITS: dict[str, tuple[Any, ...]] = {
    "data_offsets": ([0, 2**62], [5, 1], [0, 0]),
    "dtype": ("F64", "BOOL", "XX", 7),
    "shape": ([10**9, 10**9], [], [-1], [0], [2**62]),
}


def safetensors_header(choose: Choose, data: bytes) -> bytes:
    """Edit the JSON header of the safetensors file: a tensor's dtype, shape or offsets."""
    meta, weights = unpack_checkpoint(data)
    (size,) = struct.unpack("<Q", weights[:8]) if len(weights) >= 8 else (0,)
    try:
        header = json.loads(weights[8 : 8 + size])
    except (ValueError, RecursionError):
        return data
    names = (
        sorted(k for k, v in header.items() if isinstance(v, dict))
        if isinstance(header, dict)
        else []
    )
    if not names:
        return data
    name = names[choose(0, len(names) - 1)]
    key = sorted(_TENSOR_EDITS)[choose(0, len(_TENSOR_EDITS) - 1)]
    values = _TENSOR_EDITS[key]
    text = json.dumps({**header, name: {**header[name], key: values[choose(0, len(values) - 1)]}})
    head = text.encode()
    return pack_checkpoint(meta, struct.pack("<Q", len(head)) + head + weights[8 + size :])


CHECKPOINT_MUTATIONS: tuple[Mutation, ...] = (
    metadata_json,
    hparams_json,
    hparams_json,
    metadata_text,
    weights_bytes,
    safetensors_header,
)


# --- targets --------------------------------------------------------------------------------------


def sample_inputs(samples: Path) -> list[bytes]:
    """Every real sample file as stored and every product inside one, without duplicates."""
    seen: dict[str, bytes] = {}
    for path in sorted(p for p in samples.rglob("*") if p.is_file() and p.name != "README.md"):
        data = path.read_bytes()
        for item in (data, *contents(data).products):
            seen.setdefault(hashlib.sha256(item).hexdigest(), item)
    return list(seen.values())


def decode_target(seeds: Sequence[bytes]) -> Target:
    """:func:`radinfill.radolan.loads` on RADOLAN binary inputs and their containers."""
    return Target(
        "decode",
        lambda data: loads(data, "fuzz"),
        RadolanError,
        radolan_bound,
        [s for s in seeds if sniff(s) != "hdf5"],
        RADOLAN_MUTATIONS,
        radolan_label,
    )


def hdf5_target(seeds: Sequence[bytes]) -> Target:
    """:func:`radinfill.radolan.loads` on ODIM-HDF5 composites."""
    return Target(
        "hdf5",
        lambda data: loads(data, "fuzz.h5"),
        RadolanError,
        radolan_bound,
        [s for s in seeds if sniff(s) == "hdf5"],
        HDF5_MUTATIONS,
        radolan_label,
    )


def odim_write_target(seeds: Sequence[bytes]) -> Target:
    """:func:`radinfill.radolan.hdf5.encode` of an infilled field whose ``original`` is the input.

    The field is the first ODIM seed's with every no-data pixel given 1 mm, so that each input
    is rewritten (an unchanged field would give its original back untouched).
    """
    originals = [s for s in seeds if sniff(s) == "hdf5"]
    field = hdf5.decode(originals[0], source="fuzz.h5")
    filled = field.replace(
        values=np.where(field.nodata, np.float32(1.0), field.values),
        nodata=np.zeros_like(field.nodata),
    )
    return Target(
        "odim-write",
        lambda data: hdf5.encode(filled.replace(original=data)),
        RadolanError,
        radolan_bound,
        originals,
        HDF5_MUTATIONS,
        radolan_label,
    )


def checkpoint_seeds(workdir: Path, shipped: Path | None = SHIPPED_MODEL) -> list[bytes]:
    """Packed checkpoints: a small one of every variant and the shipped model, their metadata
    naming the weights by :data:`WEIGHTS_SHA256`."""
    from radinfill.model import build, list_variants, save_checkpoint
    from radinfill.model.metadata import METADATA, WEIGHTS

    directories = []
    for variant in list_variants():
        model = build(variant, widths=(4, 8), kernels=(3, 3), window=2, attention_reduction=2)
        directories.append(
            save_checkpoint(model, workdir / variant, {"product": "RY", "interval_minutes": 5})
        )
    if shipped is not None and (shipped / METADATA).is_file():
        directories.append(shipped)
    seeds = []
    for directory in directories:
        weights = (directory / WEIGHTS).read_bytes()
        digest = hashlib.sha256(weights).hexdigest().encode()
        meta = (directory / METADATA).read_bytes().replace(digest, WEIGHTS_SHA256)
        seeds.append(pack_checkpoint(meta, weights))
    return seeds


def checkpoint_target(workdir: Path, seeds: Sequence[bytes]) -> Target:
    """:func:`radinfill.model.load_checkpoint` on a checkpoint directory written per input."""
    from radinfill.model.checkpoint import load_checkpoint
    from radinfill.model.metadata import METADATA, WEIGHTS, CheckpointError

    directory = workdir / "checkpoint"
    directory.mkdir(parents=True, exist_ok=True)

    def run(data: bytes) -> object:
        meta, weights = unpack_checkpoint(data)
        digest = hashlib.sha256(weights).hexdigest().encode()
        (directory / METADATA).write_bytes(meta.replace(WEIGHTS_SHA256, digest))
        (directory / WEIGHTS).write_bytes(weights)
        return load_checkpoint(directory)

    def label(err: Exception) -> str:
        return error_label("CheckpointError", str(err).replace(str(directory), "<checkpoint>"))

    return Target(
        "checkpoint",
        run,
        CheckpointError,
        checkpoint_bound,
        list(seeds),
        CHECKPOINT_MUTATIONS,
        label,
    )


def make_target(name: str, samples: Path, workdir: Path) -> Target:
    """The target called ``name`` with its seeds."""
    if name == "checkpoint":
        return checkpoint_target(workdir, checkpoint_seeds(workdir))
    seeds = sample_inputs(samples)
    targets = {"decode": decode_target, "hdf5": hdf5_target, "odim-write": odim_write_target}
    return targets[name](seeds)


# --- engines --------------------------------------------------------------------------------------


def mutants(seeds: Sequence[bytes], mutations: Sequence[Mutation]) -> st.SearchStrategy[bytes]:
    """Hypothesis strategy: :func:`mutate` driven by hypothesis' own choices."""

    @st.composite
    def draw_mutant(draw: st.DrawFn) -> bytes:
        return mutate(lambda low, high: draw(st.integers(low, high)), seeds, mutations)

    return draw_mutant()


def fuzz_hypothesis(target: Target, seconds: float, limit: float, out: Path) -> Stats:
    """Run the seeds, then hypothesis-drawn mutants until ``seconds`` have passed."""
    stats = Stats(target.name, "hypothesis")
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutants(target.seeds, target.mutations))
    def batch(data: bytes) -> None:
        if time.monotonic() < deadline:
            probe(target, data, stats, out, limit)

    warm_up(target)
    tracemalloc.start()
    try:
        for seed in target.seeds:
            probe(target, seed, stats, out, limit)
        while time.monotonic() < deadline:
            batch()
    finally:
        tracemalloc.stop()
    return stats


def fuzz_atheris(args: argparse.Namespace) -> Stats:
    """Fuzz one target with atheris in a worker process; its stats come back as JSON."""
    stats_file = args.out / f"{args.target}.stats.json"
    log = args.out / f"{args.target}.libfuzzer.log"
    stats_file.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir, open(log, "wb") as sink:
        command = [
            sys.executable,
            __file__,
            *("--worker", workdir, "--target", args.target, "--seconds", str(args.seconds)),
            *("--input-seconds", str(args.input_seconds), "--samples", str(args.samples)),
            *("--out", str(args.out)),
        ]
        try:
            done = subprocess.run(
                command, stdout=sink, stderr=subprocess.STDOUT, timeout=args.seconds + 300
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = None
    stats = (
        Stats(**json.loads(stats_file.read_text()))
        if stats_file.exists()
        else Stats(args.target, "atheris")
    )
    if code != 0:  # libFuzzer stopped on a native hang, memory limit or crash: see its log
        stats.hangs.append(f"worker exit {code}, see {log}")
    return stats


def atheris_worker(args: argparse.Namespace) -> None:
    """Inside the worker: libFuzzer over the target until ``--seconds`` have passed; seeds and
    the corpus libFuzzer grows live in the ``--worker`` directory, which the parent removes."""
    import atheris

    workdir = args.worker
    target = make_target(args.target, args.samples, workdir)
    _instrument(atheris)
    corpus = workdir / "corpus"
    corpus.mkdir()
    for index, seed in enumerate(target.seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    warm_up(target)
    stats = Stats(target.name, "atheris")
    deadline = time.monotonic() + args.seconds
    stats_file = args.out / f"{args.target}.stats.json"

    saved = time.monotonic()

    def one(data: bytes) -> None:
        nonlocal saved
        now = time.monotonic()
        if now > deadline or now > saved + 5:  # also now and then, in case libFuzzer stops us
            stats_file.write_text(json.dumps(dataclasses.asdict(stats)))
            saved = now
            if now > deadline:
                os._exit(0)
        probe(target, data, stats, args.out, args.input_seconds, alarm=False)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        choose = random.Random(seed).randint
        if choose(0, 1):
            return atheris.Mutate(data, max_size)
        return mutate(choose, [data], target.mutations)[:max_size]

    tracemalloc.start()
    options = [
        f"-max_len={max(len(s) for s in target.seeds) + 4096}",
        f"-timeout={max(1, round(args.input_seconds))}",
        "-rss_limit_mb=8192",
        f"-artifact_prefix={args.out}/",
        f"-max_total_time={int(args.seconds) + 60}",
    ]
    atheris.Setup([sys.argv[0], *options, str(corpus)], one, custom_mutator=mutator)
    atheris.Fuzz()


def _instrument(atheris: types.ModuleType) -> None:
    """Coverage instrumentation of the code under test: radinfill and the stdlib containers."""
    import gc

    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and str(obj.__module__).startswith(INSTRUMENTED):
            try:
                atheris.instrument_func(obj)
            except Exception:  # e.g. code objects atheris cannot patch: left uninstrumented
                continue


def atheris_available() -> bool:
    """Whether the atheris package can be imported."""
    return importlib.util.find_spec("atheris") is not None


# --- report ---------------------------------------------------------------------------------------

_COLUMNS = (
    "target",
    "engine",
    "inputs",
    "distinct errors",
    "escapes",
    "hangs",
    "over bound",
    "max s/input",
    "peak MiB",
    "its bound MiB",
    "max peak/bound",
)


def table(rows: Sequence[Stats]) -> str:
    """The result table, one row per target."""
    mib = 1024 * 1024
    cells = [_COLUMNS] + [
        (
            s.target,
            s.engine,
            str(s.inputs),
            str(len(s.errors)),
            str(len(s.escapes)),
            str(len(s.hangs)),
            str(len(s.over_bound)),
            f"{s.max_seconds:.2f}",
            f"{s.peak / mib:.1f}",
            f"{s.peak_bound / mib:.1f}",
            f"{s.worst_ratio:.2f}",
        )
        for s in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Fuzz the chosen targets, print the table and what broke; 1 if a property broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--input-seconds", type=float, default=10.0, help="limit per input")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("--out", type=Path, default=None, help="where failing inputs go")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or Path(tempfile.mkdtemp(prefix="radinfill-fuzz-"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        atheris_worker(args)
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "hypothesis"
    rows = []
    for name in TARGETS if args.target == "all" else (args.target,):
        if engine == "atheris":
            rows.append(fuzz_atheris(argparse.Namespace(**{**vars(args), "target": name})))
        else:
            with tempfile.TemporaryDirectory() as workdir:
                target = make_target(name, args.samples, Path(workdir))
                rows.append(fuzz_hypothesis(target, args.seconds, args.input_seconds, args.out))
    print(table(rows))
    for stats in rows:
        for problem in (*stats.escapes, *stats.hangs, *stats.over_bound):
            print(f"{stats.target}: {problem}")
        common = Counter(stats.errors).most_common(3)
        print(
            f"{stats.target}: most frequent errors: " + "; ".join(f"{k} ({n})" for k, n in common)
        )
    broken = sum(s.violations for s in rows)
    print(f"inputs that broke a property: {broken} (saved in {args.out})")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
