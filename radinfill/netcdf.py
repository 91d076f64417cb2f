"""Write RADOLAN datasets as compressed CF-netCDF4, atomically, with the infill mask.

The file is what downstream tools (pysteps, xarray, CDO, QGIS) read: the layout of
:func:`radinfill.dataset.to_dataset`, float32 values with NaN as ``_FillValue`` (so values
round-trip bit for bit), zlib level 1 with byte shuffle (:data:`COMPRESSION`), one chunk per
time step (a reader of one time step decompresses exactly one chunk). Infilled output
additionally carries the ``infill_mask`` variable and provenance global attributes (model
release, checksum, input files, output version). The file appears under its final name only
when complete.

The 2-D ``lat``/``lon`` that CF asks for are the same in every file on one grid, and deflating
them was most of a file's cost (0.085 of 0.110 s on 1100 x 900). Their compressed chunks are
therefore taken from the first file built on a grid and, for later files with the same
coordinates (by content), written straight into place (HDF5 direct chunk write) over
placeholders: the same bytes under the same filters, so readers see the same file.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np
import xarray as xr

from radinfill import atomic, fingerprint
from radinfill.dataset import flag_attrs

INFILL_MASK = "infill_mask"
#: Time encoding: whole minutes since the epoch, UTC (RADOLAN times are whole minutes).
TIME_UNITS = "minutes since 1970-01-01 00:00:00+00:00"
#: Compression of every gridded variable. Level 1, not 4: on a 1100 x 900 RY product (values,
#: flags, infill mask, the 2-D lat/lon, which take most of the time and bytes) it builds in
#: 0.108 s instead of 0.148 s for a file of 3.08 MB instead of 2.82 MB (+9 %); the service
#: writes one per product, and the backfill one per archive field.
COMPRESSION: Mapping[str, Any] = MappingProxyType({"zlib": True, "complevel": 1, "shuffle": True})
#: Variables whose compressed chunk is reused between files of one grid (module notes).
FIXED = ("lat", "lon")
#: Grids whose chunks are kept (a few MB each).
FIXED_CACHE_SIZE = 4
_CHUNKS: dict[bytes, dict[str, tuple[int, bytes]]] = {}
_LOCK = threading.Lock()
# netCDF attribute names: a letter or underscore, then letters, digits, '_', '.', '-'.
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def write(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    infill_mask: np.ndarray | None = None,
    provenance: Mapping[str, str] | None = None,
    mode: int = atomic.DEFAULT_MODE,
) -> None:
    """Write ``ds`` to ``path`` as CF-netCDF4 (built in memory, then temp file, fsync, rename).

    Parameters
    ----------
    ds
        A dataset laid out by :func:`radinfill.dataset.to_dataset` (dims time, y, x).
    path
        Target file; replaced atomically, and left untouched if anything fails.
    infill_mask
        bool, shape (time, y, x) or (y, x): pixels whose value was infilled. A (y, x) mask
        applies to every time step. Stored as the CF flag variable ``infill_mask``.
    provenance
        Global attributes to add (e.g. model release, checksum, input files, output
        version); they override attributes of ``ds`` with the same name.
    mode
        File mode of the written file.

    Any encoding ``ds`` carries (e.g. from the file it was read from) is replaced by
    :func:`encoding`, so re-writing a reopened file gives the same layout. ``ds`` itself
    is not modified.

    Raises
    ------
    ValueError
        If the mask has the wrong dtype or shape, or a provenance entry is not a valid
        netCDF attribute name with a string value; the message names ``path``.
    """
    out = ds.drop_encoding()
    if infill_mask is not None:
        out[INFILL_MASK] = _infill_variable(out, infill_mask, path)
        for var in out.data_vars.values():
            ancillary = var.attrs.get("ancillary_variables", "").split()
            if ancillary and INFILL_MASK not in ancillary:
                var.attrs["ancillary_variables"] = " ".join([*ancillary, INFILL_MASK])
    if provenance:
        out.attrs |= _checked_provenance(provenance, path)
    atomic.write_bytes(path, encoded(out, path), mode)


def encoded(ds: xr.Dataset, path: str | os.PathLike[str]) -> bytes:
    """The netCDF4 file of ``ds`` (laid out by :func:`encoding`), built in memory.

    netCDF-C never opens a file on disk here: when it fails to write a file (a full disk) it
    also fails to close it, and each failure left the deleted temporary file open for the
    life of the process, so the space it held never came back. The bytes go to disk through
    :func:`radinfill.atomic.write_bytes`, whose plain file handle is closed on any error.
    A product file is a few MB, so holding it in memory costs nothing worth saving. Where the
    latitude and longitude were seen before, their kept chunks are written into the file
    (module notes).

    Raises
    ------
    OSError
        If netCDF-C fails (it says only "NetCDF: HDF error") or the kept chunks cannot be
        written; the message names ``path``.
    """
    key = _fixed_key(ds)
    with _LOCK:
        chunks = _CHUNKS.get(key) if key is not None else None
    if chunks is None:
        data = _built(ds, path)
        if key is not None and (chunks := _read_chunks(data)) is not None:
            with _LOCK:
                _CHUNKS[key] = chunks
                while len(_CHUNKS) > FIXED_CACHE_SIZE:
                    _CHUNKS.pop(next(iter(_CHUNKS)))
        return data
    buffer = io.BytesIO(_built(_with_placeholders(ds), path))
    try:
        with h5py.File(buffer, "r+") as f:
            for name, (mask, chunk) in chunks.items():
                f[name].id.write_direct_chunk((0,) * f[name].ndim, chunk, mask)
    except (OSError, RuntimeError, ValueError) as err:
        raise OSError(f"{path}: netCDF coordinates not written: {err}") from err
    return buffer.getvalue()


def _built(ds: xr.Dataset, path: str | os.PathLike[str]) -> bytes:
    """The netCDF4 file of ``ds`` by netCDF-C (see :func:`encoded`)."""
    try:
        return bytes(ds.to_netcdf(None, engine="netcdf4", format="NETCDF4", encoding=encoding(ds)))
    except RuntimeError as err:
        # An I/O failure like any other to the writer, which then withdraws the set's claim
        # (daemon.outputs).
        raise OSError(f"{path}: netCDF write failed: {err}") from err


def _fixed_key(ds: xr.Dataset) -> bytes | None:
    """A digest of the :data:`FIXED` variables' names, dims, dtypes, shapes and values; None
    when ``ds`` lacks one of them as a 2-D floating-point variable."""
    if not all(
        name in ds.variables and ds[name].ndim == 2 and np.issubdtype(ds[name].dtype, np.floating)
        for name in FIXED
    ):
        return None
    return fingerprint.digest(
        *(part for name in FIXED for part in (name, repr(ds[name].dims), ds[name].values))
    )


def _read_chunks(data: bytes) -> dict[str, tuple[int, bytes]] | None:
    """The filter mask and the compressed bytes of each :data:`FIXED` variable's one chunk in
    the file ``data``; None when one is stored in several chunks."""
    with h5py.File(io.BytesIO(data), "r") as f:
        if any(f[name].chunks != f[name].shape for name in FIXED):
            return None
        return {name: f[name].id.read_direct_chunk((0,) * f[name].ndim) for name in FIXED}


def _with_placeholders(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with NaN in place of the :data:`FIXED` variables' values (same dims, dtype and
    attributes, so the same layout and filters)."""
    fills = {
        name: ds[name].variable.copy(data=np.full(ds[name].shape, np.nan, ds[name].dtype))
        for name in FIXED
    }
    coords = {name: fill for name, fill in fills.items() if name in ds.coords}
    return ds.assign_coords(coords).assign(
        {name: fill for name, fill in fills.items() if name not in coords}
    )


def encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Per-variable netCDF4 encoding: compressed, chunked per time step, exact float32.

    Times become int64 minutes since the epoch (UTC); floats keep their width, gridded ones with
    NaN as ``_FillValue`` (1-D coordinates get none, as CF asks); every array of two or more
    dimensions is zlib-compressed with shuffle, in chunks of one time step.
    """
    result: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        enc: dict[str, Any] = {}
        if np.issubdtype(var.dtype, np.datetime64):
            enc |= {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64"}
        elif np.issubdtype(var.dtype, np.floating):
            fill = var.dtype.type(np.nan) if var.ndim >= 2 else None
            enc |= {"dtype": var.dtype, "_FillValue": fill}
        if var.ndim >= 2:
            chunks = tuple(1 if dim == "time" else size for dim, size in var.sizes.items())
            enc |= {**COMPRESSION, "chunksizes": chunks}
        result[str(name)] = enc
    return result


def _infill_variable(ds: xr.Dataset, mask: np.ndarray, path: str | os.PathLike[str]) -> xr.Variable:
    mask = np.asarray(mask)
    shape = (ds.sizes["time"], ds.sizes["y"], ds.sizes["x"])
    if mask.dtype != bool:
        raise ValueError(f"{path}: infill_mask must be bool, got {mask.dtype}")
    if mask.shape not in (shape, shape[1:]):
        raise ValueError(
            f"{path}: infill_mask of shape {mask.shape} fits neither (time, y, x) = {shape} "
            f"nor (y, x) = {shape[1:]}"
        )
    attrs = flag_attrs("pixel value was infilled by radinfill", "not_infilled infilled")
    return xr.Variable(("time", "y", "x"), np.broadcast_to(mask, shape).copy(), attrs)


def _checked_provenance(
    provenance: Mapping[str, str], path: str | os.PathLike[str]
) -> dict[str, str]:
    for key, value in provenance.items():
        if not isinstance(key, str) or not _ATTRIBUTE_NAME.fullmatch(key):
            raise ValueError(f"{path}: provenance key {key!r} is not a valid netCDF attribute name")
        if not isinstance(value, str):
            raise ValueError(
                f"{path}: provenance {key!r} must be a string, got {type(value).__name__}"
            )
    return dict(provenance)
