"""xarray view of RADOLAN files and the CF-netCDF writer, checked on real DWD samples.

Independent oracles: wradlib's own ``radolan`` engine (coordinates and values), the DWD
closed-form projection formulas and grid corners of ``reference/radolan-format.md`` (pixel
positions), cf_xarray and pyproj's ``CRS.from_cf`` (CF metadata), netCDF4 itself (filters).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pyproj
import pytest
import xarray as xr

import radinfill
from radinfill import netcdf
from radinfill.dataset import DWD_ATTRIBUTION, open_radolan, to_dataset
from radinfill.radolan import read
from radinfill.xarray_backend import RadinfillBackendEntrypoint, looks_like_radolan
from tests.conftest import require

RW = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
RW_GZ = "dwdradar/tests/raa01-rw_10000-1907311350-dwd---bin_hourRadRecentBin.gz"
RY = "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin"
RX = "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach"
YW = "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin"
RW_RADKLIM = "dwdradar/tests/raa01-rw2017.002_10000-1712310850-dwd---bin_hourRadReproc"
RV_BUNDLE = "wradlib-data/radvor/DE1200_RV2210180700.tar.bz2"
RV_ODIM_TAR = "brightsky/tests/data/composite_rv_20250923_0855.tar"
RW_ODIM = "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"
ASCII_TAR = "wradlib-data/asc/RW-20221018.tar.gz"
# Boostedt (boo) is missing from the MS list 08:50-10:50 in this sequence.
RW_DAY = [
    f"radolan_to_netcdf/radolan_rw/raa01-rw_10000-181122{hour:02d}50-dwd---bin.gz"
    for hour in range(7, 12)
]

# Lower-left grid corners (km) from the reference table, derived independently of our code.
LL_900_KM = (-523.462167, -4658.644724)
LL_1100_KM = (-443.462167, -4758.644724)
EARTH_RADIUS_KM = 6370.040


@pytest.fixture(scope="module")
def rw(samples: Path) -> xr.Dataset:
    return open_radolan(samples / RW)


@pytest.fixture(scope="module")
def rv_bundle(samples: Path) -> xr.Dataset:
    return open_radolan(samples / RV_BUNDLE)


def _cf_crs(attrs: dict) -> pyproj.CRS:
    """The CRS that the CF parameters alone describe (the WKT and PROJ strings left out)."""
    return pyproj.CRS.from_cf({k: v for k, v in attrs.items() if k not in ("crs_wkt", "proj4")})


def _forward(crs: pyproj.CRS, lon, lat):
    return pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True).transform(lon, lat)


def _reopen(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


# --- reading -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "product", "shape", "unit"),
    [
        (RW, "RW", (900, 900), "mm"),
        (RW_GZ, "RW", (900, 900), "mm"),
        (RX, "RX", (900, 900), "dBZ"),
        (YW, "YW", (1100, 900), "mm"),
        (RW_ODIM, "RW", (1200, 1100), "mm"),
    ],
)
def test_open_radolan_holds_the_decoded_field(samples, name, product, shape, unit):
    ds = open_radolan(samples / name)
    (field,) = read(samples / name)
    assert ds[product].dims == ("time", "y", "x")
    assert ds[product].shape == (1, *shape)
    assert ds[product].dtype == np.float32
    np.testing.assert_array_equal(ds[product].values[0], field.values)  # NaN positions too
    for flag in ("nodata", "clutter", "secondary"):
        assert ds[flag].dtype == bool
        np.testing.assert_array_equal(ds[flag].values[0], getattr(field, flag))
    assert ds[product].attrs["units"] == unit
    assert ds[product].attrs["grid_mapping"] == "polar_stereographic"
    assert ds.time.values[0] == np.datetime64(field.time.replace(tzinfo=None), "ns")
    assert ds.attrs["product"] == product
    assert ds.attrs["Conventions"] == "CF-1.10"


def test_amounts_are_sums_and_reflectivity_is_not(samples, rw):
    assert rw.RW.attrs["cell_methods"] == "time: sum (interval: 60 minutes)"
    assert rw.RW.attrs["standard_name"] == "lwe_thickness_of_precipitation_amount"
    ry = open_radolan(samples / RY)
    assert ry.RY.attrs["cell_methods"] == "time: sum (interval: 5 minutes)"
    rx = open_radolan(samples / RX)
    assert "cell_methods" not in rx.RX.attrs
    assert rx.RX.attrs["standard_name"] == "equivalent_reflectivity_factor"
    assert float(rx.RX.min()) >= -32.5


def test_rv_bundle_is_one_time_axis_of_valid_times(samples, rv_bundle):
    fields = read(samples / RV_BUNDLE)
    assert rv_bundle.sizes == {"time": 25, "y": 1200, "x": 1100}
    np.testing.assert_array_equal(rv_bundle.lead_time.values, np.arange(0, 125, 5))
    assert rv_bundle.lead_time.attrs["units"] == "minutes"
    analysis = np.datetime64("2022-10-18T07:00", "ns")
    assert (rv_bundle.reference_time.values == analysis).all()
    expected = analysis + rv_bundle.lead_time.values.astype("timedelta64[m]")
    np.testing.assert_array_equal(rv_bundle.time.values, expected)
    by_lead = {f.header.lead_minutes: f for f in fields}
    for step in (0, 12, 24):
        lead = int(rv_bundle.lead_time[step])
        np.testing.assert_array_equal(rv_bundle.RV.values[step], by_lead[lead].values)
    assert rv_bundle.attrs["radolan_format_version"] == 5


def test_global_attributes_keep_source_and_header_facts(rw):
    assert rw.attrs["attribution"] == DWD_ATTRIBUTION == "Quelle: Deutscher Wetterdienst"
    assert "Deutscher Wetterdienst" in rw.attrs["institution"]
    assert rw.attrs["radolan_precision"] == pytest.approx(0.1)
    assert rw.attrs["radolan_interval_minutes"] == 60
    assert rw.attrs["radolan_format_version"] == 3
    assert rw.attrs["radolan_software"]
    sites = rw.attrs["radar_sites"].split(",")
    assert "nhb" not in sites  # the sample's missing radar (README)
    assert len(sites) == 16
    assert Path(RW).name in rw.attrs["history"]


def test_sequence_sorted_with_per_time_radar_sites(samples):
    fields = [f for name in reversed(RW_DAY) for f in read(samples / name)]
    ds = to_dataset(fields)
    times = ds.time.values
    assert (np.diff(times) == np.timedelta64(1, "h")).all()
    assert "radar_sites" not in ds.attrs  # differs between time steps
    has_boo = ["boo" in s.split(",") for s in ds.radar_sites.values.tolist()]
    hours = ds.time.dt.hour.values.tolist()
    assert dict(zip(hours, has_boo, strict=True)) == {
        7: True,
        8: False,
        9: False,
        10: False,
        11: True,
    }
    assert ds.attrs["radolan_interval_minutes"] == 60  # the same everywhere: stays global
    assert "lead_time" not in ds.coords


def test_mixing_products_or_grids_is_refused_naming_the_files(samples):
    (rw,), (ry,), (radklim,) = read(samples / RW), read(samples / RY), read(samples / RW_RADKLIM)
    with pytest.raises(ValueError, match="product") as err:
        to_dataset([rw, ry])
    assert Path(RW).name in str(err.value)
    assert Path(RY).name in str(err.value)
    with pytest.raises(ValueError, match="grid") as err:
        to_dataset([rw, radklim])
    assert Path(RW_RADKLIM).name in str(err.value)
    with pytest.raises(ValueError, match="no RADOLAN fields"):
        to_dataset([])


# --- coordinates ---------------------------------------------------------------------------


def test_projection_coordinates(rw, samples):
    assert rw.x.values[0] == pytest.approx(-522962.167, abs=1.0)  # wradlib's value
    assert rw.y.values[0] == pytest.approx(-4658144.724, abs=1.0)
    np.testing.assert_allclose(np.diff(rw.y.values), 1000.0)  # ascending: row 0 south
    assert rw.x.attrs["standard_name"] == "projection_x_coordinate"
    assert rw.y.attrs["standard_name"] == "projection_y_coordinate"
    assert rw.x.attrs["units"] == rw.y.attrs["units"] == "m"
    yw = open_radolan(samples / YW)
    assert yw.x.values[0] == pytest.approx(LL_1100_KM[0] * 1000 + 500, abs=1.0)
    assert yw.y.values[0] == pytest.approx(LL_1100_KM[1] * 1000 + 500, abs=1.0)


def _dwd_xy_km(lon: float, lat: float) -> tuple[float, float]:
    """DWD's closed-form polar stereographic (sphere, true at 60 N, 10 E), in km."""
    phi, lam = math.radians(lat), math.radians(lon - 10.0)
    m = (1 + math.sin(math.radians(60.0))) / (1 + math.sin(phi))
    return (
        EARTH_RADIUS_KM * m * math.cos(phi) * math.sin(lam),
        -EARTH_RADIUS_KM * m * math.cos(phi) * math.cos(lam),
    )


@pytest.mark.parametrize(
    ("site", "lat", "lon"),
    [("fbg", 47.873611, 8.003611), ("ros", 54.17566, 12.058076), ("drs", 51.124639, 13.768639)],
)
def test_lat_lon_of_a_radar_site_pixel(rw, site, lat, lon):
    x, y = _dwd_xy_km(lon, lat)
    col, row = int((x - LL_900_KM[0]) // 1), int((y - LL_900_KM[1]) // 1)
    assert rw.lat.values[row, col] == pytest.approx(lat, abs=0.01), site
    assert rw.lon.values[row, col] == pytest.approx(lon, abs=0.01), site
    assert rw.lat.attrs["units"] == "degrees_north"
    assert rw.lon.attrs["standard_name"] == "longitude"


@pytest.mark.filterwarnings("ignore:variable .* has multiple fill values")
def test_matches_wradlib_engine(samples, rw):
    require("wradlib")
    with xr.open_dataset(samples / RW, engine="radolan") as theirs:
        theirs = theirs.load()
    np.testing.assert_allclose(rw.x.values, theirs.x.values, atol=1e-6)
    np.testing.assert_allclose(rw.y.values, theirs.y.values, atol=1e-6)
    # RW is an hourly amount: wradlib's mm/h are the same numbers as our mm per hour.
    np.testing.assert_allclose(rw.RW.values[0], theirs.RW.values, rtol=1e-6, atol=1e-5)
    ry = open_radolan(samples / RY)
    with xr.open_dataset(samples / RY, engine="radolan") as theirs_ry:
        rate = theirs_ry.RY.load().values  # wradlib converts the 5-minute amount to mm/h
    np.testing.assert_allclose(ry.RY.values[0] * 12, rate, rtol=1e-6, atol=1e-5)
    assert np.isnan(ry.RY.values[0]).sum() > 0


# --- xarray engine -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [RW, RW_GZ])
def test_engine_equals_open_radolan(samples, name):
    with xr.open_dataset(samples / name, engine="radinfill") as ds:
        xr.testing.assert_identical(ds.load(), open_radolan(samples / name))


def test_engine_drop_variables(samples):
    with xr.open_dataset(samples / RW, engine="radinfill", drop_variables=["clutter"]) as ds:
        assert "clutter" not in ds
        assert "RW" in ds


def test_engine_is_registered_and_described():
    engine = xr.backends.list_engines()["radinfill"]
    assert isinstance(engine, RadinfillBackendEntrypoint)
    assert engine.description
    assert engine.url.startswith("https://")


@pytest.mark.parametrize("name", [RW, RW_GZ, RX, RV_BUNDLE, RV_ODIM_TAR, RW_ODIM])
def test_guess_can_open_by_content(samples, tmp_path, name):
    renamed = tmp_path / "data.nc"  # a misleading suffix must not matter
    shutil.copyfile(samples / name, renamed)
    assert RadinfillBackendEntrypoint().guess_can_open(renamed)


def test_guess_can_open_refuses_other_files(samples, tmp_path, rw):
    entry = RadinfillBackendEntrypoint()
    nc = tmp_path / "raa01-rw_10000-1907010950-dwd---bin"  # a RADOLAN name, netCDF content
    netcdf.write(rw, nc)
    assert not entry.guess_can_open(nc)
    assert not entry.guess_can_open(samples / ASCII_TAR)  # ESRI ASCII grids, no header
    assert not entry.guess_can_open(samples / "README.md")
    assert not entry.guess_can_open(tmp_path / "missing")
    with open(samples / RW, "rb") as handle:
        assert not entry.guess_can_open(handle)  # file objects are not supported
    head = (samples / RW).read_bytes()[:4096]
    assert looks_like_radolan(head)
    assert not looks_like_radolan(head.replace(b"\x03", b" "))  # no ETX
    assert not looks_like_radolan(b"RW" + head[2:40])


def test_package_level_open_radolan_is_lazy():
    assert radinfill.open_radolan is open_radolan
    code = "import sys, radinfill; assert 'xarray' not in sys.modules, 'xarray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- netCDF writer -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [RW, RX, RV_ODIM_TAR])
def test_write_round_trips_identically(samples, tmp_path, name):
    ds = open_radolan(samples / name)
    out = tmp_path / "out.nc"
    netcdf.write(ds, out)
    xr.testing.assert_identical(_reopen(out), ds)


def test_write_round_trips_a_sequence_with_varying_sites(samples, tmp_path):
    ds = to_dataset([f for name in RW_DAY for f in read(samples / name)])
    netcdf.write(ds, tmp_path / "day.nc")
    back = _reopen(tmp_path / "day.nc")
    xr.testing.assert_equal(back, ds)
    assert back.radar_sites.values.tolist() == ds.radar_sites.values.tolist()


def test_written_file_is_cf_compressed_and_chunked(tmp_path, rw):
    out = tmp_path / "out.nc"
    netcdf.write(rw, out)
    with netCDF4.Dataset(out) as nc:
        var = nc["RW"]
        assert var.dtype == np.float32
        assert np.isnan(var.getncattr("_FillValue"))
        assert var.filters()["zlib"] is True
        assert var.filters()["shuffle"] is True
        assert var.filters()["complevel"] == 1
        assert var.chunking() == [1, 900, 900]
        assert set(var.getncattr("coordinates").split()) >= {"lat", "lon"}
        assert nc["time"].getncattr("units").startswith("minutes since 1970-01-01")
        assert nc.getncattr("Conventions") == "CF-1.10"
    assert out.stat().st_size < 900 * 900 * 4  # less than one uncompressed float32 plane


def test_later_files_of_a_grid_reuse_its_coordinate_chunks_and_read_the_same(
    tmp_path, rw, monkeypatch
):
    """From the second file on a grid, lat/lon are the first file's compressed chunks written
    into place: netCDF-C reads every variable and attribute as in the first file, xarray the
    dataset written; other coordinates of the same shape never get those chunks."""
    monkeypatch.setattr(netcdf, "_CHUNKS", {})
    first, second, moved_path = (tmp_path / n for n in ("first.nc", "second.nc", "moved.nc"))
    netcdf.write(rw, first)
    assert len(netcdf._CHUNKS) == 1
    netcdf.write(rw, second)
    with netCDF4.Dataset(first) as a, netCDF4.Dataset(second) as b:
        assert list(b.variables) == list(a.variables)
        for name, var in a.variables.items():
            np.testing.assert_array_equal(np.ma.getdata(b[name][:]), np.ma.getdata(var[:]))
            assert b[name].ncattrs() == var.ncattrs()
            assert [repr(b[name].getncattr(k)) for k in var.ncattrs()] == [
                repr(var.getncattr(k)) for k in var.ncattrs()
            ]
        np.testing.assert_array_equal(b["lat"][:], rw["lat"].values)
    xr.testing.assert_identical(_reopen(second), rw)
    moved = rw.assign_coords(lat=rw["lat"] + np.float32(0.5))
    netcdf.write(moved, moved_path)
    with netCDF4.Dataset(moved_path) as c:
        np.testing.assert_array_equal(c["lat"][:], moved["lat"].values)
        np.testing.assert_array_equal(c["lon"][:], rw["lon"].values)


def test_infill_mask_and_provenance_round_trip(tmp_path, rw):
    mask = np.zeros((900, 900), dtype=bool)
    mask[400:420, 300:350] = True
    provenance = {
        "model_release": "2026-01-15-lstm_attention",
        "model_sha256": "0" * 64,
        "input_files": Path(RW).name,
        "output_version": "1",
    }
    before = rw.copy(deep=True)
    out = tmp_path / "infilled.nc"
    netcdf.write(rw, out, infill_mask=mask, provenance=provenance)
    back = _reopen(out)
    assert back.infill_mask.dtype == bool
    assert back.infill_mask.dims == ("time", "y", "x")
    np.testing.assert_array_equal(back.infill_mask.values[0], mask)
    assert back.infill_mask.attrs["long_name"] == "pixel value was infilled by radinfill"
    assert back.infill_mask.attrs["flag_meanings"] == "not_infilled infilled"
    np.testing.assert_array_equal(back.infill_mask.attrs["flag_values"], [0, 1])
    assert back.RW.attrs["ancillary_variables"].split() == [
        "nodata",
        "clutter",
        "secondary",
        "infill_mask",
    ]
    for key, value in provenance.items():
        assert back.attrs[key] == value
    xr.testing.assert_identical(rw, before)  # the caller's dataset is not modified
    # re-writing the reopened file (as a later version would) keeps everything as it was
    netcdf.write(back, tmp_path / "again.nc", infill_mask=back.infill_mask.values)
    xr.testing.assert_identical(_reopen(tmp_path / "again.nc"), back)


def test_infill_mask_per_time_step(tmp_path, samples):
    ds = open_radolan(samples / RV_ODIM_TAR)
    mask = np.zeros((2, 1200, 1100), dtype=bool)
    mask[1, 10:20, 30:40] = True
    netcdf.write(ds, tmp_path / "out.nc", infill_mask=mask)
    np.testing.assert_array_equal(_reopen(tmp_path / "out.nc").infill_mask.values, mask)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"infill_mask": np.zeros((900, 900), dtype=np.uint8)}, "must be bool"),
        ({"infill_mask": np.zeros((900, 899), dtype=bool)}, "shape"),
        ({"provenance": {"bad name!": "x"}}, "attribute name"),
        ({"provenance": {"model_release": 3}}, "string"),
    ],
)
def test_bad_mask_or_provenance_is_refused_and_nothing_written(tmp_path, rw, kwargs, match):
    out = tmp_path / "out.nc"
    with pytest.raises(ValueError, match=match) as err:
        netcdf.write(rw, out, **kwargs)
    assert str(out) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_no_temp_file(tmp_path, rw):
    out = tmp_path / "out.nc"
    bad = rw.assign(bad=("time", np.array([{"not": "encodable"}], dtype=object)))
    with pytest.raises((TypeError, ValueError)):
        netcdf.write(bad, out)
    assert list(tmp_path.iterdir()) == []


def test_a_netcdf_c_failure_keeps_the_previous_file(tmp_path, rw, monkeypatch):
    out = tmp_path / "out.nc"
    out.write_bytes(b"previous version")
    real = xr.Dataset.to_netcdf

    def encode_then_fail(self, path, *args, **kwargs):
        assert path is None  # built in memory: netCDF-C never holds a file open
        assert len(real(self, path, *args, **kwargs)) > 0
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", encode_then_fail)
    with pytest.raises(OSError, match="netCDF write failed: NetCDF: HDF error"):
        netcdf.write(rw, out)
    assert out.read_bytes() == b"previous version"
    assert list(tmp_path.iterdir()) == [out]


#: Run in a child process: N netCDF writes that fail on a file size limit (what a full disk
#: does to a write), then one within the limit; prints what stayed open and what was written.
_FULL_DISK_CHILD = """
import json, os, resource, signal, sys
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
from radinfill import netcdf, radolan, stream
from radinfill.dataset import to_dataset

out, failures = Path(sys.argv[1]), int(sys.argv[2])
step = stream.write_stream(out / "in", grid=(400, 400), steps=1, seed=0, outages=False,
                           start=datetime(2025, 6, 1, tzinfo=timezone.utc)).steps[0]
fld = radolan.read_one(step.path)
values = np.random.default_rng(0).random(fld.values.shape).astype(np.float32)
ds = to_dataset([fld.replace(values=values)])  # ~640 kB that zlib cannot shrink
target = out / "out" / "x.nc"
target.parent.mkdir()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
errors = []
for _ in range(failures):
    try:
        netcdf.write(ds, target)
    except OSError as err:
        errors.append(err.errno)
fds = os.listdir("/proc/self/fd")  # the listing's own descriptor is gone once listed
links = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")]
deleted = [link for link in links if link.endswith("(deleted)")]
left = sorted(p.name for p in target.parent.iterdir())
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
netcdf.write(ds, target)
print(json.dumps({"errors": errors, "deleted": deleted, "left": left}))
"""


def test_failed_writes_on_a_full_disk_leave_no_open_file(tmp_path):
    """Each netCDF write that the disk refuses must release its temporary file: netCDF-C,
    failing to close a file it could not write, kept the deleted file open, and the space
    never came back until a restart. A write with space again gives the full file."""
    failures = 5
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(tmp_path), str(failures)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(child.stdout.splitlines()[-1])
    assert len(report["errors"]) == failures  # every write failed (EFBIG) ...
    assert report["deleted"] == []  # ... and none left a descriptor behind
    assert report["left"] == []  # nor a temporary file
    written = tmp_path / "out" / "x.nc"
    expected = np.random.default_rng(0).random((400, 400)).astype(np.float32)
    with netCDF4.Dataset(written) as nc:
        values = np.ma.filled(nc.variables["RY"][0], np.nan)
    valid = np.isfinite(values)
    assert valid.mean() > 0.5
    np.testing.assert_array_equal(values[valid], expected[valid])


# --- CF metadata ---------------------------------------------------------------------------


def test_cf_xarray_finds_grid_mapping_coordinates_and_axes(tmp_path, rw):
    require("cf_xarray")
    netcdf.write(rw, tmp_path / "out.nc")
    for ds in (rw, _reopen(tmp_path / "out.nc")):
        assert ds.cf.grid_mapping_names == {"polar_stereographic": ["polar_stereographic"]}
        assert ds.cf["latitude"].name == "lat"
        assert ds.cf["longitude"].name == "lon"
        assert ds.cf.axes == {"X": ["x"], "Y": ["y"], "T": ["time"]}
        associated = ds.cf.get_associated_variable_names("RW")
        assert associated["grid_mapping"] == ["polar_stereographic"]


@pytest.mark.parametrize("name", [RW, RW_ODIM])
def test_cf_grid_mapping_reconstructs_the_crs(samples, name):
    ds = open_radolan(samples / name)
    attrs = ds.polar_stereographic.attrs
    from_cf = _cf_crs(attrs)
    lon = np.array([3.6, 9.0, 15.7, 18.7, 6.97])
    lat = np.array([46.9, 51.0, 54.7, 55.8, 51.4])
    expected = _forward(pyproj.CRS.from_wkt(attrs["crs_wkt"]), lon, lat)
    np.testing.assert_allclose(_forward(from_cf, lon, lat), expected, atol=1.0)
    # the pixel grid sits where the CF CRS says: corner pixel centres round-trip
    corners = ([0, -1], [0, -1])
    xx, yy = _forward(from_cf, ds.lon.values[corners], ds.lat.values[corners])
    np.testing.assert_allclose(xx, ds.x.values[[0, -1]], atol=1.0)
    np.testing.assert_allclose(yy, ds.y.values[[0, -1]], atol=1.0)


def test_sphere_and_wgs84_grid_mappings_differ(samples, rw):
    """The CRS check above can tell the two RADOLAN earth models apart."""
    wgs84 = open_radolan(samples / RV_ODIM_TAR).polar_stereographic.attrs
    assert rw.polar_stereographic.attrs["earth_radius"] == 6370040.0
    assert wgs84["semi_major_axis"] == 6378137.0
    sphere_xy = _forward(_cf_crs(rw.polar_stereographic.attrs), 3.6, 46.9)
    wgs84_xy = _forward(_cf_crs(wgs84), 3.6, 46.9)
    assert math.dist(sphere_xy, wgs84_xy) > 100.0
