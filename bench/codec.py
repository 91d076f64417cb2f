"""Benchmark the RADOLAN codec against the I/O floor and against wradlib, per product family.

Usage: ``python bench/codec.py [--samples DIR] [--repeat N]``

For one representative real sample per product family it prints, as the best of N runs
(``time.perf_counter``):

* ``floor``: read the file's bytes and decompress / unpack them (stdlib only), the least any
  reader must do; for ODIM-HDF5 also h5py reading the stored codes (the HDF5 chunk must be
  inflated by any reader);
* ``decode``: :func:`radinfill.radolan.read` end to end, file to :class:`Field` (so
  ``decode/floor`` is the codec's own cost on top of the floor);
* ``encode``: :func:`radinfill.radolan.dumps` of that field back to bytes (no I/O); for
  ODIM-HDF5 of the field with every no-data pixel infilled, as the service writes it (an
  unchanged field gives its original bytes back, which costs nothing worth timing);
* ``wradlib``: ``wradlib.io.read_radolan_composite`` of the same file (tar members, which
  wradlib cannot open, are unpacked with the stdlib first and that time is included); for
  ODIM-HDF5 its ``radolan`` xarray engine, values loaded.

The ratios ``decode/floor``, ``encode/floor``, ``decode/wradlib`` and ``encode/wradlib`` come
from the times of the same run.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from radinfill.radolan import Field, dumps, read, sniff
from radinfill.radolan.hdf5 import DATA_PATH

DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "radolan"
_SHOWCASE = "wradlib-data/showcase/raa01-{}_10000-14081{}-dwd---bin.gz"
#: One representative per family: (family, path relative to the sample directory).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("RW", "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"),
    ("RY", "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin"),
    ("RX", "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach"),
    ("EX", "meteo-ubonn-radolan/data/raa01-ex_10000-0903241000-dwd---bin"),
    ("YW", "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin"),
    ("FZ", "radolan-guide/misc/FZ1607041020_000_MF002"),
    ("SF", "com.bitplan.radolan/src/test/data/history/raa01-sf_10000-1805301650-dwd---bin.gz"),
    ("RV", "brightsky/tests/data/DE1200_RV2305081330.tar.bz2"),
    ("RE", "wradlib-data/radvor/RE2210180700_000.gz"),
    ("RQ", "wradlib-data/radvor/RQ2210180700_060.gz"),
    *((p.upper(), _SHOWCASE.format(p, "02050")) for p in ("wx", "rz", "rh", "rb", "rl", "ru")),
    *((p.upper(), _SHOWCASE.format(p, "02050")) for p in ("sh", "sq", "ey", "ez", "eh", "eb")),
    ("EW", _SHOWCASE.format("ew", "02050")),
    ("W1", _SHOWCASE.format("w1", "10550")),
    ("W2", _SHOWCASE.format("w2", "10550")),
    ("RW ODIM", "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"),
    ("RV ODIM", "brightsky/tests/data/composite_rv_20250923_0855.tar"),
)
_COLUMNS = ("family", "file", "bytes", "floor ms", "decode ms", "encode ms", "wradlib ms")
_RATIOS = ("decode/floor", "encode/floor", "decode/wradlib", "encode/wradlib")


def best_of(action: Callable[[], object], repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls of ``action``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def unpacked(data: bytes) -> list[bytes]:
    """The raw products inside ``data`` after gzip / bz2 / tar layers (stdlib only)."""
    kind = sniff(data)
    if kind == "gzip":
        return unpacked(gzip.decompress(data))
    if kind == "bz2":
        return unpacked(bz2.decompress(data))
    if kind == "tar":
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            files = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
            return [b for m in files for b in unpacked(archive.extractfile(m).read())]  # type: ignore[union-attr]
    return [data]


def floor(path: Path) -> list[object]:
    """The least any reader does: the file's bytes unpacked, ODIM-HDF5 codes read by h5py."""
    return [_stored(b) if sniff(b) == "hdf5" else b for b in unpacked(path.read_bytes())]


def _stored(data: bytes) -> np.ndarray:
    with h5py.File(io.BytesIO(data), "r") as h5:
        return h5[DATA_PATH][()]


def _odim_wradlib(data: bytes) -> np.ndarray:
    import xarray as xr

    with xr.open_dataset(io.BytesIO(data), engine="radolan") as dataset:
        return dataset["ACRR"].values


def wradlib_reader(path: Path) -> Callable[[], object]:
    """A call that reads ``path`` with wradlib as a user would (by path where it can): its
    RADOLAN binary reader, or its ``radolan`` xarray engine for ODIM-HDF5."""
    from wradlib.io import read_radolan_composite

    data = path.read_bytes()
    stream = {"gzip": gzip.decompress, "bz2": bz2.decompress}.get(sniff(data), bytes)(data)
    if sniff(stream) == "hdf5":
        return lambda: _odim_wradlib(path.read_bytes())
    if sniff(stream) != "tar":  # wradlib opens plain, .gz and .bz2 files itself
        return lambda: read_radolan_composite(str(path))
    # tar members, which wradlib cannot open, are unpacked with the stdlib first
    odim = sniff(unpacked(stream)[0]) == "hdf5"
    member = _odim_wradlib if odim else (lambda b: read_radolan_composite(io.BytesIO(b)))
    return lambda: [member(b) for b in unpacked(path.read_bytes())]


def _as_written(field: Field) -> Field:
    """What the service encodes: ODIM fields with every no-data pixel infilled (1 mm), since
    an unchanged ODIM field is its original file; binary fields as read."""
    if not field.original:
        return field
    values = np.where(field.nodata, np.float32(1.0), field.values)
    return field.replace(values=values, nodata=np.zeros_like(field.nodata))


def measure(path: Path, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds of floor, decode, encode and wradlib for one file."""
    fields = [_as_written(f) for f in read(path)]
    return {
        "floor": best_of(lambda: floor(path), repeat),
        "decode": best_of(lambda: read(path), repeat),
        "encode": best_of(lambda: [dumps(f) for f in fields], repeat),
        "wradlib": best_of(wradlib_reader(path), repeat),
    }


def table(samples: Path, repeat: int) -> list[tuple[str, ...]]:
    """One formatted row per family (times in milliseconds, ratios of decode time)."""
    rows = []
    for family, name in FAMILIES:
        path = samples / name
        t = measure(path, repeat)
        rows.append(
            (
                family,
                path.name[:44],
                str(path.stat().st_size),
                *(f"{1e3 * t[k]:.2f}" for k in ("floor", "decode", "encode", "wradlib")),
                *(f"{t[a] / t[b]:.2f}" for a, b in (r.split("/") for r in _RATIOS)),
            )
        )
    return rows


def render(rows: list[tuple[str, ...]]) -> str:
    """A Markdown table of ``rows`` under the benchmark's column headers."""
    header = (*_COLUMNS, *_RATIOS)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in lines
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(os.environ.get("RADINFILL_SAMPLES", DEFAULT_SAMPLES))
    parser.add_argument("--samples", type=Path, default=default, help="sample directory")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (best is kept)")
    args = parser.parse_args(argv)
    if not args.samples.is_dir():
        parser.error(f"sample directory {args.samples} not found")
    start = time.perf_counter()
    print(render(table(args.samples, max(1, args.repeat))))
    print(f"\nbest of {args.repeat}; total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
