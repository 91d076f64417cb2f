"""ODIM-HDF5 composites on the real DWD samples: reading, writing that mirrors the input,
tar bundles, hole detection on DE1200, and refusal of bad files.

The truth is read independently of the codec: with h5py straight from the files (groups,
attributes, stored codes, storage layout), with :mod:`tarfile` for archives, from the sample
README (times, intervals, leads) and with the haversine formula for radar discs.
"""

from __future__ import annotations

import bz2
import io
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest

from radinfill import code_version, holes
from radinfill.radolan import (
    Field,
    RadolanError,
    decode,
    dumps,
    dumps_tar,
    hdf5,
    loads,
    read,
    write,
)
from radinfill.radolan.sites import OPERATIONAL
from tests.radolan_samples import haversine_km, unpack

ODIM_RW = "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"
ODIM_RV_TAR = "brightsky/tests/data/composite_rv_20250923_0855.tar"
RV_MEMBERS = ("composite_rv_20250923_0855_000-hd5", "composite_rv_20250923_0855_050-hd5")
#: (member, nominal time, interval, lead) from the sample README.
FACTS = {
    ODIM_RW: (datetime(2025, 9, 22, 5, 40, tzinfo=UTC), timedelta(minutes=60), 0),
    f"{ODIM_RV_TAR}:{RV_MEMBERS[0]}": (
        datetime(2025, 9, 23, 8, 55, tzinfo=UTC),
        timedelta(minutes=5),
        0,
    ),
    f"{ODIM_RV_TAR}:{RV_MEMBERS[1]}": (
        datetime(2025, 9, 23, 8, 55, tzinfo=UTC),
        timedelta(minutes=5),
        50,
    ),
}
DATA = "dataset1/data1/data"


def _products(samples: Path) -> list[tuple[str, bytes]]:
    """Every ODIM product of the samples: the plain file and each tar member (stdlib unpacked)."""
    files = (ODIM_RW, ODIM_RV_TAR)
    return [p for name in files for p in unpack((samples / name).read_bytes(), name)]


def _scaling(h5: h5py.File) -> dict[str, float]:
    return {k: float(v) for k, v in h5["dataset1/data1/what"].attrs.items() if k != "quantity"}


def _tree(data: bytes) -> dict[str, tuple]:
    """Every group and dataset of an HDF5 file with its attributes (type and bytes of each
    value) and, for datasets, dtype, shape, chunks, filters and the stored values."""
    found: dict[str, tuple] = {}

    def attrs(obj: h5py.HLObject) -> dict[str, tuple[str, bytes]]:
        return {k: (type(v).__name__, np.asarray(v).tobytes()) for k, v in obj.attrs.items()}

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Dataset):
            layout = (obj.dtype.str, obj.shape, obj.chunks, obj.compression)
            filters = (obj.compression_opts, obj.shuffle, obj.fletcher32, obj.fillvalue)
            found[name] = ("dataset", attrs(obj), layout, filters, obj[()].tobytes())
        else:
            found[name] = ("group", attrs(obj))

    with h5py.File(io.BytesIO(data), "r") as h5:
        found["/"] = ("group", attrs(h5))
        h5.visititems(visit)
    return found


def _filled(field: Field, rng: np.random.Generator) -> tuple[Field, np.ndarray]:
    """``field`` with the no-data pixels of its western half given random amounts (0.05-20 mm),
    as the service's ``infilled`` does; returns the field and the infilled pixels (row 0 south)."""
    hole = field.nodata.copy()
    hole[:, hole.shape[1] // 2 :] = False
    values = field.values.copy()
    values[hole] = rng.uniform(0.05, 20.0, int(hole.sum())).astype(np.float32)
    return field.replace(values=values, nodata=field.nodata & ~hole), hole


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(3))
def test_read_keeps_values_nodata_and_undetect_apart(samples: Path, index: int) -> None:
    name, data = _products(samples)[index]
    field = decode(data, source=name)
    with h5py.File(io.BytesIO(data), "r") as h5:
        codes = h5[DATA][()][::-1]
        s = _scaling(h5)
    nodata, undetect = codes == s["nodata"], codes == s["undetect"]
    assert nodata.any()
    assert undetect.any()
    np.testing.assert_array_equal(field.nodata, nodata)
    np.testing.assert_array_equal(field.undetect, undetect)
    assert np.isnan(field.values[nodata]).all()
    assert (field.values[undetect] == 0).all()
    valid = ~nodata & ~undetect
    np.testing.assert_allclose(
        field.values[valid], codes[valid] * s["gain"] + s["offset"], rtol=1e-6, atol=1e-6
    )
    assert field.original == data


@pytest.mark.parametrize("index", range(3))
def test_read_gives_time_interval_lead_and_sites(samples: Path, index: int) -> None:
    name, data = _products(samples)[index]
    field = decode(data, source=name)
    time, interval, lead = FACTS[name]
    assert (field.time, field.interval, field.header.lead_minutes) == (time, interval, lead)
    assert field.product == ("RW" if name == ODIM_RW else "RV")
    with h5py.File(io.BytesIO(data), "r") as h5:
        nodes = h5["how"].attrs["nodes"].decode().replace("'", "").split(",")
    assert field.header.sites == tuple(n[2:] for n in nodes)
    assert set(field.header.sites) == set(OPERATIONAL)


def _odim_variant(data: bytes, edit: Callable[[h5py.File], None]) -> bytes:
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as h5:
        edit(h5)
    return buffer.getvalue()


def test_missing_nodes_are_not_listed_as_reporting(samples: Path) -> None:
    _, data = _products(samples)[1]

    def miss_boo_and_ess(h5: h5py.File) -> None:
        h5["how"].attrs["missing_nodes"] = np.bytes_(b"'deboo','deess'")

    field = decode(_odim_variant(data, miss_boo_and_ess))
    assert set(field.header.sites) == set(OPERATIONAL) - {"boo", "ess"}


# --- writing: an unmodified field, an infilled one ------------------------------------------------


@pytest.mark.parametrize("index", range(3))
def test_unmodified_field_is_written_back_unchanged(samples: Path, index: int) -> None:
    name, data = _products(samples)[index]
    out = dumps(decode(data, source=name), name.rsplit(":", 1)[-1])
    assert _tree(out) == _tree(data)
    assert out == data


@pytest.mark.parametrize("index", range(3))
def test_infilled_field_mirrors_its_input_with_a_quality_field(samples: Path, index: int) -> None:
    name, data = _products(samples)[index]
    field, hole = _filled(decode(data, source=name), np.random.default_rng(index))
    out = hdf5.encode(field)
    before, after = _tree(data), _tree(out)
    quality = {k: v for k, v in after.items() if k.startswith("dataset1/quality1")}
    assert set(after) - set(quality) == set(before)
    for key, entry in before.items():
        if key != DATA:
            assert after[key] == entry, key
    assert after[DATA][:4] == before[DATA][:4]  # attributes, dtype, shape, chunks, filters

    with h5py.File(io.BytesIO(data), "r") as h5:
        codes_in, s = h5[DATA][()], _scaling(h5)
    with h5py.File(io.BytesIO(out), "r") as h5:
        codes_out = h5[DATA][()]
        flag, group = h5["dataset1/quality1/data"], h5["dataset1/quality1"]
        assert group["how"].attrs["task"] == f"radinfill {code_version()}".encode()
        what = {k: float(v) for k, v in group["what"].attrs.items()}
        assert what == {"gain": 1.0, "offset": 0.0, "nodata": 255.0, "undetect": 254.0}
        assert (flag.dtype, flag.chunks, flag.compression) == (
            np.uint8,
            h5[DATA].chunks,
            h5[DATA].compression,
        )
        np.testing.assert_array_equal(flag[()], hole[::-1].astype(np.uint8))
    north = hole[::-1]
    expected = np.rint((field.values[::-1][north].astype(np.float64) - s["offset"]) / s["gain"])
    np.testing.assert_array_equal(codes_out[north], expected)
    np.testing.assert_array_equal(codes_out[~north], codes_in[~north])  # undetect codes too
    assert (codes_in[north] == s["nodata"]).all()


@pytest.mark.parametrize("index", range(3))
def test_noise_below_half_a_step_leaves_measured_codes_alone(samples: Path, index: int) -> None:
    """A model that passes measured pixels through with float noise (here up to 0.4 of a
    quantisation step, also on undetect pixels, whose value 0 is not a code's value) must not
    change their stored codes; only the infilled pixels are rewritten."""
    name, data = _products(samples)[index]
    field, hole = _filled(decode(data, source=name), np.random.default_rng(10 + index))
    with h5py.File(io.BytesIO(data), "r") as h5:
        codes_in, gain = h5[DATA][()], _scaling(h5)["gain"]
    noise = np.random.default_rng(index).uniform(-0.4, 0.4, field.values.shape) * gain
    noisy = np.where(hole, field.values, field.values + noise.astype(np.float32))
    with h5py.File(io.BytesIO(hdf5.encode(field.replace(values=noisy))), "r") as h5:
        codes_out = h5[DATA][()]
    np.testing.assert_array_equal(codes_out[~hole[::-1]], codes_in[~hole[::-1]])
    assert (codes_out[hole[::-1]] != codes_in[hole[::-1]]).all()


def test_written_field_reads_back_with_the_infilled_values(samples: Path, tmp_path: Path) -> None:
    name, data = _products(samples)[0]
    field, hole = _filled(decode(data, source=name), np.random.default_rng(5))
    write(field, tmp_path / "rw.hdf5")
    (back,) = read(tmp_path / "rw.hdf5")
    np.testing.assert_allclose(back.values[hole], field.values[hole], atol=0.05 + 1e-6)
    np.testing.assert_array_equal(back.nodata, field.nodata)
    np.testing.assert_array_equal(back.undetect, decode(data).undetect)


def test_values_that_became_no_data_are_stored_as_the_nodata_code(samples: Path) -> None:
    name, data = _products(samples)[0]
    field = decode(data, source=name)
    gone = ~field.nodata & ~field.undetect
    out = hdf5.encode(field.replace(values=np.where(gone, np.nan, field.values)))
    with h5py.File(io.BytesIO(out), "r") as h5:
        codes, s = h5[DATA][()][::-1], _scaling(h5)
        assert not h5["dataset1/quality1/data"][()].any()  # nothing was infilled
    assert (codes[gone] == s["nodata"]).all()


def test_values_beyond_the_type_saturate_below_the_nodata_code(samples: Path) -> None:
    name, data = _products(samples)[0]
    field, hole = _filled(decode(data, source=name), np.random.default_rng(6))
    values = np.where(hole, np.float32(1e9), field.values)
    out = hdf5.encode(field.replace(values=values))
    with h5py.File(io.BytesIO(out), "r") as h5:
        codes = h5[DATA][()][::-1]
    assert (codes[hole] == np.iinfo(np.uint16).max - 1).all()  # RW: nodata is 65535


def test_binary_fields_are_written_as_binary_and_not_as_odim(samples: Path) -> None:
    path = samples / "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin"
    (field,) = read(path)
    assert dumps(field) == path.read_bytes()
    with pytest.raises(RadolanError, match="no ODIM-HDF5 original") as caught:
        hdf5.encode(field)
    assert caught.value.kind == "unsupported"


def test_values_on_another_grid_are_refused(samples: Path) -> None:
    name, data = _products(samples)[0]
    field = decode(data, source=name)
    with pytest.raises(RadolanError, match="do not match the ODIM grid") as caught:
        hdf5.encode(field.replace(values=field.values[1:]))
    assert caught.value.kind == "wrong_grid"


# --- tar bundles ---------------------------------------------------------------------------------


def _members(archive: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def _meta(info: tarfile.TarInfo) -> tuple:
    return (info.name, info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime, info.type)


def test_tar_is_rebuilt_with_only_the_replaced_member_changed(samples: Path) -> None:
    archive = (samples / ODIM_RV_TAR).read_bytes()
    fields = read(samples / ODIM_RV_TAR)
    forecast, hole = _filled(fields[1], np.random.default_rng(7))
    out = dumps_tar(archive, {RV_MEMBERS[1]: forecast}, source=ODIM_RV_TAR)
    old, new = _members(archive), _members(out)
    assert [_meta(m) for m, _ in new] == [_meta(m) for m, _ in old]
    assert new[0][1] == old[0][1]
    first = old[1][0].offset  # the untouched first member, header blocks included
    assert out[:first] == archive[:first]
    assert new[1][1] == hdf5.encode(forecast)
    assert new[1][0].size == len(new[1][1]) != old[1][0].size
    assert len(out) % tarfile.RECORDSIZE == 0
    with h5py.File(io.BytesIO(new[1][1]), "r") as h5:
        np.testing.assert_array_equal(h5["dataset1/quality1/data"][()], hole[::-1])


def test_tar_without_replacements_is_the_input(samples: Path) -> None:
    archive = (samples / ODIM_RV_TAR).read_bytes()
    assert dumps_tar(archive, {}) == archive


def test_tar_inside_bz2_is_rebuilt_inside_bz2(samples: Path) -> None:
    archive = (samples / ODIM_RV_TAR).read_bytes()
    forecast, _ = _filled(read(samples / ODIM_RV_TAR)[1], np.random.default_rng(8))
    out = dumps_tar(bz2.compress(archive), {RV_MEMBERS[1]: forecast})
    assert bz2.decompress(out) == dumps_tar(archive, {RV_MEMBERS[1]: forecast})


def test_binary_forecast_bundle_is_rebuilt_the_same_way(samples: Path) -> None:
    """The 25-member tar.bz2 of binary RV leads: one lead replaced, 24 byte-identical."""
    name = "wradlib-data/radvor/DE1200_RV2210180700.tar.bz2"
    archive = (samples / name).read_bytes()
    fields = read(samples / name)
    lead, hole = _filled(fields[5], np.random.default_rng(9))
    member = lead.source.rsplit(":", 1)[1]
    out = dumps_tar(archive, {member: lead})
    assert out[:3] == b"BZh"
    old, new = _members(bz2.decompress(archive)), _members(bz2.decompress(out))
    assert [_meta(m) for m, _ in new] == [_meta(m) for m, _ in old]
    changed = [m.name for (m, data), (_, before) in zip(new, old, strict=True) if data != before]
    assert changed == [member]
    (back,) = (f for f in loads(out) if f.source.endswith(member))
    np.testing.assert_allclose(back.values[hole], lead.values[hole], atol=0.005 + 1e-6)


def test_tar_replacement_of_an_absent_member_is_refused(samples: Path) -> None:
    archive = (samples / ODIM_RV_TAR).read_bytes()
    field = read(samples / ODIM_RV_TAR)[0]
    with pytest.raises(RadolanError, match="no file member") as caught:
        dumps_tar(archive, {"composite_rv_20250923_0855_005-hd5": field}, source="bundle.tar")
    assert (caught.value.kind, caught.value.source) == ("unsupported", "bundle.tar")
    with pytest.raises(RadolanError, match="truncated tar") as cut:
        dumps_tar(archive[:1000], {RV_MEMBERS[0]: field})
    assert cut.value.kind == "truncated"


# --- hole detection on DE1200 --------------------------------------------------------------------


@pytest.mark.parametrize("index", range(3))
def test_real_odim_composites_miss_no_radar(samples: Path, index: int) -> None:
    name, data = _products(samples)[index]
    field = decode(data, source=name)
    report = holes.detect(field)
    assert report.missing_radars == frozenset()
    assert report.causes["radar"] == 0
    np.testing.assert_array_equal(report.failure | report.outside, field.nodata)
    assert report.radius_km == 150.0


def test_a_radar_dropped_from_the_nodes_leaves_a_radar_hole_on_its_disc(samples: Path) -> None:
    """Boo is taken out of ``how/nodes`` and the part of its 150 km disc no other radar covers
    is blanked in the stored data: the detector must name boo and mark that part RADAR."""
    name, data = _products(samples)[0]
    grid = decode(data).grid
    lon, lat = grid.lonlat()
    others = np.min([haversine_km(lon, lat, s) for s in OPERATIONAL if s != "boo"], axis=0)
    own = haversine_km(lon, lat, "boo")
    exclusive = (own <= 150.0) & (others > 150.0)

    def outage(h5: h5py.File) -> None:
        nodes = h5["how"].attrs["nodes"].decode().split(",")
        h5["how"].attrs["nodes"] = np.bytes_(",".join(n for n in nodes if n != "'deboo'"))
        codes = h5[DATA][()]
        codes[exclusive[::-1]] = _scaling(h5)["nodata"]
        h5[DATA][...] = codes

    field = decode(_odim_variant(data, outage), source=name)
    assert "boo" not in field.header.sites
    report = holes.detect(field)
    assert report.missing_radars == frozenset({"boo"})
    inner = (own <= 148.0) & (others > 152.0)  # clear of disc edges
    assert inner.sum() > 10_000
    assert (report.labels[inner] == holes.RADAR).all()
    assert (own[report.labels == holes.RADAR] <= 151.0).all()


# --- bad files ---------------------------------------------------------------------------------


def _drop(path: str) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        del h5[path]

    return edit


def _attr(path: str, key: str, value: object) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        h5[path].attrs[key] = value

    return edit


def _narrow_data(h5: h5py.File) -> None:
    """One-byte codes under the scaling of two-byte ones (no-data 65535)."""
    del h5[DATA]
    h5.create_dataset(DATA, data=np.zeros((1200, 1100), dtype=np.uint8))


def _smaller_data(h5: h5py.File) -> None:
    del h5[DATA]
    h5.create_dataset(DATA, data=np.zeros((1100, 1100), dtype=np.uint16))


#: (edit, kind, reason, whether the writer reads what is broken: it needs the data, their
#: scaling and grid, not the times and sites).
BAD = [
    (_drop("where"), "corrupt", "KeyError", True),
    (_drop("dataset1/what"), "corrupt", "KeyError", False),
    (_drop(DATA), "corrupt", "KeyError", True),
    (_drop("how"), "corrupt", "KeyError", False),
    (_attr("/", "Conventions", np.bytes_(b"CF-1.8")), "unsupported", "not ODIM_H5", True),
    (_attr("where", "xsize", np.uint64(1000)), "wrong_grid", "grid", True),
    (_attr("where", "ysize", np.uint64(10**12)), "wrong_grid", "grid", True),
    (_attr("where", "LL_lon", 4.0), "wrong_grid", "corner LL", True),
    (_smaller_data, "wrong_grid", "does not match 1200x1100", True),
    (_narrow_data, "corrupt", "nodata code 65535.0 is no value of the data type uint8", True),
    (_attr("dataset1/data1/what", "undetect", 0.5), "corrupt", "undetect code 0.5 is no", True),
    (_attr("dataset1/data1/what", "gain", 0.0), "corrupt", "not usable", True),
    (_attr("dataset1/data1/what", "offset", np.nan), "corrupt", "not usable", True),
    (_attr("what", "date", np.bytes_(b"20251399")), "corrupt", "ValueError", False),
]


@pytest.mark.parametrize(("edit", "kind", "reason", "written"), BAD)
def test_bad_odim_files_raise_radolan_error_with_a_kind(
    samples: Path, edit: Callable[[h5py.File], None], kind: str, reason: str, written: bool
) -> None:
    _, data = _products(samples)[0]
    bad = _odim_variant(data, edit)
    with pytest.raises(RadolanError, match=reason) as caught:
        decode(bad, source="bad.hdf5")
    assert (caught.value.kind, caught.value.source) == (kind, "bad.hdf5")
    if written:
        field = decode(data)
        with pytest.raises(RadolanError, match=reason) as refused:
            hdf5.encode(field.replace(original=bad, values=np.zeros_like(field.values)))
        assert refused.value.kind == kind


def test_truncated_odim_file_is_truncated_for_reader_and_writer(samples: Path) -> None:
    _, data = _products(samples)[0]
    with pytest.raises(RadolanError) as caught:
        decode(data[: len(data) // 2])
    assert caught.value.kind == "truncated"
    field = decode(data)
    with pytest.raises(RadolanError) as written:
        hdf5.encode(field.replace(original=data[:4096], values=np.zeros_like(field.values)))
    assert written.value.kind == "truncated"


# --- synthetic files in DWD's layout ---------------------------------------------------------


@pytest.mark.parametrize("index", [0, 2])
def test_built_files_have_the_groups_attributes_and_storage_of_dwds(
    samples: Path, index: int
) -> None:
    """A file from :func:`hdf5.build` has every group and attribute name of DWD's file of the
    same product, its scaling, dtype, chunks and compression (the values: ours)."""
    name, data = _products(samples)[index]
    real = decode(data, source=name)
    built = hdf5.build(
        real.product,
        real.time,
        real.values,
        real.nodata,
        real.header.sites,
        lead_minutes=real.header.lead_minutes,
    )
    ours, theirs = _tree(built), _tree(data)
    optional = {"incomplete_nodes", "missing_nodes", "simulated"}  # RV bookkeeping we omit
    assert set(ours) == set(theirs) - {"dataset1/where", "dataset1/how/POLARA", "how/POLARA"}
    for key, entry in ours.items():
        assert set(entry[1]) == set(theirs[key][1]) - optional, key
    assert ours[DATA][2:4] == theirs[DATA][2:4]  # dtype, shape, chunks, filters
    with h5py.File(io.BytesIO(built), "r") as h5, h5py.File(io.BytesIO(data), "r") as dwd:
        scaling, expected = _scaling(h5), _scaling(dwd)  # DWD's RV gain is 0.001 in float32
    assert scaling == pytest.approx(expected, rel=1e-6)
    again = decode(built)
    assert (again.time, again.interval, again.header.lead_minutes) == FACTS[name]
    np.testing.assert_array_equal(again.nodata, real.nodata)
    np.testing.assert_array_equal(again.undetect, real.undetect)
    valid = ~real.nodata
    np.testing.assert_allclose(again.values[valid], real.values[valid], atol=1e-6)
