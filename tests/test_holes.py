"""Radar-failure hole detection on the real DWD samples and on doctored real fields.

Expected outcomes come from outside the implementation: the header ``MS`` lists and the data
README (missing radars, "hole % of nominal coverage", the 4,499 px wedge NE of Rostock, the
permanent blob at 47.72 N 8.20 E), and disc geometry recomputed here with the haversine
formula straight from pixel longitudes and latitudes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from radinfill import holes
from radinfill.radolan import Field, read_one
from radinfill.radolan.grids import grid_for
from radinfill.radolan.sites import OPERATIONAL, SITES
from tests.radolan_samples import haversine_km

RW_NHB = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
YW_ASB_NHB = "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin"
RX_ASB_NHB = "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach"
RW_BOO = "radolan_to_netcdf/radolan_rw/raa01-rw_10000-181122{}-dwd---bin.gz"
RY_2019 = "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin"
RY_2020 = "radolan_to_netcdf/radolan_ry/raa01-ry_10000-2001011500-dwd---bin.gz"
WX_WEDGE = "wradlib-data/showcase/raa01-wx_10000-1408102050-dwd---bin.gz"


def _read(samples: Path, name: str) -> Field:
    return read_one(samples / name)


def _pixel(field: Field, lon: float, lat: float) -> tuple[int, int]:
    row, col = field.grid.index(lon, lat)
    return round(float(row)), round(float(col))


def _without_sites(field: Field, *gone: str) -> Field:
    """The field with ``gone`` removed from its header ``MS`` list."""
    tokens = dict(field.header.tokens)
    tokens["MS"] = tuple(s for s in field.header.sites if s not in gone)
    return field.replace(header=dataclasses.replace(field.header, tokens=tokens))


def _with_nodata(field: Field, mask: np.ndarray) -> Field:
    """The field with ``mask`` (bool, rows x cols) set to no-data."""
    values = np.where(mask, np.float32(np.nan), field.values).astype(np.float32)
    return field.replace(values=values, nodata=field.nodata | mask)


def _check_invariants(field: Field, report: holes.HoleReport) -> None:
    assert not (report.failure & report.outside).any()
    np.testing.assert_array_equal(report.failure | report.outside, field.nodata)
    assert report.pixels == int(report.failure.sum())
    assert set(report.causes) == {"radar", "wedge", "blind_zone", "other"}
    assert sum(report.causes.values()) == report.pixels
    np.testing.assert_array_equal(report.labels != holes.NONE, report.failure)
    for name, code in holes.CAUSES.items():
        assert report.causes[name] == int((report.labels == code).sum())
    assert not (report.expected & ~report.coverage).any()


# --- real outages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "missing", "radius"),
    [
        (RW_NHB, {"nhb"}, 150.0),
        (YW_ASB_NHB, {"asb", "nhb"}, 128.0),
        (RX_ASB_NHB, {"asb", "nhb"}, 150.0),
    ],
)
def test_edge_radar_outages_found(samples: Path, name: str, missing: set[str], radius: float):
    field = _read(samples, name)
    report = holes.detect(field)
    _check_invariants(field, report)
    assert report.missing_radars == missing
    assert report.radius_km == radius
    assert report.unknown_sites == frozenset()
    # A missing edge radar leaves a bite that is nearly all of the hole.
    assert report.causes["radar"] > 0.95 * report.pixels


@pytest.mark.parametrize("hhmm", ["0850", "0950", "1050"])
def test_interior_radar_outage_found_though_hole_is_tiny(samples: Path, hhmm: str):
    """RW 2018-11-22 08:50-10:50 lacks boo; its neighbours overlap, so only ~0.2 % is lost."""
    field = _read(samples, RW_BOO.format(hhmm))
    report = holes.detect(field)
    _check_invariants(field, report)
    assert report.missing_radars == {"boo"}
    assert 0 < report.causes["radar"] <= report.pixels < 0.005 * report.coverage.sum()
    boo = haversine_km(*field.grid.lonlat(), "boo") <= 150.0
    assert (report.labels == holes.RADAR)[~boo].sum() == 0


@pytest.mark.parametrize(
    "name",
    [
        *(
            f"radolan_to_netcdf/radolan_ry/raa01-ry_10000-20010115{mm:02d}-dwd---bin.gz"
            for mm in range(0, 60, 5)
        ),
        "radolan_to_netcdf/radolan_ry/raa01-ry_10000-2001011600-dwd---bin.gz",
        RW_BOO.format("0750"),
        RW_BOO.format("1150"),
        RY_2019,
    ],
)
def test_complete_network_has_no_missing_radar(samples: Path, name: str):
    field = _read(samples, name)
    assert {s for s in field.header.sites} == set(OPERATIONAL)
    report = holes.detect(field)
    _check_invariants(field, report)
    assert report.missing_radars == frozenset()
    assert report.causes["radar"] == 0
    assert report.pixels < 0.001 * report.coverage.sum()


def test_permanent_blob_southeast_of_feldberg_is_a_blind_zone(samples: Path):
    field = _read(samples, RY_2019)
    report = holes.detect(field)
    assert report.labels[_pixel(field, 8.20, 47.72)] == holes.BLIND_ZONE
    assert 120 <= report.causes["blind_zone"] == report.pixels <= 150


def test_sector_hole_northeast_of_rostock_is_a_wedge(samples: Path):
    """WX 2014-08-10 20:50: README documents a 4,499 px wedge at 54.53 N 13.48 E."""
    field = _read(samples, WX_WEDGE)
    report = holes.detect(field)
    _check_invariants(field, report)
    row, col = _pixel(field, 13.48, 54.53)
    assert report.labels[row, col] == holes.WEDGE
    components, _ = ndimage.label(report.labels == holes.WEDGE, structure=np.ones((3, 3)))
    assert 4000 <= (components == components[row, col]).sum() <= 5000
    # MS lacks asb, eis, fld (drs appears as its 2014 stand-in asd); fld's disc is fully
    # covered by listed neighbours, so it leaves no hole and is not reported.
    assert report.missing_radars == {"asb", "eis"}


@pytest.mark.parametrize(
    ("name", "hole_percent"),
    [
        (RW_NHB, 3.5),
        (YW_ASB_NHB, 12.5),
        (RX_ASB_NHB, 6.0),
        ("radolan2map/example/sample_file/raa01-rw_10000-1708020250-dwd---bin.gz", 1.4),
        ("meteo-ubonn-radolan/data/raa01-rx_10000-0902120000-dwd---bin", 5.1),
        ("wradlib-data/showcase/raa01-ry_10000-1408102050-dwd---bin.gz", 3.8),
        ("dwdradar/tests/raa01-rw2017.002_10000-1712310850-dwd---bin_hourRadReproc", 29.5),
        ("brightsky/tests/data/DE1200_RV2305081330.tar.bz2", 0.2),
    ],
)
def test_readme_hole_share_of_nominal_coverage(samples: Path, name: str, hole_percent: float):
    """The README's "hole %" (rounded to 0.1) checks the disc geometry and the radius rule."""
    field = _read(samples, name)
    report = holes.detect(field)
    _check_invariants(field, report)
    assert 100 * report.pixels / report.coverage.sum() == pytest.approx(hole_percent, abs=0.15)


# --- doctored real fields ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def complete(samples: Path) -> Field:
    """A real RY field of the full 17-radar network (2020-01-01 15:00)."""
    return _read(samples, RY_2020)


@pytest.fixture(scope="module")
def distances(complete: Field) -> dict[str, np.ndarray]:
    lon, lat = complete.grid.lonlat()
    return {s: haversine_km(lon, lat, s) for s in OPERATIONAL}


def test_removed_radar_is_reported_with_cause_radar(complete: Field, distances):
    disc = distances["ros"] <= 150.0
    others = np.logical_or.reduce([distances[s] <= 150.0 for s in OPERATIONAL if s != "ros"])
    field = _without_sites(_with_nodata(complete, disc), "ros")
    report = holes.detect(field)
    _check_invariants(field, report)
    assert report.missing_radars == {"ros"}
    # Exactly the part of the disc that no other radar covers is attributed to the radar
    # (a few boundary pixels may round differently in the two distance formulas).
    assert abs(report.causes["radar"] - int((disc & ~others).sum())) <= 5
    assert (report.labels[disc & ~others] == holes.RADAR).mean() > 0.999
    assert not (report.labels[~disc] == holes.RADAR).any()


def test_site_absent_from_ms_but_no_hole_is_not_reported(complete: Field):
    field = _without_sites(complete, "ros", "fld")
    report = holes.detect(field)
    assert report.missing_radars == frozenset()
    assert report.causes["radar"] == 0
    assert report.coverage.sum() > report.expected.sum()  # ros's own area is not expected


def test_synthetic_sector_is_a_wedge(complete: Field, distances):
    lon, lat = complete.grid.lonlat()
    _, azimuth = holes.great_circle(SITES["ros"].lon, SITES["ros"].lat, lon, lat)
    sector = (
        (azimuth >= 150) & (azimuth <= 165) & (distances["ros"] >= 30) & (distances["ros"] <= 140)
    )
    report = holes.detect(_with_nodata(complete, sector))
    assert (report.labels[sector] == holes.WEDGE).all()
    assert report.missing_radars == frozenset()


def test_synthetic_square_is_other_and_small_blob_a_blind_zone(complete: Field, distances):
    row, col = _pixel(complete, 10.5, 51.6)  # about 70 km from the nearest site
    square = np.zeros(complete.grid.shape, dtype=bool)
    square[row - 35 : row + 35, col - 35 : col + 35] = True
    lon, lat = complete.grid.lonlat()
    blob = (np.abs(lon - 12.0) < 0.08) & (np.abs(lat - 50.9) < 0.05)  # ~11 x 11 km
    report = holes.detect(_with_nodata(complete, square | blob))
    assert min(d[square].min() for d in distances.values()) > holes.BLIND_SITE_KM
    assert (report.labels[square] == holes.OTHER).all()
    assert (report.labels[blob] == holes.BLIND_ZONE).all()


def test_without_ms_the_full_network_is_assumed(complete: Field, distances):
    tokens = {k: v for k, v in complete.header.tokens.items() if k != "MS"}
    field = complete.replace(header=dataclasses.replace(complete.header, tokens=tokens))
    report = holes.detect(_with_nodata(field, distances["asb"] <= 150.0))
    assert report.missing_radars == frozenset()
    assert report.causes["radar"] == 0
    np.testing.assert_array_equal(report.expected, report.coverage)


def test_unknown_legacy_site_is_reported(complete: Field):
    tokens = dict(complete.header.tokens)
    tokens["MS"] = (*complete.header.sites, "ham")
    field = complete.replace(header=dataclasses.replace(complete.header, tokens=tokens))
    assert holes.detect(field).unknown_sites == {"ham"}


@pytest.mark.parametrize(
    ("changes", "radius"),
    [({}, 150.0), ({"VR": "2017.002"}, 128.0), ({"VS": 2}, 128.0), ({"VS": 5}, 150.0)],
)
def test_coverage_radius_rule(complete: Field, changes: dict[str, object], radius: float):
    header = dataclasses.replace(complete.header, tokens={**complete.header.tokens, **changes})
    assert holes.coverage_radius_km(header) == radius


# --- geometry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("site", "radius"), [("ros", 150.0), ("fbg", 128.0), ("asb", 150.0)])
def test_disc_uses_great_circle_distance(complete: Field, site: str, radius: float):
    """A disc matches the haversine distance from pixel lon/lat, not projected distance."""
    mask = holes.coverage(complete.grid, [site], radius)
    lon, lat = complete.grid.lonlat()
    truth = haversine_km(lon, lat, site) <= radius
    assert (mask != truth).sum() <= 3
    x, y = np.meshgrid(complete.grid.x, complete.grid.y)
    row, col = _pixel(complete, SITES[site].lon, SITES[site].lat)
    planar = np.hypot(x - x[row, col], y - y[row, col]) <= radius * 1000.0
    assert (mask != planar).sum() > 0.03 * truth.sum()  # the test can tell the two apart


@pytest.mark.parametrize(
    ("rows", "cols", "ellipsoid"), [(1100, 900, "sphere"), (1200, 1100, "wgs84")]
)
def test_every_disc_is_whole_on_the_larger_grids(rows: int, cols: int, ellipsoid: str):
    """Discs are computed inside a box around their site: the box must hold all of each one,
    also where the map's scale is largest and where a disc is cut by the grid's edge."""
    grid = grid_for(rows, cols, ellipsoid=ellipsoid)
    lon, lat = grid.lonlat()
    for site in SITES:
        truth = haversine_km(lon, lat, site) <= 150.0
        assert (holes.coverage(grid, [site], 150.0) != truth).sum() <= 3, site


def test_coverage_is_cached_and_read_only(complete: Field):
    first = holes.coverage(complete.grid, ["boo", "ros"], 150.0)
    assert holes.coverage(complete.grid, ("ros", "boo"), 150.0) is first
    assert not first.flags.writeable


def test_great_circle_and_angular_spread():
    distance, azimuth = holes.great_circle(
        10.0, 50.0, np.array([10.0, 11.0]), np.array([51.0, 50.0])
    )
    assert distance[0] == pytest.approx(111.195, abs=0.01)  # one degree of latitude
    assert distance[1] == pytest.approx(111.195 * np.cos(np.radians(50.0)), rel=1e-3)
    assert azimuth[0] == pytest.approx(0.0, abs=1e-9)
    assert azimuth[1] == pytest.approx(90.0, abs=0.5)
    assert holes.angular_spread(np.array([350.0, 5.0, 10.0])) == pytest.approx(20.0)
    assert holes.angular_spread(np.array([30.0])) == 0.0
    assert holes.angular_spread(np.array([0.0, 90.0, 180.0, 270.0])) == pytest.approx(270.0)


def test_coverage_rejects_unknown_site(complete: Field):
    with pytest.raises(ValueError, match="ham"):
        holes.coverage(complete.grid, ["boo", "ham"], 150.0)


def test_no_data_that_means_dry_is_not_a_hole(samples: Path) -> None:
    field = read_one(samples / "wradlib-data/radvor/RE2210180700_000.gz")
    report = holes.detect(field)
    assert field.nodata[report.coverage].mean() > 0.5  # RE: most of the coverage is "dry"
    assert report.pixels == 0
    assert not report.failure.any()
    assert report.missing_radars == frozenset()
    assert np.array_equal(report.outside, field.nodata & ~report.coverage)


def test_sites_whose_disc_misses_a_component_do_not_change_its_cause(
    complete: Field, distances, monkeypatch: pytest.MonkeyPatch
):
    """Judging every large component from only the sites whose disc reaches it gives the
    labels that judging it from every listed site gives (a wedge, a square, a whole disc)."""
    lon, lat = complete.grid.lonlat()
    _, azimuth = holes.great_circle(SITES["ros"].lon, SITES["ros"].lat, lon, lat)
    sector = (azimuth >= 150) & (azimuth <= 165) & (distances["ros"] >= 30)
    sector &= distances["ros"] <= 140
    row, col = _pixel(complete, 10.5, 51.6)
    square = np.zeros(complete.grid.shape, dtype=bool)
    square[row - 35 : row + 35, col - 35 : col + 35] = True
    disc = distances["oft"] <= 150.0
    failure = (sector | square | disc) & holes.coverage(complete.grid, OPERATIONAL, 150.0)
    args = (failure, complete.grid, OPERATIONAL, 150.0)
    filtered = holes.classify_components(*args)
    monkeypatch.setattr(holes, "_sites_reaching", lambda inside, window, sites, discs: sites)
    every = holes.classify_components(*args)
    assert {holes.WEDGE, holes.OTHER} <= set(np.unique(filtered[failure]))
    np.testing.assert_array_equal(filtered, every)
