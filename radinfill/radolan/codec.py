"""Decode RADOLAN binary products into :class:`Field` and encode them back, byte for byte.

Two-byte products store a little-endian word per pixel: bits 0-11 the value in units of
10**PR, 0x1000 "secondary" (mostly gauge-only pixels), 0x2000 no-data, 0x4000 negative,
0x8000 clutter. RVP6 products (RX, WX, EX) store one byte: dBZ = raw / 2 - 32.5, 250 = no-data,
249 = clutter. The header is kept verbatim; re-encoding an unmodified field writes the same
bytes (no-data pixels as the canonical word 0x29C4 plus their flag bits, as DWD writes them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from radinfill.radolan import header as _header
from radinfill.radolan.errors import RadolanError
from radinfill.radolan.grids import Grid, grid_for
from radinfill.radolan.products import ProductInfo, info

_VALUE_BITS = 0x0FFF
_SECONDARY = 0x1000
_NODATA = 0x2000
_NEGATIVE = 0x4000
_CLUTTER = 0x8000
_NODATA_WORD = _NODATA | 2500
_RVP6_NODATA = 250
_RVP6_CLUTTER = 249
_MAX_COUNT = 4095


@dataclass(frozen=True, eq=False)
class Field:
    """One decoded product.

    Attributes
    ----------
    product
        Product id, e.g. ``"RW"``.
    time
        Nominal time, timezone-aware UTC, end of the interval.
    values
        float32 (rows, cols) in the product's unit per interval (mm for amounts, dBZ for
        RVP6); NaN where no-data (and RVP6 clutter). Row 0 is the southernmost row.
    nodata, clutter, secondary
        bool (rows, cols) flag planes as stored.
    header
        The parsed header (a mapping of tokens, see :class:`~radinfill.radolan.header.Header`).
    grid
        The product's :class:`~radinfill.radolan.grids.Grid`.
    source
        Where the bytes came from (path, archive member), for error messages and provenance.
    undetect
        ODIM-HDF5 only: bool (rows, cols), pixels stored as ``undetect`` (no echo; their value
        is 0, not NaN). Kept apart from ``nodata`` so that a reader can tell "measured, dry"
        from "not measured"; ``None`` for binary products, which have no such code.
    original
        ODIM-HDF5 only: the bytes of the file the field was decoded from. The ODIM writer
        mirrors them (groups, attributes, storage layout, the exact codes of unchanged
        pixels); empty for binary products, whose ``header.raw`` holds what encoding needs.
    """

    product: str
    time: datetime
    values: np.ndarray
    nodata: np.ndarray
    clutter: np.ndarray
    secondary: np.ndarray
    header: _header.Header
    grid: Grid
    source: str = "<bytes>"
    undetect: np.ndarray | None = None
    original: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def info(self) -> ProductInfo:
        """Static facts about the product (encoding, unit, CF names)."""
        return info(self.product)

    @property
    def unit(self) -> str:
        """Unit of :attr:`values` (per :attr:`interval` for amounts)."""
        return self.info.unit

    @property
    def interval(self) -> timedelta:
        """Accumulation interval of the product."""
        return self.header.interval

    @property
    def interval_minutes(self) -> int:
        """:attr:`interval` in whole minutes (5 for RY, 60 for RW, 1440 for SF)."""
        return int(self.interval.total_seconds() // 60)

    def replace(self, **changes: object) -> Field:
        """A copy with some attributes replaced (e.g. infilled ``values`` and ``nodata``)."""
        return dataclasses.replace(self, **changes)


def decode(data: bytes, *, source: str = "<bytes>") -> Field:
    """Decode one RADOLAN product (binary, or ODIM-HDF5 by its magic bytes).

    Raises
    ------
    RadolanError
        For any input that is not a complete, consistent product; no other exception
        escapes, and nothing is allocated beyond the size of ``data`` itself.
    """
    data = bytes(data)
    if data.startswith(b"\x89HDF\r\n\x1a\n"):
        from radinfill.radolan import hdf5

        return hdf5.decode(data, source=source)
    raw, payload = _header.split(data, source)
    hdr = _header.parse(raw, source)
    if "BY" not in hdr:
        raise RadolanError("garbled header: no BY (product length) token", source=source)
    if hdr.size != len(data):
        short = len(data) < hdr.size
        raise RadolanError(
            f"{'truncated' if short else 'over-long'}: {len(data)} bytes but header BY says "
            f"{hdr.size}",
            source=source,
            offset=len(data),
            kind="truncated" if short else "oversized",
        )
    try:
        product = info(hdr.product)
        if product.encoding == "rle":
            raise RadolanError(
                f"run-length encoded picture product {hdr.product} is not supported",
                kind="unsupported",
            )
        rows, cols = hdr.shape
        grid = grid_for(rows, cols, "wgs84" if hdr.version >= 5 else "sphere")
    except RadolanError as err:
        raise err.with_source(source) from None
    width = 1 if product.encoding == "rvp6" else 2
    if len(payload) != rows * cols * width:
        raise RadolanError(
            f"payload of {len(payload)} bytes does not match grid {rows}x{cols} x {width} byte(s)",
            source=source,
            offset=len(raw),
            kind="wrong_grid",
        )
    planes = (
        _decode_rvp6(payload, rows, cols)
        if width == 1
        else _decode_words(payload, rows, cols, hdr.precision)
    )
    return Field(hdr.product, hdr.time, *planes, header=hdr, grid=grid, source=source)


def _decode_words(payload: bytes, rows: int, cols: int, precision: float):
    words = np.frombuffer(payload, dtype="<u2").reshape(rows, cols)
    values = ((words & _VALUE_BITS) * precision).astype(np.float32)
    np.negative(values, out=values, where=(words & _NEGATIVE) != 0)
    nodata = (words & _NODATA) != 0
    values[nodata] = np.nan
    return values, nodata, (words & _CLUTTER) != 0, (words & _SECONDARY) != 0


def _decode_rvp6(payload: bytes, rows: int, cols: int):
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(rows, cols)
    values = (raw * np.float32(0.5) - np.float32(32.5)).astype(np.float32)
    nodata = raw == _RVP6_NODATA
    clutter = raw == _RVP6_CLUTTER
    values[nodata | clutter] = np.nan
    return values, nodata, clutter, np.zeros_like(nodata)


def encode(field: Field) -> bytes:
    """Encode a field with its original header into RADOLAN binary bytes.

    Pixels whose value is NaN are written as no-data even if their ``nodata`` flag is clear.
    Values are rounded to the product precision and saturate at 4095 counts, as DWD's own
    accumulations do; RVP6 values that would collide with the flag codes 249/250 become 248.
    """
    hdr = field.header
    if not hdr.raw:
        raise RadolanError(
            "field has no RADOLAN binary header to encode with",
            source=field.source,
            kind="unsupported",
        )
    if field.values.shape != hdr.shape or field.values.shape != field.grid.shape:
        raise RadolanError(
            f"values of shape {field.values.shape} do not match the header grid {hdr.shape}",
            source=field.source,
            kind="wrong_grid",
        )
    values = np.asarray(field.values, dtype=np.float64)
    nodata = np.asarray(field.nodata, dtype=bool) | np.isnan(values)
    if info(field.product).encoding == "rvp6":
        payload = _encode_rvp6(values, nodata, np.asarray(field.clutter, dtype=bool))
    else:
        payload = _encode_words(values, nodata, field, hdr.precision)
    return hdr.raw + payload


def _encode_words(values: np.ndarray, nodata: np.ndarray, field: Field, precision: float) -> bytes:
    counts = np.rint(np.abs(np.where(nodata, 0.0, values)) / precision)
    words = np.clip(counts, 0, _MAX_COUNT).astype(np.uint16)
    words[np.signbit(values) & ~nodata] |= _NEGATIVE
    words[nodata] = _NODATA_WORD
    words[np.asarray(field.secondary, dtype=bool)] |= _SECONDARY
    words[np.asarray(field.clutter, dtype=bool)] |= _CLUTTER
    return words.astype("<u2").tobytes()


def _encode_rvp6(values: np.ndarray, nodata: np.ndarray, clutter: np.ndarray) -> bytes:
    raw = np.clip(np.rint((np.where(nodata, 0.0, values) + 32.5) * 2.0), 0, 255).astype(np.uint8)
    raw[(raw == _RVP6_CLUTTER) | (raw == _RVP6_NODATA)] = _RVP6_CLUTTER - 1
    raw[clutter] = _RVP6_CLUTTER
    raw[nodata & ~clutter] = _RVP6_NODATA
    return raw.tobytes()
