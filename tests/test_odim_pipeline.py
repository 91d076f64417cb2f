"""DWD's ODIM_H5 products through the one pipeline: an ODIM file in gives an ODIM file out,
a forecast bundle in gives the same bundle out with only its analysis infilled.

Checked with independent readers: h5py for the stored codes and the quality field,
:mod:`tarfile` for the bundle's members, pysteps' ODIM importer for the values downstream sees.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from radinfill import code_version, holes, radolan
from radinfill.cli import main
from tests.conftest import require
from tests.service_helpers import make_config, running, wait_for

ODIM_RW = "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5"
ODIM_RV_TAR = "brightsky/tests/data/composite_rv_20250923_0855.tar"
ANALYSIS, FORECAST = "composite_rv_20250923_0855_000-hd5", "composite_rv_20250923_0855_050-hd5"
DATA = "dataset1/data1/data"


def _stored(data: bytes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The stored codes (north first) and every quality field's data, read with h5py."""
    with h5py.File(io.BytesIO(data), "r") as h5:
        qualities = {k: h5[f"dataset1/{k}/data"][()] for k in h5["dataset1"] if "quality" in k}
        return h5[DATA][()], qualities


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]


def test_an_odim_rw_file_is_infilled_in_odim(samples: Path, tmp_path: Path) -> None:
    source = samples / ODIM_RW
    hole = holes.detect(radolan.read_one(source)).failure
    assert hole.sum() > 1000  # the sample has no-data inside the coverage
    out = tmp_path / "out"
    assert main(["infill", "--model", "baseline:advection", str(source), "-o", str(out)]) == 0
    written = (out / source.name).read_bytes()
    assert radolan.sniff(written) == "hdf5"
    codes, qualities = _stored(written)
    before, _ = _stored(source.read_bytes())
    north_hole = hole[::-1]  # ODIM rows run north first
    assert np.array_equal(codes[~north_hole], before[~north_hole])  # the rest as stored
    assert (codes[north_hole] != 65535).all()  # no no-data code left in the hole
    (quality,) = qualities.values()
    assert np.array_equal(quality.astype(bool), north_hole)
    pysteps_io = require("pysteps.io")
    values, _, _ = pysteps_io.import_odim_hdf5(str(out / source.name), qty="ACRR")
    ours = radolan.read_one(out / source.name).values[::-1]
    assert np.isfinite(values[north_hole]).all()  # downstream sees data there now
    np.testing.assert_allclose(values[north_hole], ours[north_hole], atol=1e-4)
    record = json.loads((out / f"{source.name}.json").read_text())
    assert record["hole_pixels"] == int(hole.sum())
    assert record["radinfill_version"] == code_version()


def test_a_forecast_bundle_keeps_its_layout_and_only_the_analysis_is_infilled(
    samples: Path, tmp_path: Path
) -> None:
    source = samples / ODIM_RV_TAR
    out = tmp_path / "out"
    assert main(["infill", "--model", "baseline:laplace", str(source), "-o", str(out)]) == 0
    given, written = _members(source.read_bytes()), _members((out / source.name).read_bytes())
    assert list(written) == list(given)  # same members, same order
    assert written[FORECAST] == given[FORECAST]  # forecasts untouched, byte for byte
    assert written[ANALYSIS] != given[ANALYSIS]
    analysis = radolan.decode(given[ANALYSIS])
    hole = holes.detect(analysis).failure
    _, qualities = _stored(written[ANALYSIS])
    (quality,) = qualities.values()
    assert np.array_equal(quality.astype(bool), hole[::-1])
    assert np.isfinite(radolan.decode(written[ANALYSIS]).values[hole]).all()


def test_the_service_answers_odim_with_odim(samples: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, model="baseline:advection")
    config.incoming[0].mkdir(parents=True)
    shutil.copy(samples / ODIM_RW, config.incoming[0] / Path(ODIM_RW).name)
    with running(config) as service:
        wait_for(lambda: service.processed >= 1, 60, "the ODIM product")
    written = (config.outgoing / Path(ODIM_RW).name).read_bytes()
    assert radolan.sniff(written) == "hdf5"
    assert (config.outgoing / f"{Path(ODIM_RW).name}.nc").is_file()


def test_forecast_members_all_infills_every_member_with_holes(
    samples: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path, model="baseline:laplace", forecast_members="all")
    config.incoming[0].mkdir(parents=True)
    source = samples / ODIM_RV_TAR
    shutil.copy(source, config.incoming[0] / source.name)
    with running(config) as service:
        wait_for(lambda: service.processed >= 1, 60, "the bundle")
    given = _members(source.read_bytes())
    written = _members((config.outgoing / source.name).read_bytes())
    assert list(written) == list(given)
    for name in (ANALYSIS, FORECAST):
        hole = holes.detect(radolan.decode(given[name])).failure
        assert hole.any()
        _, qualities = _stored(written[name])
        (quality,) = qualities.values()
        assert np.array_equal(quality.astype(bool), hole[::-1])


def test_a_backfill_dates_odim_files_and_bundles(samples: Path, tmp_path: Path) -> None:
    from radinfill.daemon import backfill

    archive = tmp_path / "archive"
    archive.mkdir()
    for name in (ODIM_RW, ODIM_RV_TAR):
        shutil.copy(samples / name, archive / Path(name).name)
    planned = {item.path.name: (item.product, item.time) for item in backfill.plan(archive, ["*"])}
    assert planned == {  # nominal times from the sample README
        Path(ODIM_RW).name: ("RW", datetime(2025, 9, 22, 5, 40, tzinfo=UTC)),
        Path(ODIM_RV_TAR).name: ("RV", datetime(2025, 9, 23, 8, 55, tzinfo=UTC)),
    }
