"""Synthetic RADOLAN streams: DWD-shaped headers, decodable files, outages that the hole
detector finds, and a truth that scores against them."""

from __future__ import annotations

import gzip
import json
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from radinfill import holes, stream, synth
from radinfill.cli import main
from radinfill.radolan import RadolanError, build_header, decode, encode, grid_for, read_one
from radinfill.radolan.header import parse
from radinfill.radolan.sites import OPERATIONAL, RADIUS_KM
from tests.conftest import require

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GRID = (256, 256)
STEPS = 8
SEED = 7
#: Outages frequent enough that a few steps of a small crop lose radars.
OUTAGES = {"kinds": ("full", "exclusive"), "p_fail": 0.5, "mean_duration_steps": 3}


def _raw(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


# --- header builder -----------------------------------------------------------------------------

#: Real DWD files whose header ``build`` must reproduce byte for byte from the parsed values.
REAL_HEADERS = [
    "radolan_to_netcdf/radolan_ry/raa01-ry_10000-2001011500-dwd---bin.gz",
    "radolan_to_netcdf/radolan_rw/raa01-rw_10000-1811220050-dwd---bin.gz",
    "radolan_to_netcdf/radolan_rw/raa01-rw_10000-1811220850-dwd---bin.gz",  # boo missing
    "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach",
    "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin",  # RADKLIM: U, MF, VR
]


@pytest.mark.parametrize("name", REAL_HEADERS)
def test_build_reproduces_real_dwd_headers(samples: Path, name: str) -> None:
    data = _raw(samples / name)
    real = decode(data).header
    extra = {"MF": f"{real['MF']:>9}"} if "MF" in real else {}  # MF is 9 wide, right-aligned
    if "VR" in real:
        extra |= {"U": str(real["U"]), "VR": str(real["VR"])}
    built = build_header(
        real.product,
        real.time,
        real.shape,
        precision_exponent=int(real["PR"]),
        interval_minutes=int(real["INT"]),
        sites=real.sites,
        version=real.version,
        software=str(real["SW"]),
        extra=extra,
    )
    assert built.raw == real.raw
    assert built.size == len(data)


sites_strategy = st.lists(st.sampled_from(sorted(OPERATIONAL)), unique=True, max_size=17)


@settings(max_examples=60, deadline=None)
@given(
    product=st.sampled_from(["RY", "RW", "RX", "RZ", "SF"]),
    time=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59)),
    shape=st.tuples(st.integers(1, 9999), st.integers(1, 9999)),
    exponent=st.integers(-9, 9),
    interval=st.integers(0, 9999),
    sites=sites_strategy,
    version=st.sampled_from([2, 3, 5]),
)
def test_parse_of_build_round_trips(
    product: str,
    time: datetime,
    shape: tuple[int, int],
    exponent: int,
    interval: int,
    sites: list[str],
    version: int,
) -> None:
    time = time.replace(second=0, microsecond=0, tzinfo=UTC)
    built = build_header(
        product,
        time,
        shape,
        precision_exponent=exponent,
        interval_minutes=interval,
        sites=sites,
        version=version,
    )
    again = parse(built.raw)
    assert (again.product, again.time, again.wmo) == (product, time, "10000")
    assert again.shape == shape
    assert again["PR"] == exponent
    assert again["INT"] == interval
    assert again.sites == tuple(sites)
    assert again.version == version
    assert again["SW"] == "radinfill"
    width = 1 if product == "RX" else 2
    assert again.size == len(built.raw) + shape[0] * shape[1] * width
    text = built.raw.decode()
    assert len(text[19 : text.index("VS")]) == (7 if again.size < 10**7 else 10)  # BY width
    site_text = text[text.index("MS") + 5 : -1]  # after the three-digit length, before ETX
    listed = f"<{','.join(sites)}>"
    assert site_text == (listed if version >= 5 or len(listed) % 2 == 0 else listed + " ")


def test_build_accepts_time_zones_and_writes_utc() -> None:
    cest = datetime(2025, 6, 1, 12, 5, tzinfo=UTC).astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert cest.hour == 14
    built = build_header(
        "RY", cest, (900, 900), precision_exponent=-2, interval_minutes=5, sites=["boo"]
    )
    assert built.raw.startswith(b"RY011205100000625")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"software": "radinfill-2"}, "SW"),
        ({"time": datetime(1999, 12, 31, tzinfo=UTC)}, "2000-2099"),
        ({"extra": {"XX": "1"}}, "XX"),
        ({"product": "PG"}, "run-length"),
        ({"interval_minutes": 10000}, "INT"),
        ({"shape": (10000, 900)}, "GP"),
        ({"precision_exponent": -10}, "PR"),
    ],
)
def test_build_rejects_values_that_do_not_fit(change: dict, reason: str) -> None:
    arguments = {
        "product": "RY",
        "time": START,
        "shape": (900, 900),
        "precision_exponent": -2,
        "interval_minutes": 5,
        "sites": ["boo"],
    } | change
    with pytest.raises(RadolanError, match=reason):
        build_header(**arguments)


# --- the stream ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ry(tmp_path_factory: pytest.TempPathFactory) -> stream.StreamManifest:
    return stream.write_stream(
        tmp_path_factory.mktemp("ry"),
        product="RY",
        grid=GRID,
        steps=STEPS,
        start=START,
        seed=SEED,
        outage_options=OUTAGES,
    )


@pytest.fixture(scope="module")
def events() -> list[synth.Outage]:
    """The outage events of the ``ry`` stream, drawn again through synth's own API."""
    return synth.outage_events(grid_for(*GRID), STEPS, SEED, radius_km=RADIUS_KM, **OUTAGES)


def test_the_fixture_stream_has_outages(ry: stream.StreamManifest) -> None:
    assert sum(bool(s.failed_sites) for s in ry.steps) >= 2
    assert sum(s.hole_pixels > 0 for s in ry.steps) >= 1


def test_every_file_is_a_valid_product(ry: stream.StreamManifest) -> None:
    assert [p.name for p in ry.files] == [
        f"raa01-ry_10000-{START + timedelta(minutes=5 * i):%y%m%d%H%M}-dwd---bin"
        for i in range(STEPS)
    ]
    for index, path in enumerate(ry.files):
        data = path.read_bytes()
        field = read_one(path)
        assert field.product == "RY"
        assert field.time == START + timedelta(minutes=5 * index) == ry.steps[index].time
        assert field.interval == timedelta(minutes=5)
        assert field.values.shape == GRID == field.grid.shape
        assert field.header.size == len(data)
        assert field.header.precision == pytest.approx(0.01)
        assert field.header["SW"] == "radinfill"
        assert encode(decode(data)) == data


def test_ms_lists_exactly_the_radars_that_are_up(
    ry: stream.StreamManifest, events: list[synth.Outage]
) -> None:
    for index, step in enumerate(ry.steps):
        failed = synth.failed_sites(events, index)
        assert step.failed_sites == failed
        assert set(read_one(step.path).header.sites) == set(OPERATIONAL) - failed


def test_holes_detect_finds_the_outages(
    ry: stream.StreamManifest, events: list[synth.Outage]
) -> None:
    masks = synth.outages(grid_for(*GRID), STEPS, SEED, radius_km=RADIUS_KM, **OUTAGES)
    named = 0
    for index, step in enumerate(ry.steps):
        field = read_one(step.path)
        report = holes.detect(field)
        listed = holes.coverage(field.grid, field.header.sites, RADIUS_KM)
        assert report.pixels == step.hole_pixels
        assert report.missing_radars <= step.failed_sites
        assert not (masks[index] & report.coverage & ~report.failure).any()
        assert np.array_equal(field.nodata, ~listed | masks[index])
        for event in events:
            active = event.start <= index < event.stop
            if active and event.kind in ("full", "exclusive") and (event.mask & ~listed).any():
                assert event.site in report.missing_radars
                named += 1
    assert named >= 1


def test_values_equal_the_truth_and_the_rain(ry: stream.StreamManifest) -> None:
    rain = synth.sequence(grid_for(*GRID), STEPS, interval_minutes=5, preset="mixed", seed=SEED)
    nominal = holes.coverage(grid_for(*GRID), OPERATIONAL, RADIUS_KM)
    with xr.open_dataset(ry.truth) as truth:
        assert truth.sizes == {"time": STEPS, "y": GRID[0], "x": GRID[1]}
        np.testing.assert_array_equal(truth["nodata"].values, np.broadcast_to(~nominal, rain.shape))
        for index, path in enumerate(ry.files):
            field = read_one(path)
            valid = ~field.nodata
            expected = truth["RY"].values[index][valid]
            np.testing.assert_allclose(field.values[valid], expected, atol=0.01 + 1e-6)
            quantised = np.minimum(rain[index][valid], 40.95)  # 4095 counts saturate
            np.testing.assert_allclose(field.values[valid], quantised, atol=0.005 + 1e-6)
            assert np.all(np.isnan(field.values[~valid]))


def test_truth_infill_mask_is_the_holes_of_each_step(ry: stream.StreamManifest) -> None:
    grid = grid_for(*GRID)
    outages = synth.outages(grid, STEPS, SEED, radius_km=RADIUS_KM, **OUTAGES)
    nominal = holes.coverage(grid, OPERATIONAL, RADIUS_KM)
    with xr.open_dataset(ry.truth) as truth:
        infill = truth["infill_mask"].values.astype(bool)
    assert infill.any()
    for index, step in enumerate(ry.steps):
        listed = holes.coverage(grid, set(OPERATIONAL) - step.failed_sites, RADIUS_KM)
        # every outage pixel, and the discs of failed radars that no listed radar covers
        np.testing.assert_array_equal(infill[index], (outages[index] | ~listed) & nominal)
        np.testing.assert_array_equal(infill[index], holes.detect(read_one(step.path)).failure)
        assert infill[index].sum() == step.hole_pixels


def test_truth_carries_provenance_and_the_stream_times(ry: stream.StreamManifest) -> None:
    with xr.open_dataset(ry.truth) as truth:
        assert truth.attrs["generator"] == "radinfill.stream.write_stream"
        assert (truth.attrs["preset"], truth.attrs["seed"]) == ("mixed", str(SEED))
        assert (truth.attrs["grid"], truth.attrs["steps"]) == ("256x256", str(STEPS))
        assert "institution" not in truth.attrs  # synthetic, not DWD's
        times = truth["time"].values.astype("datetime64[m]").tolist()
        assert times == [s.time.replace(tzinfo=None) for s in ry.steps]


def test_static_outages_leave_every_radar_listed(tmp_path: Path) -> None:
    options = {"kinds": ("wedge", "blind"), "p_fail": 0.5, "mean_duration_steps": 3}
    written = stream.write_stream(
        tmp_path, grid=GRID, steps=3, start=START, seed=SEED, outage_options=options
    )
    assert sum(step.hole_pixels for step in written.steps) > 0
    for step in written.steps:
        assert step.failed_sites == frozenset()
        assert set(read_one(step.path).header.sites) == set(OPERATIONAL)


def test_manifest_json_lists_the_stream(ry: stream.StreamManifest) -> None:
    record = json.loads(ry.manifest.read_text())
    assert record["product"] == "RY"
    assert record["truth"] == "truth.nc"
    assert [f["name"] for f in record["files"]] == [p.name for p in ry.files]
    assert [f["time"] for f in record["files"]] == [s.time.isoformat() for s in ry.steps]
    assert [set(f["failed_sites"]) for f in record["files"]] == [s.failed_sites for s in ry.steps]
    assert [f["hole_pixels"] for f in record["files"]] == [s.hole_pixels for s in ry.steps]


def test_same_seed_same_stream_other_seed_other_stream(tmp_path: Path) -> None:
    options = {"grid": (128, 128), "steps": 3, "start": START, "outage_options": OUTAGES}
    first, again, other = (
        stream.write_stream(tmp_path / name, seed=seed, **options)
        for name, seed in (("a", SEED), ("b", SEED), ("c", SEED + 1))
    )
    assert [p.read_bytes() for p in again.files] == [p.read_bytes() for p in first.files]
    assert again.manifest.read_text() == first.manifest.read_text()
    with xr.open_dataset(first.truth) as one, xr.open_dataset(again.truth) as two:
        xr.testing.assert_identical(one, two)
    assert [p.read_bytes() for p in other.files] != [p.read_bytes() for p in first.files]


def test_without_outages_every_radar_is_listed(tmp_path: Path) -> None:
    written = stream.write_stream(
        tmp_path, grid=(128, 128), steps=2, start=START, seed=1, outages=False
    )
    for step in written.steps:
        assert step.failed_sites == frozenset()
        assert step.hole_pixels == 0
        assert set(read_one(step.path).header.sites) == set(OPERATIONAL)


def test_rw_is_hourly_in_tenths_of_mm(tmp_path: Path) -> None:
    written = stream.write_stream(
        tmp_path, product="RW", grid=(128, 128), steps=2, start=START, seed=2, outages=False
    )
    rain = synth.sequence(grid_for(128, 128), 2, interval_minutes=60, preset="mixed", seed=2)
    first, second = (read_one(p) for p in written.files)
    assert second.time - first.time == first.interval == timedelta(hours=1)
    assert b"INT  60GP 128x 128MF 00000001MS" in first.header.raw
    assert first.header.precision == pytest.approx(0.1)
    valid = ~first.nodata
    np.testing.assert_allclose(
        first.values[valid], np.minimum(rain[0][valid], 409.5), atol=0.05 + 1e-5
    )


def test_reflectivity_follows_marshall_palmer() -> None:
    rain_mm_5min = np.array([0.0, 1 / 12, 10 / 12, 0.001, np.nan])  # 0, 1, 10, 0.012 mm/h
    dbz = stream.reflectivity(rain_mm_5min, 5)
    # Z = 200 R^1.6: 1 mm/h -> 10 log10(200) = 23.01 dBZ; 10 mm/h -> 23.01 + 16 = 39.01 dBZ.
    np.testing.assert_allclose(dbz[:4], [-32.5, 23.0103, 39.0103, -32.5], atol=1e-3)
    assert np.isnan(dbz[4])


def test_rx_writes_one_byte_reflectivity(tmp_path: Path) -> None:
    written = stream.write_stream(
        tmp_path, product="RX", grid=GRID, steps=1, start=START, seed=SEED, outages=False
    )
    field = read_one(written.files[0])
    rain = synth.sequence(grid_for(*GRID), 1, interval_minutes=5, preset="mixed", seed=SEED)
    assert field.header.size == len(field.header.raw) + GRID[0] * GRID[1]
    assert field.header.precision == 1.0
    assert field.unit == "dBZ"
    valid = ~field.nodata
    expected = stream.reflectivity(rain[0], 5)[valid]
    np.testing.assert_allclose(field.values[valid], expected, atol=0.25 + 1e-5)


def test_unknown_product_and_clashing_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="supported: RY"):
        stream.write_stream(tmp_path, product="SF", grid=GRID, steps=1, start=START, seed=0)
    with pytest.raises(ValueError, match="distinct plain file name"):
        stream.write_stream(
            tmp_path, grid=GRID, steps=2, start=START, seed=0, name_pattern="{time:%Y%m%d}"
        )


def test_wradlib_reads_a_national_ry_file(tmp_path: Path) -> None:
    wio = require("wradlib.io")
    written = stream.write_stream(tmp_path, grid=(900, 900), steps=1, start=START, seed=3)
    ours = read_one(written.files[0])
    theirs, attrs = wio.read_radolan_composite(str(written.files[0]), missing=-9999)
    assert theirs.shape == (900, 900)
    assert attrs["datetime"].replace(tzinfo=UTC) == START
    assert tuple(attrs["radarlocations"]) == ours.header.sites
    assert attrs["precision"] == pytest.approx(0.01)
    assert np.array_equal(theirs == -9999, ours.nodata)
    valid = ~ours.nodata
    np.testing.assert_allclose(theirs[valid], ours.values[valid], rtol=1e-6)
    assert ours.nodata.any()
    assert (ours.values[valid] > 0).any()


# --- ODIM-HDF5 streams -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rv(tmp_path_factory: pytest.TempPathFactory) -> stream.StreamManifest:
    return stream.write_stream(
        tmp_path_factory.mktemp("rv"),
        product="RV",
        grid=GRID,
        steps=STEPS,
        start=START,
        seed=SEED,
        outage_options=OUTAGES,
        file_format="odim",
    )


def test_odim_stream_files_are_laid_out_like_dwds(rv: stream.StreamManifest) -> None:
    """Read with h5py alone: DWD's names, groups, scaling, times and the nodes that are up."""
    assert [p.name for p in rv.files] == [
        f"composite_rv_{START + timedelta(minutes=5 * i):%Y%m%d_%H%M}_000-hd5" for i in range(STEPS)
    ]
    for index, step in enumerate(rv.steps):
        end = START + timedelta(minutes=5 * index)
        with h5py.File(step.path, "r") as h5:
            assert h5.attrs["Conventions"] == b"ODIM_H5/V2_3"
            assert (h5["what"].attrs["date"], h5["what"].attrs["time"]) == (
                f"{end:%Y%m%d}".encode(),
                f"{end:%H%M%S}".encode(),
            )
            meta = h5["dataset1/what"].attrs
            assert meta["prodname"] == b"RV_top_view"
            assert meta["starttime"] == f"{end - timedelta(minutes=5):%H%M%S}".encode()
            assert meta["endtime"] == f"{end:%H%M%S}".encode()
            scaling = h5["dataset1/data1/what"].attrs
            assert (float(scaling["gain"]), float(scaling["offset"])) == (0.001, -0.001)
            data = h5["dataset1/data1/data"]
            assert (data.dtype, data.shape, data.compression) == (np.uint32, GRID, "gzip")
            nodes = h5["how"].attrs["nodes"].decode().replace("'", "").split(",")
        assert {n.removeprefix("de") for n in nodes} == set(OPERATIONAL) - step.failed_sites


def test_odim_stream_holes_are_the_truth_and_what_the_detector_finds(
    rv: stream.StreamManifest,
) -> None:
    grid = grid_for(*GRID, "wgs84")
    outages = synth.outages(grid, STEPS, SEED, radius_km=RADIUS_KM, **OUTAGES)
    rain = synth.sequence(grid, STEPS, interval_minutes=5, preset="mixed", seed=SEED)
    with xr.open_dataset(rv.truth) as truth:
        infill = truth["infill_mask"].values.astype(bool)
    assert sum(bool(s.failed_sites) for s in rv.steps) >= 2
    for index, step in enumerate(rv.steps):
        listed = holes.coverage(grid, set(OPERATIONAL) - step.failed_sites, RADIUS_KM)
        with h5py.File(step.path, "r") as h5:
            codes = h5["dataset1/data1/data"][()][::-1]
        np.testing.assert_array_equal(codes == 4294967295, ~listed | outages[index])
        report = holes.detect(read_one(step.path))
        np.testing.assert_array_equal(infill[index], report.failure)
        assert report.pixels == step.hole_pixels
        valid = codes != 4294967295
        stored = np.where(codes == 0, 0.0, codes * 0.001 - 0.001)  # 0 is undetect: dry
        np.testing.assert_allclose(stored[valid], rain[index][valid], atol=0.0005 + 1e-6)


def test_odim_streams_only_of_products_with_an_odim_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synthetic odim stream of product 'RY'; supported: RW"):
        stream.write_stream(
            tmp_path, product="RY", grid=GRID, steps=1, start=START, seed=0, file_format="odim"
        )
    with pytest.raises(ValueError, match="unknown format 'grib'"):
        stream.write_stream(tmp_path, grid=GRID, steps=1, start=START, seed=0, file_format="grib")
    assert not list(tmp_path.iterdir())


# --- command line -------------------------------------------------------------------------------


def test_cli_synth_writes_the_stream_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stream"
    assert (
        main(["synth", "--grid", "200x200", "--steps", "3", "--out", str(out), "--seed", "1"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    names = sorted(p.name for p in out.glob("raa01-ry_10000-*-dwd---bin"))
    assert names == [f"raa01-ry_10000-25060112{m:02d}-dwd---bin" for m in (0, 5, 10)]
    assert len(lines) == 4
    for name, line in zip(names, lines, strict=False):
        assert name in line
        assert "failed radars:" in line
        assert "hole px:" in line
    assert str(out / "truth.nc") in lines[-1]
    assert (out / "truth.nc").is_file()
    assert (out / "manifest.json").is_file()


def test_cli_synth_odim_writes_files_pysteps_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    importers = require("pysteps.io.importers")
    out = tmp_path / "stream"
    args = ["synth", "--format", "odim", "--product", "RW", "--grid", "1200x1100"]
    assert main([*args, "--steps", "2", "--out", str(out), "--seed", "2"]) == 0
    names = sorted(p.name for p in out.glob("*.hdf5"))
    assert names == [f"raa01-rw_10000-250601{h}00-dwd---bin.hdf5" for h in (12, 13)]
    assert names[0] in capsys.readouterr().out
    ours = read_one(out / names[0])
    theirs, _, metadata = importers.import_odim_hdf5(str(out / names[0]), qty="ACRR")
    assert (metadata["x1"], metadata["y2"]) == pytest.approx((-500.0, 500.0))  # as DWD's files
    np.testing.assert_array_equal(np.isnan(theirs[::-1]), ours.nodata)
    valid = ~ours.nodata
    np.testing.assert_allclose(theirs[::-1][valid], ours.values[valid], atol=1e-6)
    assert (ours.values[valid] > 0).any()


@pytest.mark.parametrize("grid", ["900by900", "2000x2000"])
def test_cli_synth_bad_grid_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], grid: str
) -> None:
    code = main(["synth", "--grid", grid, "--steps", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("radinfill synth: error:")
    assert captured.err.count("\n") == 1
    assert not list(tmp_path.iterdir())
