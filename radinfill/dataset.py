"""RADOLAN fields as a CF-1.10 :class:`xarray.Dataset`.

One dataset holds a time series of one product on one grid: the values in the product's own
unit per interval (mm per interval for amounts, never converted to rates, so that sums stay
sums), the three flag planes as stored, and everything a CF reader needs to place the pixels
on the earth: projection coordinates, 2-D latitude/longitude and the polar-stereographic
grid mapping. Rows stay as stored (row 0 south), so ``y`` ascends.

Time is the *valid* time (nominal time plus the forecast lead ``VV``), so that an RV bundle
of an analysis and 24 nowcasts becomes one time axis; the nominal time is kept as
``reference_time`` and the lead as ``lead_time``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from radinfill import code_version
from radinfill.names import printable
from radinfill.radolan import Field, read

CONVENTIONS = "CF-1.10"
#: Name of the grid-mapping variable that every gridded variable points to.
GRID_MAPPING = "polar_stereographic"
#: Attribution DWD asks for when its data are redistributed.
DWD_ATTRIBUTION = "Quelle: Deutscher Wetterdienst"
_DIMS = ("time", "y", "x")
_AMOUNT = "lwe_thickness_of_precipitation_amount"
# WMO block 10 is Germany; DWD composites carry the pseudo station number 10000.
_DWD_WMO_BLOCK = "10"

#: Flag planes of a :class:`Field`: (long_name, CF ``flag_meanings`` of the values 0 and 1).
FLAGS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "nodata": ("no-data flag of the input product", "has_data no_data"),
        "clutter": ("clutter flag of the input product", "no_clutter clutter"),
        "secondary": (
            "secondary-value flag of the input product (mostly gauge-only pixels)",
            "primary secondary",
        ),
    }
)


def flag_attrs(long_name: str, meanings: str) -> dict[str, Any]:
    """CF attributes of a boolean flag plane stored as 0/1 (``flag_values``, ``flag_meanings``)."""
    return {
        "long_name": long_name,
        "flag_values": np.array([0, 1], dtype=np.int8),
        "flag_meanings": meanings,
        "grid_mapping": GRID_MAPPING,
    }


# Header facts kept as global attributes: name -> how to get it from a field. A fact that
# differs between the fields of one dataset becomes a coordinate along ``time`` instead.
_HEADER_FACTS: Mapping[str, Callable[[Field], object]] = MappingProxyType(
    {
        "radolan_format_version": lambda f: f.header.version,
        "radolan_software": lambda f: str(f.header.get("SW", "")),
        "radolan_precision": lambda f: f.header.precision,
        "radolan_interval_minutes": lambda f: f.interval_minutes,
        "radar_sites": lambda f: ",".join(f.header.sites),
    }
)


def open_radolan(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a RADOLAN file into a dataset (see :func:`to_dataset` for the layout).

    ``path`` may be a plain product, gz/bz2 of one, a tar of many (e.g. an RV bundle of an
    analysis and 24 nowcasts, which becomes 25 time steps) or a DWD ODIM-HDF5 composite.

    Raises
    ------
    RadolanError
        If the file cannot be decoded.
    ValueError
        If the file holds products of different ids or grids.
    """
    return to_dataset(read(path))


def to_dataset(fields: Sequence[Field]) -> xr.Dataset:
    """Assemble decoded fields of one product and grid into a CF dataset, sorted by valid time.

    Parameters
    ----------
    fields
        At least one field; all must share product id and grid.

    Returns
    -------
    xarray.Dataset
        Dimensions (time, y, x). Data variable named after the product (float32, the
        product's unit per interval, NaN = no-data); bool flag planes ``nodata``, ``clutter``,
        ``secondary``; coordinates ``x``/``y`` (pixel centres, m), ``time`` (valid time, UTC),
        ``reference_time`` (nominal time), ``lead_time`` (minutes, only when a field has a
        ``VV`` token), 2-D ``lat``/``lon`` (degrees, float32); scalar grid-mapping variable
        ``polar_stereographic``. Header facts (software, format version, precision,
        interval, radar sites) are global attributes when all fields agree, else
        coordinates along ``time``.

    Raises
    ------
    ValueError
        If ``fields`` is empty or mixes products or grids (the message names the files).
    """
    fields = sorted(fields, key=lambda f: (_valid_time(f), f.time))
    _check_compatible(fields)
    constant, varying = _header_facts(fields)
    coords = _coords(fields) | {
        name: xr.Variable("time", np.array(values), {"long_name": f"{name} per time step"})
        for name, values in varying.items()
    }
    return xr.Dataset(_data_vars(fields), coords, _global_attrs(fields, constant))


def _data_vars(fields: Sequence[Field]) -> dict[str, xr.Variable]:
    first = fields[0]
    values = np.stack([f.values for f in fields]).astype(np.float32, copy=False)
    variables = {first.product: xr.Variable(_DIMS, values, _data_attrs(first))}
    for name, (long_name, meanings) in FLAGS.items():
        plane = np.stack([getattr(f, name) for f in fields]).astype(bool, copy=False)
        variables[name] = xr.Variable(_DIMS, plane, flag_attrs(long_name, meanings))
    variables[GRID_MAPPING] = xr.Variable((), np.int32(0), first.grid.cf_grid_mapping())
    return variables


def _coords(fields: Sequence[Field]) -> dict[str, xr.Variable]:
    grid = fields[0].grid
    lon, lat = grid.lonlat()
    time_attrs = {
        "standard_name": "time",
        "long_name": "valid time (end of the interval), UTC",
        "axis": "T",
    }
    reference_attrs = {
        "standard_name": "forecast_reference_time",
        "long_name": "nominal time of the product (analysis time for nowcasts), UTC",
    }
    coords = {
        "time": xr.Variable("time", _datetime64([_valid_time(f) for f in fields]), time_attrs),
        "reference_time": xr.Variable(
            "time", _datetime64([f.time for f in fields]), reference_attrs
        ),
        "y": xr.Variable("y", grid.y, _axis_attrs("y")),
        "x": xr.Variable("x", grid.x, _axis_attrs("x")),
        "lat": xr.Variable(("y", "x"), lat.astype(np.float32), _geographic_attrs("latitude")),
        "lon": xr.Variable(("y", "x"), lon.astype(np.float32), _geographic_attrs("longitude")),
    }
    if any("VV" in f.header for f in fields):
        leads = np.array([f.header.lead_minutes for f in fields], dtype=np.int32)
        lead_attrs = {
            "standard_name": "forecast_period",
            "long_name": "forecast lead time",
            "units": "minutes",
        }
        coords["lead_time"] = xr.Variable("time", leads, lead_attrs)
    return coords


def _valid_time(field: Field) -> datetime:
    return field.time + timedelta(minutes=field.header.lead_minutes)


def _datetime64(times: Sequence[datetime]) -> np.ndarray:
    """UTC-aware datetimes as naive datetime64[ns] (xarray's convention: naive means UTC)."""
    return np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[ns]")


def _geographic_attrs(name: str) -> dict[str, str]:
    return {
        "standard_name": name,
        "long_name": f"{name} of the pixel centre",
        "units": "degrees_north" if name == "latitude" else "degrees_east",
    }


def _axis_attrs(axis: str) -> dict[str, str]:
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "long_name": f"{axis} coordinate of projection (pixel centre)",
        "units": "m",
        "axis": axis.upper(),
    }


def _data_attrs(field: Field) -> dict[str, str]:
    info = field.info
    attrs = {"long_name": info.long_name, "units": info.unit}
    if info.standard_name is not None:
        attrs["standard_name"] = info.standard_name
    if info.standard_name == _AMOUNT:
        attrs["cell_methods"] = f"time: sum (interval: {field.interval_minutes} minutes)"
    attrs["grid_mapping"] = GRID_MAPPING
    attrs["ancillary_variables"] = " ".join(FLAGS)
    return attrs


def _check_compatible(fields: Sequence[Field]) -> None:
    if not fields:
        raise ValueError("no RADOLAN fields to assemble into a dataset")
    first = fields[0]
    for field in fields[1:]:
        for what, key in (("product", _product_of), ("grid", _grid_of)):
            if key(field) != key(first):
                raise ValueError(
                    f"cannot combine {what} {key(field)} ({field.source}) with "
                    f"{what} {key(first)} ({first.source}) in one dataset"
                )


def _product_of(field: Field) -> str:
    return field.product


def _grid_of(field: Field) -> str:
    grid = field.grid
    return f"{grid.name} {grid.rows}x{grid.cols} ({grid.ellipsoid})"


def _header_facts(fields: Sequence[Field]) -> tuple[dict[str, object], dict[str, list[object]]]:
    """Split the header facts into those all fields share and those that vary per field."""
    constant: dict[str, object] = {}
    varying: dict[str, list[object]] = {}
    for name, get in _HEADER_FACTS.items():
        values = [get(f) for f in fields]
        if len(set(values)) == 1:
            constant[name] = values[0]
        else:
            varying[name] = values
    return constant, varying


def _global_attrs(fields: Sequence[Field], constant: Mapping[str, object]) -> dict[str, object]:
    first = fields[0]
    attrs: dict[str, object] = {
        "Conventions": CONVENTIONS,
        "title": f"RADOLAN {first.info.long_name}",
        "source": f"DWD RADOLAN radar composite, product {first.product}",
    }
    if all(f.header.wmo.startswith(_DWD_WMO_BLOCK) for f in fields):
        attrs["institution"] = "Deutscher Wetterdienst (DWD)"
        attrs["attribution"] = DWD_ATTRIBUTION
    attrs["product"] = first.product
    attrs |= constant
    files = ", ".join(dict.fromkeys(printable(os.path.basename(f.source)) for f in fields))
    attrs["history"] = f"radinfill {code_version()}: decoded from {files}"
    return attrs
