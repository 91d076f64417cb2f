"""RADOLAN grid geometry against published numbers: the corner table of
``reference/radolan-format.md`` §7, the DWD closed-form projection formulas, wradlib's pixel
centres, and the corner attributes DWD writes into its own ODIM-HDF5 composites.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pyproj
import pytest

from radinfill.radolan import RadolanError, grid_for
from radinfill.radolan.grids import project, unproject
from radinfill.radolan.sites import SITES
from tests.conftest import require

ODIM_RW = "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"

#: (rows, cols, ellipsoid) -> lower-left corner (km) and LL, LR, UR, UL corners (lon, lat).
TABLE = {
    (900, 900, "sphere"): (
        (-523.462167, -4658.644724),
        ((3.58893, 46.95258), (14.62092, 47.07047), (15.72076, 54.74055), (2.07148, 54.58771)),
    ),
    (1100, 900, "sphere"): (
        (-443.462167, -4758.644724),
        ((4.67593, 46.19288), (15.48011, 46.18266), (17.11279, 55.53417), (3.08893, 55.54821)),
    ),
    (1200, 1100, "sphere"): (
        (-543.462167, -4808.644724),
        ((3.55192, 45.69587), (16.60187, 45.68358), (18.76728, 55.84849), (1.43561, 55.86584)),
    ),
    (1200, 1100, "wgs84"): (
        (-543.696835, -4822.088862),
        ((3.56699, 45.69643), (16.58087, 45.68461), (18.73162, 55.84544), (1.46330, 55.86209)),
    ),
    (1500, 1400, "sphere"): (
        (-673.462167, -5008.644724),
        ((2.34194, 43.93359), (18.25357, 43.87362), (21.69894, 56.45050), (-0.86541, 56.54229)),
    ),
}
CORNERS = ("LL", "LR", "UR", "UL")
ELLIPSOIDS = ("sphere", "wgs84")


@pytest.mark.parametrize(("rows", "cols", "ellipsoid"), sorted(TABLE))
def test_corners_match_the_reference_table(rows: int, cols: int, ellipsoid: str) -> None:
    (x0_km, y0_km), lonlats = TABLE[(rows, cols, ellipsoid)]
    grid = grid_for(rows, cols, ellipsoid)  # type: ignore[arg-type]
    assert grid.shape == (rows, cols)
    assert grid.resolution == 1000.0
    assert grid.x0 == pytest.approx(x0_km * 1000.0, abs=1.0)
    assert grid.y0 == pytest.approx(y0_km * 1000.0, abs=1.0)
    corners = grid.corners()
    for key, (lon, lat) in zip(CORNERS, lonlats, strict=True):
        assert corners[key] == pytest.approx((lon, lat), abs=1e-5), key


def test_first_pixel_centre_of_the_national_grid_is_wradlibs() -> None:
    grid = grid_for(900, 900)
    assert grid.x[0] == pytest.approx(-522962.167, abs=1e-3)
    assert grid.y[0] == pytest.approx(-4658144.724, abs=1e-3)
    assert np.all(np.diff(grid.x) == 1000.0)
    assert np.all(np.diff(grid.y) == 1000.0)


def test_de1200_wgs84_matches_dwds_own_odim_attributes(samples: Path) -> None:
    h5py = require("h5py")
    with h5py.File(samples / ODIM_RW, "r") as h5:
        where = dict(h5["where"].attrs)
    grid = grid_for(int(where["ysize"]), int(where["xsize"]), "wgs84")
    corners = grid.corners()
    for key in CORNERS:
        expected = (float(where[f"{key}_lon"]), float(where[f"{key}_lat"]))
        assert corners[key] == pytest.approx(expected, abs=1e-5), key
    # ODIM's false easting/northing put the centre of the upper-left pixel at (0, 0).
    projdef = where["projdef"].decode()
    params = dict(p.lstrip("+").split("=", 1) for p in projdef.split() if "=" in p)
    assert grid.x[0] == pytest.approx(-float(params["x_0"]), abs=1e-3)
    assert grid.y[-1] == pytest.approx(-float(params["y_0"]), abs=1e-3)


def test_sphere_projection_follows_the_dwd_formulas() -> None:
    """x = R M cos(phi) sin(lambda - 10), y = -R M cos(phi) cos(lambda - 10),
    M = (1 + sin 60) / (1 + sin phi), R = 6370.040 km."""
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(-2, 22, 200), rng.uniform(43, 57, 200)
    phi, dlam = np.radians(lat), np.radians(lon - 10.0)
    scale = 6370040.0 * (1 + math.sin(math.radians(60))) / (1 + np.sin(phi)) * np.cos(phi)
    x, y = project(lon, lat, "sphere")
    np.testing.assert_allclose(x, scale * np.sin(dlam), rtol=0, atol=1e-3)
    np.testing.assert_allclose(y, -scale * np.cos(dlam), rtol=0, atol=1e-3)
    back_lon, back_lat = unproject(x, y, "sphere")
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)


@pytest.mark.parametrize(
    ("rows", "cols", "ellipsoid"),
    [(900, 900, "sphere"), (1100, 900, "sphere"), (1200, 1100, "wgs84"), (450, 450, "sphere")],
)
def test_index_of_pixel_centres_gives_back_the_pixel(rows: int, cols: int, ellipsoid: str) -> None:
    grid = grid_for(rows, cols, ellipsoid)  # type: ignore[arg-type]
    lon, lat = grid.lonlat()
    assert lon.shape == lat.shape == (rows, cols)
    row, col = grid.index(lon[::37, ::41], lat[::37, ::41])
    expected_row, expected_col = np.mgrid[0:rows:37, 0:cols:41]
    np.testing.assert_allclose(row, expected_row, atol=1e-6)
    np.testing.assert_allclose(col, expected_col, atol=1e-6)


def test_points_inside_a_pixel_round_to_that_pixel() -> None:
    grid = grid_for(900, 900)
    for dx, dy in ((-0.45, -0.45), (0.45, 0.45), (0.2, -0.3)):
        x = grid.x[1] + dx * grid.resolution
        y = grid.y[2] + dy * grid.resolution
        row, col = grid.index(*unproject(x, y, grid.ellipsoid))
        assert (round(float(row)), round(float(col))) == (2, 1)


def test_every_known_radar_lies_inside_the_national_grid() -> None:
    grid = grid_for(900, 900)
    lon_grid, lat_grid = grid.lonlat()
    for site in SITES.values():
        row, col = (round(float(v)) for v in grid.index(site.lon, site.lat))
        assert (0 <= row < 900, 0 <= col < 900) == (True, True), site.id
        # the site's pixel centre is within half a pixel diagonal (0.71 km) of the site
        dx, dy = np.subtract(
            project(site.lon, site.lat), project(lon_grid[row, col], lat_grid[row, col])
        )
        assert math.hypot(dx, dy) < 710.0, site.id


def test_the_reference_point_sits_on_pixel_corners() -> None:
    """9 E / 51 N is (j0, i0) pixels from the lower-left corner: a corner shared by four pixels."""
    anchors = {(900, 900): (450, 450), (1200, 1100): (470, 600), (1500, 1400): (600, 800)}
    for ((rows, cols), (j0, i0)), ellipsoid in itertools.product(anchors.items(), ELLIPSOIDS):
        grid = grid_for(rows, cols, ellipsoid)
        row, col = grid.index(9.0, 51.0)
        assert (float(row), float(col)) == pytest.approx((i0 - 0.5, j0 - 0.5), abs=1e-6)


def test_other_catalogued_grids() -> None:
    de1200, de4800 = grid_for(1200, 1100), grid_for(4800, 4400)
    assert (de4800.x0, de4800.y0, de4800.resolution) == (de1200.x0, de1200.y0, 250.0)
    national, fz = grid_for(900, 900), grid_for(450, 450)
    assert (fz.x0, fz.y0, fz.resolution) == (national.x0, national.y0, 2000.0)
    picture = grid_for(460, 460)
    assert (picture.x0, picture.y0) == pytest.approx((national.x0 - 10e3, national.y0 - 10e3))


@pytest.mark.parametrize(("rows", "cols"), [(901, 900), (900, 901), (1000, 1000), (0, 5), (5, 0)])
def test_unknown_grid_sizes_raise(rows: int, cols: int) -> None:
    with pytest.raises(RadolanError, match=f"unknown grid size {rows}x{cols}"):
        grid_for(rows, cols)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (100, 200), (899, 898), (300, 900)])
def test_small_grids_are_centred_crops_of_the_national_grid(rows: int, cols: int) -> None:
    national, crop = grid_for(900, 900), grid_for(rows, cols)
    assert crop.name == f"crop-{rows}x{cols}"
    assert crop.shape == (rows, cols)
    top, left = (900 - rows) // 2, (900 - cols) // 2
    assert 900 - rows - 2 * top in (0, 1)
    assert 900 - cols - 2 * left in (0, 1)
    np.testing.assert_array_equal(crop.x, national.x[left : left + cols])
    np.testing.assert_array_equal(crop.y, national.y[top : top + rows])


@pytest.mark.parametrize("ellipsoid", ["sphere", "wgs84"])
def test_cf_grid_mapping_describes_the_same_projection(ellipsoid: str) -> None:
    grid = grid_for(1200, 1100, ellipsoid)  # type: ignore[arg-type]
    mapping = grid.cf_grid_mapping()
    assert mapping["grid_mapping_name"] == "polar_stereographic"
    assert (mapping["standard_parallel"], mapping["straight_vertical_longitude_from_pole"]) == (
        60.0,
        10.0,
    )
    for crs in (pyproj.CRS.from_cf(mapping), pyproj.CRS.from_wkt(str(mapping["crs_wkt"]))):
        to_xy = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
        xy = to_xy.transform(np.array([3.5, 9.0, 18.7]), np.array([45.7, 51.0, 55.8]))
        expected = project(np.array([3.5, 9.0, 18.7]), np.array([45.7, 51.0, 55.8]), ellipsoid)
        np.testing.assert_allclose(xy, expected, atol=1e-3)
