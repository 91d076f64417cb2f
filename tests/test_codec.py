"""RADOLAN codec on the real DWD samples: byte-identical round trips, reading, writing, field
semantics, and refusal of every kind of bad input with a :class:`RadolanError` only.

Expected facts (times, value ranges, no-data shares, missing radars, the static no-data blobs)
come from the sample README and ``reference/radolan-format.md``, not from the codec's output.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import random
import shutil
import tarfile
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from radinfill.radolan import Field, Grid, RadolanError, decode, encode, read, read_one, write
from radinfill.radolan import io as radolan_io
from radinfill.radolan.sites import SITES
from tests.radolan_samples import raw_product, sample_files, shrink, unpack

RW = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
RW_GZ = "radolan2map/example/sample_file/raa01-rw_10000-1708020250-dwd---bin.gz"
RY = "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin"
RX = "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach"
YW = "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin"
RE = "wradlib-data/radvor/RE2210180700_000.gz"
RQ = "wradlib-data/radvor/RQ2210180700_060.gz"
SF = "wradlib-data/showcase/raa01-sf_10000-1408102050-dwd---bin.gz"
W1 = "wradlib-data/showcase/raa01-w1_10000-1408110550-dwd---bin.gz"
FZ = "radolan-guide/misc/FZ1607041020_000_MF002"
RV_BUNDLE = "brightsky/tests/data/DE1200_RV2305081330.tar.bz2"
ODIM_RW = "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"
ODIM_RV_TAR = "brightsky/tests/data/composite_rv_20250923_0855.tar"

#: The only samples the codec must refuse, with what the refusal must say.
EXPECTED_FAILURES = {
    "wradlib-data/misc/raa00-pc_10015-1408030905-dwd---bin.gz": "run-length",
    "wradlib-data/showcase/raa01-pg_10000-1408102045-dwd---bin.gz": "run-length",
    "wradlib-data/asc/RW-20221018.tar.gz": "not a RADOLAN product",
    "wradlib-data/showcase_CORRUPT/raa01-w3_10000-1408110550-dwd---bin.gz": "over-long.*BY",
}
ODIM = (ODIM_RW, ODIM_RV_TAR)
BINARY = [f for f in sample_files() if f not in EXPECTED_FAILURES and f not in ODIM]


def _split(product: bytes) -> tuple[bytes, bytes]:
    etx = product.index(b"\x03")
    return product[: etx + 1], product[etx + 1 :]


def _tar(members: dict[str, bytes]) -> bytes:
    """An uncompressed tar holding ``members`` in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _pixel(grid: Grid, lon: float, lat: float) -> tuple[int, int]:
    row, col = grid.index(lon, lat)
    return round(float(row)), round(float(col))


# --- round trip over every sample ---------------------------------------------------------------


@pytest.mark.parametrize("name", BINARY)
def test_every_binary_sample_round_trips_byte_for_byte(samples: Path, name: str) -> None:
    for member, data in unpack((samples / name).read_bytes(), name):
        field = decode(data, source=member)
        assert field.values.shape == field.grid.shape == field.header.shape
        assert encode(field) == data, member


def test_round_trip_covers_the_whole_sample_set(samples: Path) -> None:
    products = [m for name in BINARY for m, _ in unpack((samples / name).read_bytes(), name)]
    assert len(products) >= 130  # 138 binary products and tar members at the time of writing


@pytest.mark.parametrize("name", sorted(EXPECTED_FAILURES))
def test_unsupported_and_corrupt_samples_are_refused(samples: Path, name: str) -> None:
    for member, data in unpack((samples / name).read_bytes(), name):
        with pytest.raises(RadolanError, match=EXPECTED_FAILURES[name]):
            decode(data, source=member)


@pytest.mark.parametrize("name", ODIM)
def test_odim_samples_decode_but_cannot_be_encoded_as_binary(samples: Path, name: str) -> None:
    for member, data in unpack((samples / name).read_bytes(), name):
        field = decode(data, source=member)
        assert field.grid.name == "DE1200"
        assert field.grid.ellipsoid == "wgs84"
        assert 0.40 < field.nodata.mean() < 0.50  # README: 43.5 %, 47.1 %, 48.0 %
        with pytest.raises(RadolanError, match="no RADOLAN binary header"):
            encode(field)


# --- reading: containers by magic bytes, archives, read_one ---------------------------------------


def _copy(samples: Path, name: str, target: Path) -> Path:
    shutil.copyfile(samples / name, target)
    return target


def test_read_detects_gzip_by_magic_not_by_name(samples: Path, tmp_path: Path) -> None:
    field = read_one(_copy(samples, RW_GZ, tmp_path / "product.bin"))
    assert encode(field) == gzip.decompress((samples / RW_GZ).read_bytes())


def test_read_accepts_a_plain_product_named_gz(samples: Path, tmp_path: Path) -> None:
    field = read_one(_copy(samples, RW, tmp_path / "product.gz"))
    assert encode(field) == (samples / RW).read_bytes()


def test_read_detects_bz2_by_magic_not_by_name(samples: Path, tmp_path: Path) -> None:
    plain = (samples / RY).read_bytes()
    (tmp_path / "product.tar").write_bytes(bz2.compress(plain))
    assert encode(read_one(tmp_path / "product.tar")) == plain


def test_read_returns_tar_members_in_name_order(samples: Path, tmp_path: Path) -> None:
    """Members are stored z, a, m; ``read`` must order them a, m, z, whatever the archive order."""
    plain = (samples / RY).read_bytes()
    products = {name: shrink(plain, 3, 2 + i) for i, name in enumerate(("z", "a", "m"))}
    (tmp_path / "bundle.gz").write_bytes(_tar(products))  # a plain tar, misleadingly named
    fields = read(tmp_path / "bundle.gz")
    assert [f.source.rsplit(":", 1)[1] for f in fields] == ["a", "m", "z"]
    assert [encode(f) for f in fields] == [products[n] for n in ("a", "m", "z")]


def test_read_of_a_real_odim_tar_gives_both_lead_times_in_order(samples: Path) -> None:
    fields = read(samples / ODIM_RV_TAR)
    assert [f.source.rsplit(":", 1)[1] for f in fields] == [
        "composite_rv_20250923_0855_000-hd5",
        "composite_rv_20250923_0855_050-hd5",
    ]
    assert [f.header.lead_minutes for f in fields] == [0, 50]
    assert all(f.time == datetime(2025, 9, 23, 8, 55, tzinfo=UTC) for f in fields)


def test_read_of_the_rv_forecast_bundle_gives_25_leads_in_order(samples: Path) -> None:
    fields = read(samples / "wradlib-data/radvor/DE1200_RV2210180700.tar.bz2")
    assert [f.header.lead_minutes for f in fields] == list(range(0, 125, 5))
    assert [f.source[-3:] for f in fields] == [f"{lead:03d}" for lead in range(0, 125, 5)]
    assert {f.time for f in fields} == {datetime(2022, 10, 18, 7, 0, tzinfo=UTC)}


def test_read_one_refuses_a_multi_member_tar(samples: Path) -> None:
    with pytest.raises(RadolanError, match="holds 2 products") as raised:
        read_one(samples / ODIM_RV_TAR)
    assert ODIM_RV_TAR in str(raised.value)


def test_read_one_of_a_single_member_tar_bz2(samples: Path) -> None:
    field = read_one(samples / RV_BUNDLE)
    assert field.product == "RV"
    assert field.source.endswith(":DE1200_RV2305081330_000")
    assert field.time == datetime(2023, 5, 8, 13, 30, tzinfo=UTC)


# --- writing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "magic"), [("", b"RW"), (".gz", b"\x1f\x8b"), (".bz2", b"BZh")])
def test_write_reads_back_identical_and_leaves_nothing_else(
    samples: Path, tmp_path: Path, suffix: str, magic: bytes
) -> None:
    original = (samples / RW).read_bytes()
    target = tmp_path / f"out{suffix}"
    write(decode(original), target)
    assert target.read_bytes().startswith(magic)
    assert encode(read_one(target)) == original
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_write_renames_a_temporary_file_from_the_same_directory(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str) -> None:
        renames.append((Path(src), Path(dst)))
        assert Path(src).read_bytes() == (samples / RW).read_bytes()  # complete before rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    target = tmp_path / "out"
    target.write_bytes(b"old")
    write(read_one(samples / RW), target)
    ((src, dst),) = renames
    assert dst == target
    assert src.parent == tmp_path
    assert src != target
    assert not src.exists()
    assert target.read_bytes() == (samples / RW).read_bytes()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    target = tmp_path / "out.gz"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk gone"):
        write(read_one(samples / RW), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.gz"]


def test_write_refuses_values_that_do_not_fit_the_header(samples: Path, tmp_path: Path) -> None:
    field = read_one(samples / RW)
    bad = field.replace(values=field.values[:-1])
    with pytest.raises(RadolanError, match="do not match the header grid"):
        write(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_encode_writes_nan_as_canonical_nodata_and_rounds_to_precision(samples: Path) -> None:
    field = read_one(samples / RW)
    planes = {k: getattr(field, k).copy() for k in ("values", "nodata", "secondary", "clutter")}
    planes["values"][0, :3] = np.nan, 1.26, 999.0  # 999 mm saturates at 4095 x 0.1 mm
    planes["nodata"][0, :3] = False  # NaN alone must make a pixel no-data
    planes["secondary"][0, :3] = True, False, True
    planes["clutter"][0, :3] = False, True, False
    words = np.frombuffer(_split(encode(field.replace(**planes)))[1], "<u2")
    assert list(words[:3]) == [0x29C4 | 0x1000, 13 | 0x8000, 4095 | 0x1000]


# --- field semantics ----------------------------------------------------------------------------


def test_time_is_utc_aware_and_equals_the_header_time(samples: Path) -> None:
    field = read_one(samples / RW)
    assert field.time == datetime(2019, 7, 1, 9, 50, tzinfo=UTC)
    assert field.time.utcoffset() == timedelta(0)
    assert field.interval == timedelta(hours=1)


@pytest.mark.parametrize(
    ("name", "exponent", "interval", "vmax", "nodata_share"),
    [  # README: value range and no-data share of each file
        (RW, -1, timedelta(hours=1), 30.7, 0.203),
        (RY, -2, timedelta(minutes=5), 2.9, 0.220),
        (RE, -3, timedelta(minutes=60), 0.935, 0.754),
    ],
)
def test_two_byte_values_are_raw_times_precision_with_flag_planes(
    samples: Path, name: str, exponent: int, interval: timedelta, vmax: float, nodata_share: float
) -> None:
    raw = raw_product(samples / name)
    field = decode(raw)
    words = np.frombuffer(_split(raw)[1], "<u2").reshape(field.values.shape)
    assert field.header.precision == pytest.approx(10.0**exponent)
    assert field.interval == interval
    assert field.values.dtype == np.float32
    np.testing.assert_array_equal(field.nodata, (words & 0x2000) != 0)
    np.testing.assert_array_equal(field.secondary, (words & 0x1000) != 0)
    np.testing.assert_array_equal(field.clutter, (words & 0x8000) != 0)
    np.testing.assert_array_equal(np.isnan(field.values), field.nodata)
    valid = ~field.nodata
    expected = (words[valid] & 0x0FFF) * 10.0**exponent
    np.testing.assert_allclose(field.values[valid], expected, rtol=1e-6)
    assert np.nanmin(field.values) == 0.0
    assert np.nanmax(field.values) == pytest.approx(vmax, abs=10.0**exponent / 2)
    assert field.nodata.mean() == pytest.approx(nodata_share, abs=0.0006)


def test_rvp6_values_are_dbz_with_250_as_nodata(samples: Path) -> None:
    raw = (samples / RX).read_bytes()
    field = decode(raw)
    codes = np.frombuffer(_split(raw)[1], np.uint8).reshape(900, 900)
    assert field.unit == "dBZ"
    np.testing.assert_array_equal(field.nodata, codes == 250)
    np.testing.assert_array_equal(np.isnan(field.values), codes >= 249)
    valid = codes < 249
    np.testing.assert_allclose(field.values[valid], codes[valid] / 2 - 32.5, rtol=0, atol=1e-6)
    assert (np.nanmin(field.values), np.nanmax(field.values)) == (-32.5, 49.5)  # README
    assert field.nodata.mean() == pytest.approx(0.267, abs=0.0006)


def test_row_zero_is_south(samples: Path) -> None:
    """The static no-data blobs SE of Feldberg (47.72 N 8.20 E) and on the IJsselmeer (52.39 N
    5.17 E) are no-data where the grid puts them, while their north-south mirror images and
    every listed radar's own pixel carry data."""
    field = read_one(samples / RY)
    rows = field.values.shape[0]
    for lon, lat in ((8.20, 47.72), (5.17, 52.39)):
        row, col = _pixel(field.grid, lon, lat)
        assert field.nodata[row - 2 : row + 3, col - 2 : col + 3].mean() > 0.8
        mirror = rows - 1 - row
        assert not field.nodata[mirror - 2 : mirror + 3, col - 2 : col + 3].any()
    for site in field.header.sites:
        row, col = _pixel(field.grid, SITES[site].lon, SITES[site].lat)
        assert not field.nodata[row, col], site


def test_header_mapping_of_an_hourly_product(samples: Path) -> None:
    header = read_one(samples / RW).header
    assert (header["PR"], header["INT"], header["GP"], header["VS"]) == (-1, 60, (900, 900), 3)
    assert header.sites == header["MS"]
    assert len(header.sites) == 16
    assert "nhb" not in header.sites  # README: Neuheilenbach missing
    assert "VV" not in header
    assert header.lead_minutes == 0
    assert header.raw == _split((samples / RW).read_bytes())[0]


def test_header_mapping_of_forecasts_and_version_5(samples: Path) -> None:
    rq = read_one(samples / RQ)
    assert (rq.header["VV"], rq.header["PR"], rq.header["INT"]) == (60, -1, 60)
    assert rq.time == datetime(2022, 10, 18, 7, 0, tzinfo=UTC)
    assert rq.header["VS"] == 5
    assert rq.grid.ellipsoid == "wgs84"
    rv = read_one(samples / RV_BUNDLE)
    assert (rv.header["VV"], rv.header["GP"], rv.header["PR"]) == (0, (1200, 1100), -2)
    assert len(rv.header.sites) == 17
    assert all(len(s) == 3 for s in rv.header.sites)


def test_header_mapping_of_reanalysis_and_accumulations(samples: Path) -> None:
    yw = read_one(samples / YW).header
    assert (yw["VR"], yw["U"], yw["GP"], yw.interval) == (
        "2017.002",
        0,
        (1100, 900),
        timedelta(minutes=5),
    )
    assert not {"asb", "nhb"} & set(yw.sites)  # README: asb, nhb missing
    sf = read_one(samples / SF).header
    assert sf.interval == timedelta(days=1)
    assert sf["ST"] == dict.fromkeys(sf.sites, 24)  # every radar contributed 24 hours
    assert read_one(samples / W1).interval == timedelta(days=7)  # INT counts 10 minutes
    fz = read_one(samples / FZ)
    assert fz.values.shape == (450, 450)
    assert fz.grid.resolution == 2000.0


# --- bad input: RadolanError, never anything else ------------------------------------------------


@pytest.fixture(scope="module")
def small(samples: Path) -> dict[str, bytes]:
    """Valid 6 x 5 products built from real headers of each generation and encoding."""
    names = {"RW": RW, "RX": RX, "YW": YW, "RE": RE, "SF": SF, "RV": RV_BUNDLE}
    return {k: shrink(raw_product(samples / v), 6, 5) for k, v in names.items()}


def test_shrunk_products_are_valid(small: dict[str, bytes]) -> None:
    for data in small.values():
        assert encode(decode(data)) == data


@pytest.mark.parametrize("name", [RW, RX, RV_BUNDLE])
def test_truncation_anywhere_raises(samples: Path, name: str) -> None:
    data = raw_product(samples / name)
    etx = data.index(b"\x03")
    offsets = {0, 1, 2, 8, 16, 17, 20, etx // 2, etx - 1, etx, etx + 1, etx + 2, len(data) - 1}
    offsets |= set(random.Random(7).sample(range(len(data)), 20))
    for offset in sorted(offsets):
        with pytest.raises(RadolanError):
            decode(data[:offset])
    with pytest.raises(RadolanError, match=r"truncated: \d+ bytes but header BY says"):
        decode(data[: etx + 100])


def test_appended_bytes_raise(samples: Path) -> None:
    data = (samples / RW).read_bytes()
    for tail in (b"\x00", b"\x03", data[:1000]):
        with pytest.raises(RadolanError, match="over-long"):
            decode(data + tail)


def test_every_header_byte_mutation_raises_or_round_trips(small: dict[str, bytes]) -> None:
    """Flip each header byte to digits, blanks, letters, ETX and binary: a mutant either is still
    a valid product (e.g. a changed site name), and then re-encodes to itself, or is refused."""
    refused = 0
    for data in small.values():
        for pos in range(data.index(b"\x03") + 1):
            for value in b"0159 x-E<,Z\x03\x00\xff":
                mutant = data[:pos] + bytes([value]) + data[pos + 1 :]
                try:
                    assert encode(decode(mutant)) == mutant
                except RadolanError:
                    refused += 1
    assert refused > 5000  # about half of the ~15000 mutants are garbage


def test_grid_size_that_does_not_match_the_payload_raises(small: dict[str, bytes]) -> None:
    data = small["RW"]
    with pytest.raises(RadolanError, match=r"payload of 60 bytes does not match grid 5x7"):
        decode(data.replace(b"GP   6x   5", b"GP   5x   7"))  # BY still right, grid wrong
    header = _split(shrink(data, 5, 5))[0]  # GP and BY agree on 5 x 5 ...
    with pytest.raises(RadolanError, match="over-long"):
        decode(header + _split(data)[1])  # ... but the 6 x 5 payload follows
    with pytest.raises(RadolanError, match="unknown grid size 1000x1000"):
        decode(shrink(data, 1000, 1000, payload=bytes(2_000_000)))


def test_unknown_product_id_raises(small: dict[str, bytes]) -> None:
    with pytest.raises(RadolanError, match="unknown product encoding for product id 'ZZ'"):
        decode(b"ZZ" + small["RW"][2:])
    with pytest.raises(RadolanError, match="bad product id"):
        decode(b"rw" + small["RW"][2:])


def test_empty_and_random_bytes_raise() -> None:
    with pytest.raises(RadolanError, match="empty input"):
        decode(b"")
    rng = random.Random(11)
    for size in (1, 17, 100, 5000, 100_000):
        for _ in range(20):
            with pytest.raises(RadolanError):
                decode(rng.randbytes(size))


def _peak_allocation(data: bytes) -> int:
    with pytest.raises(RadolanError):  # once to fill the caches (regexes, projections)
        decode(data)
    tracemalloc.start()
    try:
        with pytest.raises(RadolanError):
            decode(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("rows", "cols", "by"),
    [(9999, 9999, None), (4800, 4400, None), (6, 5, 9_999_999)],
)
def test_huge_sizes_in_the_header_allocate_nothing(
    small: dict[str, bytes], rows: int, cols: int, by: int | None
) -> None:
    """A header claiming a DE4800 or 9999 x 9999 grid, or 10 MB, over a few bytes of payload."""
    data = shrink(small["RW"], rows, cols, payload=bytes(60))
    if by is not None:
        data = data.replace(data[17:26], b"BY%7d" % by)
    assert _peak_allocation(data) < 2 * len(data) + 64 * 1024


def test_mismatched_full_size_product_allocates_at_most_its_size(samples: Path) -> None:
    data = (samples / RW).read_bytes().replace(b"BY1620149", b"BY9999999")
    assert _peak_allocation(data) < 2 * len(data) + 64 * 1024


# --- bad containers -------------------------------------------------------------------------------


def _read_bytes(tmp_path: Path, data: bytes) -> list[Field]:
    path = tmp_path / "input"
    path.write_bytes(data)
    return read(path)


def test_corrupt_gzip_and_bz2_streams_raise(samples: Path, tmp_path: Path) -> None:
    real_gz = (samples / RW_GZ).read_bytes()
    real_bz2 = (samples / RV_BUNDLE).read_bytes()
    cut = {
        "gzip": [real_gz[:10], real_gz[: len(real_gz) // 2]],
        "bz2": [real_bz2[:4], real_bz2[: len(real_bz2) // 2]],
    }
    flipped = bytearray(real_gz)
    flipped[len(flipped) // 2] ^= 0xFF  # breaks the deflate stream or its CRC
    garbled = {"gzip": [b"\x1f\x8b" + bytes(100), bytes(flipped)], "bz2": [b"BZh9" + bytes(100)]}
    for kind in ("gzip", "bz2"):
        for data in cut[kind]:  # ends before the end marker: possibly still being written
            with pytest.raises(RadolanError, match=f"truncated {kind} stream") as caught:
                _read_bytes(tmp_path, data)
            assert caught.value.kind == "truncated"
        for data in garbled[kind]:
            with pytest.raises(RadolanError, match=f"corrupt {kind} stream") as caught:
                _read_bytes(tmp_path, data)
            assert caught.value.kind == "corrupt"


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_decompression_bomb_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: Callable[[bytes], bytes]
) -> None:
    monkeypatch.setattr(radolan_io, "MAX_STREAM_BYTES", 1 << 20)
    bomb = compress(bytes(8 << 20))
    assert len(bomb) < 40_000
    with pytest.raises(RadolanError, match="expands beyond 1048576 bytes"):
        _read_bytes(tmp_path, bomb)


def test_many_small_compressed_members_share_one_expansion_limit(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six gzip members of 0.72 MB each pass a 1 MiB limit one by one, not together."""
    monkeypatch.setattr(radolan_io, "MAX_STREAM_BYTES", 1 << 20)
    member = gzip.compress(shrink((samples / RY).read_bytes(), 600, 600))
    assert len(_read_bytes(tmp_path, _tar({"a": member}))) == 1
    with pytest.raises(RadolanError, match=r"input:b: gzip stream expands beyond 1048576"):
        _read_bytes(tmp_path, _tar(dict.fromkeys("abcdef", member)))


def test_corrupt_tar_raises(samples: Path, tmp_path: Path) -> None:
    real = (samples / ODIM_RV_TAR).read_bytes()
    header_only = real[:512]
    garbage = bytearray(real[:1024])
    garbage[100:150] = b"\xff" * 50  # mode, uid, gid, size fields
    no_files = io.BytesIO()
    with tarfile.open(fileobj=no_files, mode="w") as archive:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
    damaged = bytearray(real)
    damaged[100:150] = b"\xff" * 50
    for data, reason, kind in [
        (real[: len(real) // 2], "truncated tar archive", "truncated"),
        (header_only, "truncated tar archive", "truncated"),
        (bytes(garbage), "truncated tar archive: bad checksum", "truncated"),
        (bytes(damaged), "corrupt tar archive: bad checksum", "corrupt"),
        (no_files.getvalue(), "tar archive holds no files", "corrupt"),
    ]:
        with pytest.raises(RadolanError, match=reason) as caught:
            _read_bytes(tmp_path, data)
        assert caught.value.kind == kind


def test_tar_with_a_non_product_member_names_the_member(samples: Path, tmp_path: Path) -> None:
    archive = _tar({"a": (samples / RY).read_bytes(), "notes.txt": b"hello"})
    with pytest.raises(RadolanError, match=r"input:notes\.txt.*not a RADOLAN product"):
        _read_bytes(tmp_path, archive)


def test_truncated_or_mutated_hdf5_raises(samples: Path) -> None:
    data = (samples / ODIM_RW).read_bytes()
    for size in (8, 100, 512, 2048, 8192, len(data) // 2, len(data) - 1):
        with pytest.raises(RadolanError, match="ODIM-HDF5"):
            decode(data[:size])
    with pytest.raises(RadolanError, match="ODIM-HDF5"):
        decode(data[:8] + bytes(10_000))
    rng = random.Random(3)
    refused = 0
    for _ in range(60):
        mutant = bytearray(data)
        for pos in rng.sample(range(2048), 4):  # superblock and root object headers
            mutant[pos] = rng.randrange(256)
        try:
            decode(bytes(mutant))
        except RadolanError:
            refused += 1
    assert refused > 45  # 57 of these 60 at the time of writing; the rest still decode


def test_huge_precision_exponent_is_refused(samples: Path) -> None:
    name = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
    product = raw_product(samples / name)
    assert b"PR E-01" in product
    with pytest.raises(RadolanError, match="PR"):
        decode(product.replace(b"PR E-01", b"PR E+99", 1))
