"""Read DWD ODIM-HDF5 composites (RW, RV on the DE1200 WGS84 grid) into a :class:`Field`.

ODIM stores rows north first; they are flipped so that row 0 is south, like the binary
products. ``nodata`` becomes NaN with the no-data flag set, ``undetect`` becomes 0. The
header is synthesised from the ODIM attributes (``MS`` from ``how/nodes``, ``INT`` from
the dataset start/end, ``VV`` from the end time minus the nominal time); it has no raw
bytes, so such a field cannot be re-encoded as RADOLAN binary.
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import numpy as np

from radinfill.radolan.codec import Field
from radinfill.radolan.errors import RadolanError
from radinfill.radolan.grids import grid_for
from radinfill.radolan.header import Header

_CORNER_TOLERANCE_DEG = 1e-4
#: Widest stored number read (bytes per pixel): ODIM data are 8- to 64-bit integers or floats.
#: Checked before the data are read, so a file whose type claims kilobytes per pixel cannot
#: make the reader allocate that many times the grid.
_MAX_ITEMSIZE = 8


def decode(data: bytes, *, source: str = "<bytes>") -> Field:
    """Decode ODIM-HDF5 bytes; every failure is a :class:`RadolanError`."""
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            return _decode(h5, source)
    except RadolanError as err:
        raise err if err.source != "<bytes>" else err.with_source(source) from None
    except Exception as err:  # h5py raises many kinds (OSError, KeyError, TypeError, ...)
        # HDF5's own diagnosis when the file is shorter than its superblock says
        cut = "truncated file" in str(err)
        raise RadolanError(
            f"unreadable ODIM-HDF5: {type(err).__name__}: {err}",
            source=source,
            kind="truncated" if cut else "corrupt",
        ) from None


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _time(date: object, time: object) -> datetime:
    return datetime.strptime(_text(date) + _text(time)[:6], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _decode(h5, source: str) -> Field:
    if not _text(h5.attrs.get("Conventions", "")).startswith("ODIM_H5"):
        raise RadolanError("HDF5 file is not ODIM_H5", source=source, kind="unsupported")
    where, what = h5["where"].attrs, h5["what"].attrs
    rows, cols = int(where["ysize"]), int(where["xsize"])
    grid = grid_for(rows, cols, "wgs84")
    dataset = h5["dataset1/data1/data"]
    if dataset.shape != (rows, cols):
        raise RadolanError(
            f"data shape {dataset.shape} does not match {rows}x{cols}",
            source=source,
            kind="wrong_grid",
        )
    if dataset.dtype.kind not in "uif" or dataset.dtype.itemsize > _MAX_ITEMSIZE:
        raise RadolanError(
            f"data of type {dataset.dtype} are not numbers of at most {_MAX_ITEMSIZE} bytes",
            source=source,
            kind="unsupported",
        )
    _check_corners(where, grid, source)
    scaling = h5["dataset1/data1/what"].attrs
    # Scalars (an array attribute would broadcast the comparisons beyond the grid).
    gain, offset = float(scaling["gain"]), float(scaling["offset"])
    nodata_code, undetect_code = float(scaling["nodata"]), float(scaling["undetect"])
    if not (math.isfinite(gain) and math.isfinite(offset)):
        raise RadolanError(f"scaling gain {gain} or offset {offset} is not finite", source=source)
    stored = np.asarray(dataset[()])[::-1]
    nodata = stored == nodata_code
    undetect = stored == undetect_code
    values = (stored * gain + offset).astype(np.float32)
    values[undetect] = 0.0
    values[nodata] = np.nan
    meta = h5["dataset1/what"].attrs
    nominal = _time(what["date"], what["time"])
    start, end = (
        _time(meta["startdate"], meta["starttime"]),
        _time(meta["enddate"], meta["endtime"]),
    )
    product = _text(meta["prodname"]).split("_")[0].upper()
    sites = tuple(
        s.strip("' ").removeprefix("de") for s in _text(h5["how"].attrs.get("nodes", "")).split(",")
    )
    tokens = {
        "GP": (rows, cols),
        "VS": 5,
        "PR": round(math.log10(gain)) if gain > 0 else 0,
        "INT": int((end - start).total_seconds() // 60),
        "VV": int((end - nominal).total_seconds() // 60),
        "SW": _text(h5["how"].attrs.get("sw_version", "")),
        "MS": tuple(s for s in sites if s),
    }
    header = Header(raw=b"", product=product, time=nominal, wmo="10000", tokens=tokens)
    zeros = np.zeros((rows, cols), dtype=bool)
    return Field(product, nominal, values, nodata, zeros, zeros.copy(), header, grid, source)


def _check_corners(where, grid, source: str) -> None:
    """Refuse a file whose stated corners do not match the DE1200 grid we would assign."""
    corners = grid.corners()
    for key in ("LL", "UR"):
        lon, lat = float(where[f"{key}_lon"]), float(where[f"{key}_lat"])
        ref_lon, ref_lat = corners[key]
        if abs(lon - ref_lon) > _CORNER_TOLERANCE_DEG or abs(lat - ref_lat) > _CORNER_TOLERANCE_DEG:
            raise RadolanError(
                f"corner {key} ({lon:.5f}, {lat:.5f}) does not match grid {grid.name} "
                f"({ref_lon:.5f}, {ref_lat:.5f})",
                source=source,
                kind="wrong_grid",
            )
