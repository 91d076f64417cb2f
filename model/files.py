"""Infill RADOLAN files in batch: rolling windows per product, same-format outputs plus netCDF.

What ``radinfill infill`` does with its inputs: group them by product and grid, order them by
nominal time, give each field the earlier fields of its window, infill its radar-failure holes
with a method under the baseline contract, and write the same-format RADOLAN file (infilled
pixels get values and lose the no-data flag; the secondary bit is not set) and a CF-netCDF
file with ``infill_mask`` and provenance. Fields without failure holes are copied byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from radinfill import atomic, code_version, holes, netcdf, radolan
from radinfill.dataset import to_dataset
from radinfill.radolan import Field


def windows(
    paths: Sequence[str], window: int, interval: int | None
) -> Iterator[tuple[str, Field, np.ndarray]]:
    """Yield (path, field, frames) per input in time order per product, frames oldest first.

    Frames are the up to ``window - 1`` earlier inputs of the same product and grid plus the
    current one; a missing interval inside the window is an all-NaN frame (no data).
    """
    fields: dict[tuple[str, tuple[int, ...], datetime], tuple[str, Field]] = {}
    for path in paths:
        field = radolan.read_one(path)
        minutes = field.interval.total_seconds() / 60
        if field.unit != "mm" or field.info.nodata_means_dry or not field.header.raw:
            raise ValueError(
                f"{path}: {field.product} is not a RADOLAN binary precipitation amount"
            )
        if interval is not None and minutes != interval:
            raise ValueError(
                f"{path}: {field.product} has a {minutes:g}-min interval, the checkpoint "
                f"was trained on {interval} min"
            )
        key = (field.product, field.values.shape, field.time)
        if key in fields:
            raise ValueError(f"{path} and {fields[key][0]} hold the same product and time")
        fields[key] = (path, field)
    for (product, shape, time), (path, field) in sorted(fields.items()):
        earlier = [fields.get((product, shape, time - k * field.interval)) for k in range(window)]
        while earlier[-1] is None:  # start-up: no frames before the first input
            earlier.pop()
        nan = np.full(shape, np.nan, dtype=np.float32)
        frames = np.stack([nan if e is None else e[1].values for e in reversed(earlier)])
        yield path, field, frames


def write_infilled(
    path: str,
    field: Field,
    frames: np.ndarray,
    method: Callable[..., np.ndarray],
    out: Path,
    provenance: Mapping[str, str],
) -> str:
    """Infill the failure holes of ``field``, write RADOLAN + netCDF to ``out``; a report line.

    The netCDF holds the values as written to the RADOLAN file (read back, which also checks
    the write), so both outputs agree to the product precision.
    """
    name = Path(path).name
    target = out / name
    if target.resolve() == Path(path).resolve():
        raise ValueError(f"{path}: output directory {out} would overwrite the input")
    hole = holes.detect(field).failure
    if hole.any():
        radolan.write(infilled(field, hole, method(frames, hole)), target)
        done = f"{hole.sum()} px infilled ({provenance['infill_method']})"
    else:
        atomic.write_bytes(target, Path(path).read_bytes())
        done = "no failure holes, copied unchanged"
    stem = netcdf_stem(name)
    netcdf.write(
        to_dataset([radolan.read_one(target)]),
        out / f"{stem}.nc",
        infill_mask=hole,
        provenance={
            **provenance,
            "infill_input_file": str(path),
            "radinfill_version": code_version(),
        },
    )
    return f"{target}  {done}; netCDF {stem}.nc"


def infilled(field: Field, hole: np.ndarray, values: np.ndarray) -> Field:
    """``field`` with ``values`` (the method's output) in place: the hole pixels get data, so
    they lose the no-data flag; the secondary bit is not set on them."""
    return field.replace(
        values=values, nodata=field.nodata & ~hole, secondary=field.secondary & ~hole
    )


def netcdf_stem(name: str) -> str:
    """The netCDF output's stem for a RADOLAN file name (compression suffixes dropped)."""
    return name.removesuffix(".gz").removesuffix(".bz2")
