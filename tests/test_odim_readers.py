"""Our infilled ODIM-HDF5 files open in the readers downstream users have: wradlib's ``radolan``
xarray engine and pysteps' ``import_odim_hdf5``, both independent of our codec.

Each real ODIM product (the RW file and both members of the RV bundle) gets the no-data pixels
of its western half filled with known amounts and is written by :func:`radinfill.radolan.write`;
the readers must return those amounts there (within half a quantisation step), no-data
exactly where our field has it, and the untouched measured values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radinfill.radolan import Field, read, write
from tests.conftest import require

xr = require("xarray")
require("wradlib")  # registers the "radolan" engine
importers = require("pysteps.io.importers")

ODIM = (
    "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5",
    "brightsky/tests/data/composite_rv_20250923_0855.tar",
)
#: Infilled amounts (mm), one per row band, so a row flip or a shift would show.
AMOUNTS = (0.7, 2.5, 11.3)


def _infilled(field: Field) -> tuple[Field, np.ndarray]:
    """The field with the no-data pixels of its western half filled, and those pixels."""
    hole = field.nodata.copy()
    hole[:, hole.shape[1] // 2 :] = False
    bands = np.array_split(np.arange(hole.shape[0]), len(AMOUNTS))
    values = field.values.copy()
    for rows, amount in zip(bands, AMOUNTS, strict=True):
        values[rows] = np.where(hole[rows], np.float32(amount), values[rows])
    return field.replace(values=values, nodata=field.nodata & ~hole), hole


def _written(samples: Path, tmp_path: Path) -> list[tuple[Field, np.ndarray, Path]]:
    cases = []
    for name in ODIM:
        for field in read(samples / name):
            infilled, hole = _infilled(field)
            path = tmp_path / Path(field.source.rsplit(":", 1)[-1]).name
            write(infilled, path)
            cases.append((infilled, hole, path))
    return cases


def _check(field: Field, hole: np.ndarray, theirs: np.ndarray) -> None:
    """``theirs`` (row 0 south) against our field: infilled amounts, no-data, measured values."""
    step = field.header.precision  # 10**PR: the ODIM gain, 0.1 mm for RW, 0.001 mm for RV
    np.testing.assert_array_equal(np.isnan(theirs), field.nodata)
    np.testing.assert_allclose(theirs[hole], field.values[hole], atol=step / 2 + 1e-6)
    assert {round(float(v), 1) for v in theirs[hole]} == set(AMOUNTS)
    measured = ~field.nodata & ~field.undetect
    np.testing.assert_allclose(theirs[measured], field.values[measured], atol=1e-5)


def test_wradlib_reads_the_infilled_values(samples: Path, tmp_path: Path) -> None:
    for field, hole, path in _written(samples, tmp_path):
        with xr.open_dataset(path, engine="radolan") as dataset:
            theirs = dataset["ACRR"].values[::-1]  # ODIM stores north first
            time = dataset["time"].values[0]
        _check(field, hole, theirs)
        assert np.datetime64(field.time.replace(tzinfo=None), "ns") == time


def test_pysteps_reads_the_infilled_values(samples: Path, tmp_path: Path) -> None:
    for field, hole, path in _written(samples, tmp_path):
        precip, _, metadata = importers.import_odim_hdf5(str(path), qty="ACRR")
        assert metadata["yorigin"] == "upper"
        _check(field, hole, precip[::-1])


def test_readers_see_the_input_holes_as_no_data(samples: Path) -> None:
    """The checks above would pass if the readers ignored no-data; in the input they must
    read the same pixels as NaN."""
    path = samples / ODIM[0]
    (field,) = read(path)
    _, hole = _infilled(field)
    assert hole.sum() > 100_000
    precip, _, _ = importers.import_odim_hdf5(str(path), qty="ACRR")
    with xr.open_dataset(path, engine="radolan") as dataset:
        theirs = dataset["ACRR"].values[::-1]
    assert np.isnan(precip[::-1][hole]).all()
    assert np.isnan(theirs[hole]).all()
