"""The writer's fault point: transient errors are retried in place, a full disk fails the
product at once, and neither leaves anything under an output name but complete files."""

from __future__ import annotations

import errno
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from radinfill import holes, radolan, stream
from radinfill.daemon import faults, outputs
from radinfill.daemon.faults import Faults


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    manifest = stream.write_stream(
        root, grid=(160, 160), steps=1, start=datetime(2025, 6, 1, tzinfo=UTC), seed=3
    )
    return manifest.steps[0].path


def write(
    product: Path, out: Path, injected: Faults | None, retries: list[str], version: int = 1
) -> list[Path]:
    fld = radolan.read_one(product)
    hole = holes.detect(fld).failure
    values = np.where(np.isnan(fld.values), 0.0, fld.values).astype(np.float32)
    filled = outputs.infilled(fld, hole, values)
    writer = outputs.Writer(stop=threading.Event(), on_retry=retries.append, faults=injected)
    targets = outputs.output_paths(out, "{name}", product.name, fld)
    writer.publish(targets, radolan.dumps(filled, targets.radolan.name), version=version)
    return writer.write(
        targets,
        output=filled,
        hole=hole,
        provenance={"infill_method": "test"},
        record={"product": fld.product, "version": version},
    )


def test_rules_parse_and_bad_rules_name_the_variable():
    assert faults.parse("write_netcdf=EIO:0.5, write_radolan=ENOSPC:1") == {
        "write_netcdf": (errno.EIO, 0.5),
        "write_radolan": (errno.ENOSPC, 1.0),
    }
    for bad in ("write_netcdf", "write_netcdf=EXYZ:0.1", "x=EIO:2", "=EIO:0.1", "x=EIO:p"):
        with pytest.raises(ValueError, match="RADINFILL_FAULTS: bad rule"):
            faults.parse(bad)
    assert Faults.from_env({}) is None
    assert Faults.from_env({"RADINFILL_FAULTS": "  "}) is None
    injected = Faults.from_env({"RADINFILL_FAULTS": "op=EIO:1", "RADINFILL_FAULTS_SEED": "3"})
    assert injected is not None
    with pytest.raises(OSError, match="injected fault in op") as caught:
        injected.check("op")
    assert caught.value.errno == errno.EIO
    injected.check("another_op")  # no rule: never fails
    assert injected.injected == 1


def test_transient_faults_are_retried_until_the_outputs_are_written(product, tmp_path):
    injected = Faults({"write_radolan": (errno.EIO, 0.3), "write_sidecar": (errno.EIO, 0.3)}, 1)
    retries: list[str] = []
    written = write(product, tmp_path, injected, retries)
    assert [p.name for p in written] == [product.name, f"{product.name}.nc", f"{product.name}.json"]
    assert injected.injected > 0
    assert len(retries) == injected.injected  # every fault was followed by a retry
    assert radolan.read_one(tmp_path / product.name).values.shape == (160, 160)
    assert not list(tmp_path.glob(".*"))


def test_a_full_disk_fails_the_product_at_once_and_publishes_no_partial_file(product, tmp_path):
    retries: list[str] = []
    injected = Faults({"write_netcdf": (errno.ENOSPC, 1.0)})
    with pytest.raises(OSError, match="injected fault in write_netcdf") as caught:
        write(product, tmp_path, injected, retries)
    assert caught.value.errno == errno.ENOSPC
    assert retries == []  # not transient: no retry loop on a full disk
    assert injected.injected == 1
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [product.name]  # the RADOLAN file is complete; no netCDF, no sidecar
    radolan.read_one(tmp_path / product.name)


def test_a_persistent_transient_fault_gives_up_after_bounded_retries(product, tmp_path):
    retries: list[str] = []
    injected = Faults({"write_sidecar": (errno.EIO, 1.0)})
    with pytest.raises(OSError, match="injected fault in write_sidecar"):
        write(product, tmp_path, injected, retries)
    assert retries == ["write_sidecar"] * 4  # 5 attempts in all
    assert not (tmp_path / f"{product.name}.json").exists()
    assert not list(tmp_path.glob(".*"))


def test_a_correction_that_fails_on_a_full_disk_leaves_no_contradicting_set(product, tmp_path):
    """Version 1 is complete; its correction's netCDF write hits a full disk. The new RADOLAN
    file is in place, so the old netCDF and the old sidecar (whose checksum would contradict it)
    must be gone: the set is incomplete and says so by having no sidecar."""
    write(product, tmp_path, None, [])
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(old) == 3
    corrected = tmp_path.parent / f"{tmp_path.name}-input" / product.name
    corrected.parent.mkdir()
    fld = radolan.read_one(product)
    wetter = np.where(np.isfinite(fld.values), fld.values + 1.0, np.nan).astype(np.float32)
    radolan.write(fld.replace(values=wetter), corrected)
    injected = Faults({"write_netcdf": (errno.ENOSPC, 1.0)})
    with pytest.raises(OSError, match="injected fault in write_netcdf"):
        write(corrected, tmp_path, injected, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [product.name]
    assert (tmp_path / product.name).read_bytes() != old[product.name]  # the correction


def test_a_correction_rule_fails_only_the_rewrite_of_a_published_set(product, tmp_path):
    injected = Faults({"correction:write_netcdf": (errno.ENOSPC, 1.0)})
    assert len(write(product, tmp_path, injected, [], version=1)) == 3
    assert injected.injected == 0
    with pytest.raises(OSError, match="injected fault in correction:write_netcdf") as caught:
        write(product, tmp_path, injected, [], version=2)
    assert caught.value.errno == errno.ENOSPC
    assert injected.injected == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [product.name]  # no sidecar, no .nc
    assert faults.parse("correction:write_netcdf=ENOSPC:0.5") == {
        "correction:write_netcdf": (errno.ENOSPC, 0.5)
    }
