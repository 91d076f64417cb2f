"""Read DWD ODIM-HDF5 composites (RW, RV on the DE1200 WGS84 grid) into a :class:`Field`, and
write an infilled field back as ODIM-HDF5 that mirrors the file it came from.

ODIM stores rows north first; they are flipped so that row 0 is south, like the binary
products. ``nodata`` becomes NaN with the no-data flag set; ``undetect`` (measured, no echo)
becomes 0 with the field's ``undetect`` plane set, so the two stay apart. The header is
synthesised from the ODIM attributes (``MS`` from ``how/nodes`` less ``how/missing_nodes``,
``INT`` from the dataset start/end, ``VV`` from the end time minus the nominal time); it has no
raw bytes, so such a field cannot be re-encoded as RADOLAN binary. The file's bytes are kept as
``Field.original``: :func:`encode` writes into a copy of them, so every group, attribute,
dtype, chunk layout and compression filter of DWD's file survives, and an unmodified field
gives back the very same bytes.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from radinfill.radolan.codec import Field
from radinfill.radolan.errors import RadolanError
from radinfill.radolan.grids import Grid, grid_for
from radinfill.radolan.header import Header

_CORNER_TOLERANCE_DEG = 1e-4
#: Widest stored number read (bytes per pixel): ODIM data are 8- to 64-bit integers or floats.
#: Checked before the data are read, so a file whose type claims kilobytes per pixel cannot
#: make the reader allocate that many times the grid.
_MAX_ITEMSIZE = 8
#: The measured quantity of a DWD composite (the first dataset's first data group).
DATA_PATH = "dataset1/data1/data"
#: Stored value of :func:`encode`'s quality field on infilled pixels (0 on all others).
INFILLED = 1
#: ``what`` of the quality field: the flag is stored as is; 255 and 254 never occur, because
#: every pixel is either infilled or not (no missing or undetected state).
QUALITY_WHAT = {"gain": 1.0, "offset": 0.0, "nodata": 255.0, "undetect": 254.0}


@dataclass(frozen=True)
class _Stored:
    """The measured quantity of an ODIM file as stored, and how to read it.

    Attributes
    ----------
    codes
        (rows, cols) stored numbers, north first, in the file's dtype.
    gain, offset
        Physical value = code x gain + offset (product unit, e.g. mm per interval).
    nodata, undetect
        The codes of "not measured" and "measured, no echo".
    """

    codes: np.ndarray
    gain: float
    offset: float
    nodata: float
    undetect: float

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values float32 with NaN at no-data and 0 at undetect, nodata, undetect), north first."""
        nodata = self.codes == self.nodata
        undetect = (self.codes == self.undetect) & ~nodata
        values = (self.codes * self.gain + self.offset).astype(np.float32)
        values[undetect] = 0.0
        values[nodata] = np.nan
        return values, nodata, undetect

    def quantize(self, values: np.ndarray, nodata: np.ndarray) -> np.ndarray:
        """Codes of ``values`` (product unit) in the stored dtype: round((value - offset) / gain).

        Integer codes saturate at the ends of the type; a value whose code would be the no-data
        code is moved one code away from it, so that a measured value never reads back as
        missing (DWD's no-data is the type's largest code: such values are far beyond any
        rain amount). ``nodata`` pixels get the no-data code.
        """
        dtype = self.codes.dtype
        counts = (np.asarray(values, dtype=np.float64) - self.offset) / self.gain
        if dtype.kind in "ui":
            bounds = np.iinfo(dtype)
            counts = np.clip(np.rint(np.nan_to_num(counts)), bounds.min, bounds.max)
            counts[counts == self.nodata] += -1 if self.nodata > bounds.min else 1
        codes = counts.astype(dtype)
        codes[nodata] = self.nodata
        return codes


@dataclass(frozen=True)
class Layout:
    """How DWD writes a product as ODIM-HDF5 (as in its files of 2025), for :func:`build`.

    Attributes
    ----------
    prodname, product
        ``dataset1/what/prodname`` and ``product`` (the ODIM product type).
    camethod
        ``dataset1/how/camethod``, the compositing method (readers such as wradlib need it).
    dtype
        numpy dtype of the stored codes.
    gain, offset, nodata, undetect
        ``dataset1/data1/what``: value = code x gain + offset (mm per interval).
    interval_minutes
        Accumulation interval: ``dataset1/what`` start to end.
    level
        gzip level of the data (one chunk of the whole grid).
    name
        DWD's file name, formatted with ``time`` (nominal, UTC) and ``lead`` (minutes).
    """

    prodname: str
    product: str
    camethod: str
    dtype: str
    gain: float
    offset: float
    nodata: float
    undetect: float
    interval_minutes: int
    level: int
    name: str


#: The ODIM products :func:`build` writes: hourly RW (``raa01-rw_10000-...-dwd---bin.hdf5``) and
#: the 5-minute RV analysis/nowcast (the members of ``composite_rv_YYYYMMDD_HHMM.tar``).
LAYOUTS = {
    "RW": Layout(
        "RW", "COMP", "RGA: STANDARD ADJUSTMENT WITH GAUGES", "u2", 0.1, 0.0, 65535.0, 0.0, 60, 4,
        "raa01-rw_10000-{time:%y%m%d%H%M}-dwd---bin.hdf5",
    ),
    "RV": Layout(
        "RV_top_view", "MAX", "DOMAIN", "u4", 0.001, -0.001, 4294967295.0, 0.0, 5, 6,
        "composite_rv_{time:%Y%m%d_%H%M}_{lead:03d}-hd5",
    ),
}  # fmt: skip


def build(
    product: str,
    time: datetime,
    values: np.ndarray,
    nodata: np.ndarray,
    sites: Sequence[str],
    *,
    lead_minutes: int = 0,
) -> bytes:
    """A new ODIM-HDF5 composite in DWD's layout (synthetic products, tests).

    Groups and attributes are those of DWD's files (``what``, ``where`` with the corners and the
    ``projdef`` whose origin is the centre of the north-west pixel, ``how/nodes``,
    ``dataset1/what`` with the interval, ``dataset1/data1/what`` with the scaling); ``how``
    names radinfill as the software, and ``what/source`` does not claim to be DWD.

    Parameters
    ----------
    product
        A key of :data:`LAYOUTS`.
    time
        Nominal time (end of the analysis interval), UTC.
    values
        float (rows, cols), row 0 south, mm per interval: DE1200 or a centred crop of it.
        Stored as round((value - offset) / gain); 0 as ``undetect`` (no echo), as DWD does.
    nodata
        bool (rows, cols): pixels stored as ``nodata`` (NaN values are no-data too).
    sites
        Radar ids of ``how/nodes`` (``asb`` ...), in the order to list them.
    lead_minutes
        Forecast lead: the interval ends this long after ``time``.

    Raises
    ------
    ValueError
        For a product without a layout.
    """
    import h5py

    from radinfill import code_version

    if product not in LAYOUTS:
        raise ValueError(f"no ODIM layout for product {product!r}; known: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[product]
    grid = grid_for(*np.shape(values), "wgs84")
    missing = (np.asarray(nodata, dtype=bool) | np.isnan(values))[::-1]
    north = np.asarray(values, dtype=np.float64)[::-1]
    scaling = _Stored(
        np.zeros(grid.shape, dtype=layout.dtype),
        layout.gain,
        layout.offset,
        layout.nodata,
        layout.undetect,
    )
    codes = scaling.quantize(north, missing)
    codes[(north == 0) & ~missing] = layout.undetect
    nominal = time.astimezone(UTC)
    end = nominal + timedelta(minutes=lead_minutes)
    start = end - timedelta(minutes=layout.interval_minutes)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["Conventions"] = np.bytes_(b"ODIM_H5/V2_3")
        _attrs(h5.create_group("what"), {
            "date": f"{nominal:%Y%m%d}", "time": f"{nominal:%H%M%S}", "object": "COMP",
            "source": "ORG:78,CTY:616,CMT:radinfill synthetic", "version": "H5rad 2.3",
        })  # fmt: skip
        _attrs(h5.create_group("where"), _where(grid))
        _attrs(h5.create_group("how"), {
            "nodes": ",".join(f"'de{site}'" for site in sites),
            "software": "radinfill", "sw_version": code_version(),
        })  # fmt: skip
        _attrs(h5.create_group("dataset1/what"), {
            "product": layout.product, "prodname": layout.prodname,
            "startdate": f"{start:%Y%m%d}", "starttime": f"{start:%H%M%S}",
            "enddate": f"{end:%Y%m%d}", "endtime": f"{end:%H%M%S}",
        })  # fmt: skip
        _attrs(h5.create_group("dataset1/how"), {"camethod": layout.camethod})
        _attrs(h5.create_group("dataset1/data1/what"), {
            "quantity": "ACRR", "gain": layout.gain, "offset": layout.offset,
            "nodata": layout.nodata, "undetect": layout.undetect,
        })  # fmt: skip
        h5.create_dataset(
            DATA_PATH, data=codes, chunks=grid.shape, compression="gzip",
            compression_opts=layout.level,
        )  # fmt: skip
    return buffer.getvalue()


def _where(grid: Grid) -> dict[str, object]:
    """``where`` of a composite on ``grid``: corners, sizes, and DWD's ``projdef``, whose false
    origin is the centre of the north-west pixel."""
    corners = {
        f"{key}_{axis}": value
        for key, (lon, lat) in grid.corners().items()
        for axis, value in (("lon", lon), ("lat", lat))
    }
    x_0 = -(grid.x0 + grid.resolution / 2)
    y_0 = -(grid.y0 + (grid.rows - 0.5) * grid.resolution)
    projdef = (
        "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +a=6378137 +b=6356752.3142451802 +no_defs "
        f"+x_0={x_0:.8f} +y_0={y_0:.8f} +units=m"
    )
    return {
        **corners,
        "projdef": projdef,
        "xscale": float(grid.resolution),
        "yscale": float(grid.resolution),
        "xsize": np.uint64(grid.cols),
        "ysize": np.uint64(grid.rows),
    }


def _attrs(group, values: dict[str, object]) -> None:
    """Set attributes as DWD types them: text as fixed-length ASCII, numbers as float64."""
    for key, value in values.items():
        if isinstance(value, str):
            group.attrs[key] = np.bytes_(value.encode("ascii"))
        elif isinstance(value, float):
            group.attrs[key] = np.float64(value)
        else:
            group.attrs[key] = value


def decode(data: bytes, *, source: str = "<bytes>") -> Field:
    """Decode ODIM-HDF5 bytes; every failure is a :class:`RadolanError`."""
    import h5py

    with _translated(source), h5py.File(io.BytesIO(data), "r") as h5:
        stored, grid = _read_stored(h5, source)
        values, nodata, undetect = stored.planes()
        header = _header(h5, stored, grid)
    clear = np.zeros(grid.shape, dtype=bool)
    return Field(
        header.product,
        header.time,
        values[::-1],
        nodata[::-1],
        clear,
        clear.copy(),
        header,
        grid,
        source,
        undetect=undetect[::-1],
        original=bytes(data),
    )


def encode(field: Field) -> bytes:
    """ODIM-HDF5 bytes of ``field``: its original file with the changed pixels rewritten and a
    quality field that marks the infilled ones.

    Every group, attribute, dataset, dtype, chunk layout and compression filter of
    ``field.original`` is kept. Pixels whose no-data state changed, or whose value moved by half
    a quantisation step (``gain / 2``) or more from the original's, are stored as
    round((value - offset) / gain) in the product's dtype (no-data and NaN as the ``nodata``
    code); all others keep their exact original codes, ``undetect`` included, so that float
    noise from a model that passes measured pixels through cannot alter them. When
    any pixel changed, ``dataset1/qualityN`` (the next free N) is added: ``how/task`` =
    ``"radinfill <version>"``, ``what`` = :data:`QUALITY_WHAT`, ``data`` uint8 (north first, the
    data's chunks and compression) = :data:`INFILLED` on *infilled* pixels (no-data in the
    original, a value now), 0 elsewhere. An unmodified field gives ``field.original`` itself.

    Raises
    ------
    RadolanError
        ``unsupported`` if the field was not read from ODIM-HDF5 (no ``original``),
        ``wrong_grid`` if its values do not match the original's grid, and the reader's kinds
        if ``original`` is not a readable ODIM file.
    """
    import h5py

    if not field.original:
        raise RadolanError(
            "field has no ODIM-HDF5 original to mirror", source=field.source, kind="unsupported"
        )
    with _translated(field.source), h5py.File(io.BytesIO(field.original), "r") as h5:
        stored, _ = _read_stored(h5, field.source)
    if field.values.shape != stored.codes.shape:
        raise RadolanError(
            f"values of shape {field.values.shape} do not match the ODIM grid {stored.codes.shape}",
            source=field.source,
            kind="wrong_grid",
        )
    before, was_nodata, _ = stored.planes()
    after = np.asarray(field.values, dtype=np.float64)[::-1]
    now_nodata = (np.asarray(field.nodata, dtype=bool) | np.isnan(field.values))[::-1]
    moved = ~(np.abs(after - before) < abs(stored.gain) / 2)  # NaN before: moved
    changed = (now_nodata != was_nodata) | (~now_nodata & moved)
    if not changed.any():
        return field.original
    codes = stored.codes.copy()
    codes[changed] = stored.quantize(after[changed], now_nodata[changed])
    with _translated(field.source):
        return _rewrite(field.original, codes, was_nodata & ~now_nodata)


def _rewrite(original: bytes, codes: np.ndarray, infilled: np.ndarray) -> bytes:
    """A copy of ``original`` with ``codes`` stored as its data and the infill quality field."""
    import h5py

    from radinfill import code_version

    buffer = io.BytesIO(original)
    with h5py.File(buffer, "r+") as h5:
        data = h5[DATA_PATH]
        data[...] = codes
        dataset = h5["dataset1"]
        number = 1 + sum(1 for name in dataset if name.startswith("quality"))
        quality = dataset.create_group(f"quality{number}")
        for key, value in QUALITY_WHAT.items():
            quality.require_group("what").attrs[key] = np.float64(value)
        quality.require_group("how").attrs["task"] = np.bytes_(f"radinfill {code_version()}")
        quality.create_dataset(
            "data",
            data=np.where(infilled, INFILLED, 0).astype(np.uint8),
            chunks=data.chunks,
            compression=data.compression,
            compression_opts=data.compression_opts,
            shuffle=data.shuffle,
            fletcher32=data.fletcher32,
        )
    return buffer.getvalue()


@contextlib.contextmanager
def _translated(source: str) -> Iterator[None]:
    """Turn whatever h5py raises (OSError, KeyError, TypeError, ...) into a RadolanError."""
    try:
        yield
    except RadolanError as err:
        raise err if err.source != "<bytes>" else err.with_source(source) from None
    except Exception as err:
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


def _read_stored(h5, source: str) -> tuple[_Stored, Grid]:
    """The checked measured quantity of an open ODIM file, and its grid.

    Raises
    ------
    RadolanError
        ``unsupported`` for a file that is not ODIM_H5 or stores no numbers of at most
        8 bytes, ``wrong_grid`` if the data or corners do not match the DE1200 grid (or
        another RADOLAN grid of that size), ``corrupt`` for non-finite or zero scaling and
        for no-data or undetect codes the data type cannot hold.
    """
    if not _text(h5.attrs.get("Conventions", "")).startswith("ODIM_H5"):
        raise RadolanError("HDF5 file is not ODIM_H5", source=source, kind="unsupported")
    where = h5["where"].attrs
    rows, cols = int(where["ysize"]), int(where["xsize"])
    grid = grid_for(rows, cols, "wgs84")
    dataset = h5[DATA_PATH]
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
    if not (math.isfinite(gain) and math.isfinite(offset)) or gain == 0:
        raise RadolanError(f"scaling gain {gain} or offset {offset} is not usable", source=source)
    nodata, undetect = float(scaling["nodata"]), float(scaling["undetect"])
    for name, code in (("nodata", nodata), ("undetect", undetect)):
        if not _holds(dataset.dtype, code):
            raise RadolanError(
                f"{name} code {code} is no value of the data type {dataset.dtype}", source=source
            )
    codes = np.asarray(dataset[()])
    return _Stored(codes, gain, offset, nodata, undetect), grid


def _holds(dtype: np.dtype, code: float) -> bool:
    """Whether ``dtype`` stores ``code`` exactly: a flag code the data cannot hold would mark
    no pixel when read and could not be written."""
    if dtype.kind == "f":
        return True
    bounds = np.iinfo(dtype)
    return code.is_integer() and bounds.min <= code <= bounds.max


def _sites(how) -> tuple[str, ...]:
    """Radar ids (``asb`` ...) of ``how/nodes`` (``'deasb','deboo',...``) less ``missing_nodes``."""

    def ids(key: str) -> list[str]:
        names = (s.strip("' ").removeprefix("de") for s in _text(how.get(key, "")).split(","))
        return [name for name in names if name]

    missing = set(ids("missing_nodes"))
    return tuple(site for site in ids("nodes") if site not in missing)


def _header(h5, stored: _Stored, grid: Grid) -> Header:
    """A RADOLAN-like header of the ODIM attributes, so that code reading tokens works on both."""
    what, meta = h5["what"].attrs, h5["dataset1/what"].attrs
    nominal = _time(what["date"], what["time"])
    start, end = (
        _time(meta["startdate"], meta["starttime"]),
        _time(meta["enddate"], meta["endtime"]),
    )
    product = _text(meta["prodname"]).split("_")[0].upper()
    tokens = {
        "GP": grid.shape,
        "VS": 5,
        "PR": round(math.log10(abs(stored.gain))),
        "INT": int((end - start).total_seconds() // 60),
        "VV": int((end - nominal).total_seconds() // 60),
        "SW": _text(h5["how"].attrs.get("sw_version", "")),
        "MS": _sites(h5["how"].attrs),
    }
    return Header(raw=b"", product=product, time=nominal, wmo="10000", tokens=tokens)


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
