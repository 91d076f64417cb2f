"""Cross-check the codec against wradlib, an independent reader, on every product family.

``wradlib.io.read_radolan_composite`` returns values x precision (raw RVP6 bytes for
RX/EX/WX), its ``missing`` value at no-data, and flat index arrays of the no-data, clutter and
secondary pixels; rows are south first like ours. Its xarray backend reads the ODIM-HDF5
composites (north first) and gives pixel-centre coordinates.
"""

from __future__ import annotations

import io
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

from radinfill.radolan import decode, read_one
from radinfill.radolan.grids import grid_for
from tests.conftest import require
from tests.radolan_samples import RVP6, raw_product

wio = require("wradlib.io")
georef = require("wradlib.georef")

MISSING = -9999
#: Products of the 2014-08-10 20:50 showcase instant not covered by the files above.
SHOWCASE = ("rz", "rh", "rb", "rl", "ru", "sh", "sq", "wx", "ex", "ey", "ez", "eh", "eb", "ew")
#: One file per product family (and per grid or header generation where they differ).
FAMILIES = [
    "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan",
    "dwdradar/tests/raa01-rw2017.002_10000-1712310850-dwd---bin_hourRadReproc",
    "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin",
    "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach",
    "meteo-ubonn-radolan/data/raa01-rx_10000-0902120000-dwd---bin",
    "meteo-ubonn-radolan/data/raa01-ex_10000-0903241000-dwd---bin",
    "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin",
    "com.bitplan.radolan/src/test/data/history/raa01-sf_10000-1805301650-dwd---bin.gz",
    "brightsky/tests/data/DE1200_RV2305081330.tar.bz2",
    "wradlib-data/radvor/RE2210180700_000.gz",
    "wradlib-data/radvor/RQ2210180700_120.gz",
    "radolan-guide/misc/FZ1607041020_000_MF002",
    *(f"wradlib-data/showcase/raa01-{p}_10000-1408102050-dwd---bin.gz" for p in SHOWCASE),
    "wradlib-data/showcase/raa01-w1_10000-1408110550-dwd---bin.gz",
    "wradlib-data/showcase/raa01-w2_10000-1408110550-dwd---bin.gz",
]


def _mask(indices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask.flat[np.asarray(indices, dtype=np.int64)] = True
    return mask


def _site_ids(names: list[str]) -> tuple[str, ...]:
    ids = (n.strip().lower() for n in names)
    return tuple(n[2:] if len(n) == 5 and n.startswith("de") else n for n in ids)


@pytest.mark.parametrize("name", FAMILIES)
def test_values_flags_and_metadata_agree_with_wradlib(samples: Path, name: str) -> None:
    raw = raw_product(samples / name)
    ours = decode(raw)
    theirs, attrs = wio.read_radolan_composite(io.BytesIO(raw), missing=MISSING)
    shape = ours.values.shape
    assert theirs.shape == shape == (attrs["nrow"], attrs["ncol"])

    np.testing.assert_array_equal(ours.nodata, _mask(attrs["nodatamask"], shape))
    np.testing.assert_array_equal(ours.clutter, _mask(attrs["cluttermask"], shape))
    np.testing.assert_array_equal(ours.secondary, _mask(attrs.get("secondary", []), shape))
    assert np.all(theirs[ours.nodata] == MISSING)

    valid = ~(ours.nodata | np.isnan(ours.values))
    expected = theirs[valid] / 2 - 32.5 if ours.product in RVP6 else theirs[valid]
    np.testing.assert_allclose(ours.values[valid], expected.astype(np.float32), rtol=1e-6)
    if ours.product in RVP6:  # RVP6 clutter (code 249) is NaN for us, a raw 249 for wradlib
        assert np.all(theirs[ours.clutter] == 249)

    assert ours.time == attrs["datetime"].replace(tzinfo=UTC)
    assert ours.header.sites == _site_ids(attrs["radarlocations"])
    assert ours.header.precision == pytest.approx(attrs["precision"])
    assert ours.header.lead_minutes == attrs.get("predictiontime", 0)
    if ours.product not in ("W1", "W2", "W3", "W4"):  # wradlib reads INT as minutes there
        assert ours.interval.total_seconds() == attrs["intervalseconds"]


def test_odim_hdf5_agrees_with_the_wradlib_backend(samples: Path) -> None:
    xr = require("xarray")
    path = samples / "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"
    ours = read_one(path)
    with xr.open_dataset(path, engine="radolan") as dataset:
        theirs = dataset["ACRR"].values[::-1]  # ODIM stores north first
        x, y = dataset["x"].values, dataset["y"].values[::-1]
        time = dataset["time"].values[0]
    np.testing.assert_array_equal(ours.nodata, np.isnan(theirs))
    valid = ~ours.nodata
    np.testing.assert_allclose(ours.values[valid], theirs[valid], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.grid.x, x, atol=1e-3)
    np.testing.assert_allclose(ours.grid.y, y, atol=1e-3)
    assert np.datetime64(ours.time.replace(tzinfo=None), "ns") == time


@pytest.mark.parametrize(
    "shape", [(900, 900), (1100, 900), (1200, 1100), (1500, 1400), (450, 450), (460, 460)]
)
def test_pixel_centres_agree_with_wradlib_on_the_sphere(shape: tuple[int, int]) -> None:
    x_km, y_km = georef.get_radolan_coordinates(*shape, mode="center")
    grid = grid_for(*shape, "sphere")
    np.testing.assert_allclose(grid.x, x_km * 1000.0, rtol=0, atol=1e-3)
    np.testing.assert_allclose(grid.y, y_km * 1000.0, rtol=0, atol=1e-3)
