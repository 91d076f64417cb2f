"""Short fuzz runs of the untrusted-input readers with the harness of ``bench/fuzz.py``.

For the RADOLAN reader (binary products and containers), the ODIM-HDF5 reader and writer, and
checkpoint loading: hypothesis draws format-aware mutants of real inputs (the ``samples``
fixture, cut to small grids so that each example is fast), and every input must raise nothing
but the documented error, finish within the per-input limit, and stay below the memory bound derived
in ``bench/fuzz.py``. The harness is checked to catch each kind of violation, and the inputs
that broke these properties before the fixes are kept as regression cases.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import math
import tarfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import (
    BIGGEST_GRID,
    WEIGHTS_SHA256,
    Stats,
    Target,
    checkpoint_seeds,
    checkpoint_target,
    contents,
    decode_target,
    hdf5_target,
    mutants,
    odim_write_target,
    pack_checkpoint,
    probe,
    radolan_bound,
    unpack_checkpoint,
    warm_up,
)
from radinfill.radolan import RadolanError, grid_for, loads
from radinfill.radolan.errors import KINDS
from radinfill.radolan.io import MAX_PRODUCT_BYTES
from tests.radolan_samples import raw_product, shrink, unpack

#: Real products of every header generation (cut to small grids) and whole real containers.
PRODUCTS = (
    "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan",
    "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin",
    "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach",
    "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin",
    "wradlib-data/showcase/raa01-sf_10000-1408102050-dwd---bin.gz",
    "wradlib-data/radvor/RE2210180700_000.gz",
    "wradlib-data/showcase/raa01-pg_10000-1408102045-dwd---bin.gz",
)
CONTAINERS = (
    "radolan_to_netcdf/radolan_ry/raa01-ry_10000-2001011500-dwd---bin.gz",
    "brightsky/tests/data/DE1200_RV2305081330.tar.bz2",
    "wradlib-data/showcase_CORRUPT/raa01-w3_10000-1408110550-dwd---bin.gz",
)
ODIM_FILES = (
    "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5",
    "brightsky/tests/data/composite_rv_20250923_0855.tar",
)
#: Seconds one input may take (the slowest seeds, the DE1200 ODIM-HDF5 fields, take about
#: 0.03 s; a busy two-core machine may be many times slower).
LIMIT = 10.0
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def traced() -> Iterator[None]:
    """tracemalloc on for the test (the harness measures peaks with it)."""
    tracemalloc.start()
    yield
    tracemalloc.stop()


@pytest.fixture(scope="module")
def radolan_seeds(samples: Path) -> list[bytes]:
    """Small valid products cut from real ones (the PG picture product whole), real containers."""
    small = []
    for name in PRODUCTS:
        product = raw_product(samples / name)
        small.append(product if product[:2] == b"PG" else shrink(product, 6, 5))
    return small + [(samples / name).read_bytes() for name in CONTAINERS]


@pytest.fixture(scope="module")
def odim_seeds(samples: Path) -> list[bytes]:
    """The real ODIM-HDF5 composites: a plain file and the two members of a tar."""
    return [data for name in ODIM_FILES for _, data in unpack((samples / name).read_bytes(), name)]


@pytest.fixture(scope="module")
def checkpoint_fuzz(tmp_path_factory: pytest.TempPathFactory) -> Target:
    """The checkpoint target, seeded with a small checkpoint of every variant."""
    workdir = tmp_path_factory.mktemp("checkpoint-fuzz")
    target = checkpoint_target(workdir, checkpoint_seeds(workdir, shipped=None))
    warm_up(target)
    return target


def _clean(stats: Stats) -> None:
    assert not stats.escapes, stats.escapes
    assert not stats.hangs, stats.hangs
    assert not stats.over_bound, stats.over_bound


def _fuzz(target: Target, data: st.DataObject, stats: Stats, out: Path) -> None:
    """One mutant of the target's seeds through the harness; no property may break."""
    probe(target, data.draw(mutants(target.seeds, target.mutations)), stats, out, LIMIT)
    _clean(stats)


# --- the harness catches what it should ----------------------------------------------------------


def _target(run: Callable[[bytes], object], bound: int = 1 << 30) -> Target:
    return Target("t", run, RadolanError, lambda data: bound, [b"x"], (), lambda err: "e")


def _raise_key_error(data: bytes) -> None:
    raise KeyError(data)


def _raise_radolan_error(data: bytes) -> None:
    raise RadolanError("bad", kind="truncated")


@pytest.mark.usefixtures("traced")
def test_harness_records_escapes_hangs_and_allocations_over_the_bound(tmp_path: Path) -> None:
    stats = Stats("t", "test")
    probe(_target(_raise_radolan_error), b"ok", stats, tmp_path, LIMIT)
    assert stats.violations == 0
    assert stats.errors == {"e": 1}
    probe(_target(_raise_key_error), b"escape", stats, tmp_path, LIMIT)
    assert len(stats.escapes) == 1
    assert "KeyError" in stats.escapes[0]
    started = time.monotonic()
    probe(_target(lambda data: time.sleep(5)), b"hang", stats, tmp_path, 0.3)
    assert time.monotonic() - started < 3  # interrupted by the watchdog
    assert len(stats.hangs) == 1
    probe(_target(lambda data: np.ones(4 << 20), bound=1 << 20), b"memory", stats, tmp_path, LIMIT)
    assert len(stats.over_bound) == 1
    assert stats.peak >= 32 << 20  # 4 Mi float64 seen
    assert stats.inputs == 4
    saved = sorted(path.read_bytes() for path in tmp_path.iterdir())
    assert saved == [b"escape", b"hang", b"memory"]


def test_contents_sees_every_layer_of_real_containers(samples: Path) -> None:
    """The bound's view of an input, checked against an independent unpack of the same bytes."""
    for name in (*CONTAINERS, *ODIM_FILES):
        data = (samples / name).read_bytes()
        found = contents(data)
        assert found.products == [product for _, product in unpack(data, name)]
        layer, expanded = data, 0
        while layer[:2] == b"\x1f\x8b" or layer[:3] == b"BZh":
            layer = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else bz2.decompress(layer)
            expanded += len(layer)
        assert found.expanded == expanded
        assert (expanded > 0) == name.endswith((".gz", ".bz2"))


def test_bound_covers_the_biggest_catalogued_grid() -> None:
    rows, cols = 4800, 4400
    assert grid_for(rows, cols).shape == (rows, cols)
    assert rows * cols == BIGGEST_GRID
    assert MAX_PRODUCT_BYTES >= 2 * BIGGEST_GRID  # the reader takes such a product whole


# --- short fuzz runs ----------------------------------------------------------------------------


@pytest.mark.usefixtures("traced")
def test_real_radolan_seeds_decode_within_bounds(
    radolan_seeds: list[bytes], tmp_path: Path
) -> None:
    target = decode_target(radolan_seeds)
    warm_up(target)
    stats = Stats("decode", "test")
    for seed in target.seeds:
        probe(target, seed, stats, tmp_path, LIMIT)
    _clean(stats)
    assert stats.inputs == len(radolan_seeds)
    assert sum(stats.errors.values()) == 2  # the PG picture and the corrupt showcase file
    assert 0 < stats.worst_ratio < 1


@pytest.mark.usefixtures("traced")
@FUZZ
@given(data=st.data())
def test_mutated_radolan_inputs_raise_only_radolan_error_within_bounds(
    radolan_seeds: list[bytes], tmp_path: Path, data: st.DataObject
) -> None:
    stats = Stats("decode", "test")
    _fuzz(decode_target(radolan_seeds), data, stats, tmp_path)
    assert all(label.split(":")[0] in KINDS for label in stats.errors)


@pytest.mark.usefixtures("traced")
@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_mutated_odim_files_raise_only_radolan_error_within_bounds(
    odim_seeds: list[bytes], tmp_path: Path, data: st.DataObject
) -> None:
    _fuzz(hdf5_target(odim_seeds), data, Stats("hdf5", "test"), tmp_path)


@pytest.fixture(scope="module")
def odim_writer(odim_seeds: list[bytes]) -> Target:
    """The ODIM writer target (an infilled real field mirroring each input), warmed up."""
    target = odim_write_target(odim_seeds)
    warm_up(target)
    return target


@pytest.mark.usefixtures("traced")
def test_odim_writer_rewrites_every_real_file_within_bounds(
    odim_writer: Target, tmp_path: Path
) -> None:
    stats = Stats("odim-write", "test")
    for seed in odim_writer.seeds:
        probe(odim_writer, seed, stats, tmp_path, LIMIT)
    _clean(stats)
    assert (stats.inputs, stats.errors) == (3, {})
    assert 0 < stats.worst_ratio < 1


@pytest.mark.usefixtures("traced")
@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_odim_originals_make_the_writer_raise_only_radolan_error_within_bounds(
    odim_writer: Target, tmp_path: Path, data: st.DataObject
) -> None:
    _fuzz(odim_writer, data, Stats("odim-write", "test"), tmp_path)


@pytest.mark.usefixtures("traced")
@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_mutated_checkpoints_raise_only_checkpoint_error_within_bounds(
    checkpoint_fuzz: Target, tmp_path: Path, data: st.DataObject
) -> None:
    _fuzz(checkpoint_fuzz, data, Stats("checkpoint", "test"), tmp_path)


@pytest.mark.usefixtures("traced")
def test_checkpoint_seeds_load(checkpoint_fuzz: Target, tmp_path: Path) -> None:
    stats = Stats("checkpoint", "test")
    for seed in checkpoint_fuzz.seeds:
        probe(checkpoint_fuzz, seed, stats, tmp_path, LIMIT)
    assert stats.inputs == 4
    assert stats.errors == {}  # every seed is a valid checkpoint: the mutants start from them
    _clean(stats)


# --- regressions: inputs that broke a property before --------------------------------------------


def _traced_peak(action: Callable[[], object]) -> int:
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(RadolanError):
        action()
    return tracemalloc.get_traced_memory()[1] - start


@pytest.mark.usefixtures("traced")
def test_small_compressed_or_tarred_products_allocate_little(samples: Path) -> None:
    """A 150-byte gzip made the reader allocate its whole 512 MiB stream budget up front, a
    10 KiB tar 40 MiB per member; now it is what the data hold plus one 1 MiB read chunk."""
    product = shrink(raw_product(samples / PRODUCTS[1]), 4, 3)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        member = tarfile.TarInfo("a")
        member.size = len(product)
        tar.addfile(member, io.BytesIO(product))
    for data in (gzip.compress(product), archive.getvalue()):
        assert len(loads(data)) == 1
        assert _traced_peak(lambda data=data: loads(data)) < 2 << 20
        assert radolan_bound(data) < 20 << 20


@pytest.mark.usefixtures("traced")
def test_tar_members_that_could_expand_are_refused_unread() -> None:
    """Before, every member was read with a 40 MiB buffer whatever its size; now a member is
    read at its own size, which must lie inside the archive (else the archive is truncated),
    and sparse or oversized members are refused before reading."""
    cut = tarfile.TarInfo("cut")
    cut.size = 40_000_000  # claimed; the archive ends after the header
    sparse = tarfile.TarInfo("sparse")
    sparse.type = tarfile.GNUTYPE_SPARSE  # may claim any size without holding the bytes
    huge = tarfile.TarInfo("huge")
    huge.size = MAX_PRODUCT_BYTES + 1
    cases = [
        (cut.tobuf(format=tarfile.USTAR_FORMAT), "truncated", "truncated tar archive"),
        (sparse.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024), "unsupported", "sparse"),
        (huge.tobuf(format=tarfile.USTAR_FORMAT) + bytes(huge.size + 1535), "oversized", "exceeds"),
    ]
    for data, kind, reason in cases:
        with pytest.raises(RadolanError, match=reason) as caught:
            loads(data)
        assert caught.value.kind == kind
        assert _traced_peak(lambda data=data: loads(data)) < 1 << 20


def test_cut_containers_are_truncated_not_corrupt(samples: Path) -> None:
    """The service retries truncated inputs (a file still being written) and quarantines
    corrupt ones, so a cut gzip, bz2, tar or HDF5 file must say it is truncated."""
    for name in (CONTAINERS[0], CONTAINERS[1], *ODIM_FILES):
        data = (samples / name).read_bytes()
        with pytest.raises(RadolanError) as caught:
            loads(data[: len(data) // 2])
        assert caught.value.kind == "truncated", name


def _odim_variant(data: bytes, edit: Callable[[h5py.File], None]) -> bytes:
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as h5:
        edit(h5)
    return buffer.getvalue()


def _wide_type(h5: h5py.File) -> None:
    del h5["dataset1/data1/data"]
    h5.create_dataset("dataset1/data1/data", shape=(1200, 1100), dtype="S1000", compression="gzip")


def _array_nodata(h5: h5py.File) -> None:
    h5["dataset1/data1/what"].attrs["nodata"] = np.arange(1000.0).reshape(1000, 1, 1)


def _infinite_gain(h5: h5py.File) -> None:
    h5["dataset1/data1/what"].attrs["gain"] = math.inf


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize(
    ("edit", "kind"),
    [(_wide_type, "unsupported"), (_array_nodata, "corrupt"), (_infinite_gain, "corrupt")],
)
def test_odim_files_claiming_huge_pixels_are_refused_before_reading(
    odim_seeds: list[bytes], edit: Callable[[h5py.File], None], kind: str
) -> None:
    """A 1000-byte string type would have read 1.3 GB, an array ``nodata`` attribute broadcast
    the grid a thousand times, an infinite gain given infinite rain."""
    data = _odim_variant(odim_seeds[0], edit)
    with pytest.raises(RadolanError) as caught:
        loads(data)
    assert caught.value.kind == kind
    assert _traced_peak(lambda: loads(data)) < 64 << 20


def _narrow_type(h5: h5py.File) -> None:
    del h5["dataset1/data1/data"]
    h5.create_dataset("dataset1/data1/data", shape=(1200, 1100), dtype="u1", compression="gzip")


@pytest.mark.usefixtures("traced")
def test_odim_flag_codes_the_data_type_cannot_hold_are_refused(
    odim_writer: Target, tmp_path: Path
) -> None:
    """Found by the writer target: one-byte data under no-data 65535 made the writer's no-data
    assignment escape as OverflowError; now reader and writer refuse the file as corrupt."""
    data = _odim_variant(odim_writer.seeds[0], _narrow_type)
    stats = Stats("odim-write", "test")
    probe(odim_writer, data, stats, tmp_path, LIMIT)
    _clean(stats)
    assert [label.split(":")[0] for label in stats.errors] == ["corrupt"]
    with pytest.raises(RadolanError, match="no value of the data type uint8") as caught:
        loads(data)
    assert caught.value.kind == "corrupt"


def _checkpoint_case(seed: bytes, edit: Callable[[dict], None]) -> bytes:
    meta, weights = unpack_checkpoint(seed)
    doc = json.loads(meta)
    edit(doc)
    return pack_checkpoint(json.dumps(doc).encode(), weights)


def _text_case(seed: bytes, old: bytes, new: bytes) -> bytes:
    meta, weights = unpack_checkpoint(seed)
    assert old in meta
    return pack_checkpoint(meta.replace(old, new, 1), weights)


@pytest.mark.usefixtures("traced")
def test_absurd_checkpoint_metadata_is_refused_before_allocation(
    checkpoint_fuzz: Target, tmp_path: Path
) -> None:
    """Each escaped as another exception (RuntimeError from the allocator, OverflowError,
    ValueError, RecursionError) or, for the kernel, got the process killed for memory."""
    baseline = next(s for s in checkpoint_fuzz.seeds if b'"variant": "baseline"' in s)
    hparams = json.loads(unpack_checkpoint(baseline)[0])["hparams"]
    cases = {
        "channels": _checkpoint_case(baseline, lambda d: d["hparams"].update(widths=[4, 10**6])),
        "kernel": _checkpoint_case(baseline, lambda d: d["hparams"].update(kernels=[3, 10001])),
        "levels": _checkpoint_case(
            baseline, lambda d: d["hparams"].update(widths=[1] * 5000, kernels=[1] * 5000)
        ),
        "infinity": _text_case(
            baseline, b'"aux_channels": %d' % hparams["aux_channels"], b'"aux_channels": Infinity'
        ),
        "digits": _text_case(baseline, b'"window": 2', b'"window": ' + b"9" * 5000),
        "nesting": _text_case(baseline, b'"training": {}', b'"training": ' + b"[" * 100_000),
    }
    stats = Stats("checkpoint", "test")
    for data in cases.values():
        probe(checkpoint_fuzz, data, stats, tmp_path, LIMIT)
    _clean(stats)
    assert sum(stats.errors.values()) == len(cases)
    assert stats.peak < 64 << 20
    assert WEIGHTS_SHA256 in unpack_checkpoint(baseline)[0]  # the weights' checksum matched
