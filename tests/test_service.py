"""The service end to end: real inotify and polling observers, real files, the metrics HTTP
endpoint, systemd notifications on a real socket, signals to a real ``radinfill serve`` process,
and downstream readers (wradlib, xarray, pysteps) of what it writes.

Inputs come from one synthetic RY stream on a 200 x 200 crop (:func:`radinfill.stream.
write_stream`): radar ``oft`` fails now and then, so some steps have a failure hole and the
others pass through. The expected facts (holes, times) come from the stream's manifest and
truth, not from the service.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from radinfill import holes, radolan
from radinfill.daemon import service as service_module
from radinfill.daemon.intake import Arrival
from radinfill.daemon.ledger import Ledger
from radinfill.daemon.pipeline import MAX_INPUT_BYTES, Result
from radinfill.daemon.sdnotify import Notifier
from radinfill.daemon.service import Service
from radinfill.radolan.sites import OPERATIONAL
from radinfill.stream import DWD_SITE_ORDER, PRODUCTS, StreamManifest, StreamStep, write_stream
from tests.conftest import require
from tests.service_helpers import (
    ServeProcess,
    check_outputs,
    count,
    deliver,
    handled,
    info_labels,
    make_config,
    oft_stream,
    outcomes,
    output_sets,
    running,
    sample,
    scrape,
    service_document,
    sha256,
    slow_write,
    wait_for,
    write_toml,
)

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
STEPS = 30
#: Generous bound for one input to come out on this small grid (a loaded 2-core machine).
SLOW = 30.0


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> StreamManifest:
    """30 RY products, 200 x 200; radar oft fails at steps 5, 9-11 and 16-19."""
    return oft_stream(tmp_path_factory.mktemp("service-stream"), STEPS)


def _holed(stream: StreamManifest) -> list[StreamStep]:
    return [s for s in stream.steps if s.hole_pixels]


def _complete(stream: StreamManifest) -> list[StreamStep]:
    return [s for s in stream.steps if not s.hole_pixels]


def test_stream_has_holed_and_complete_steps(stream: StreamManifest) -> None:
    """The premise of the other tests."""
    assert [s.hole_pixels > 0 for s in stream.steps[:12]] == [
        k in (5, 9, 10, 11) for k in range(12)
    ]


def _incoming(service_root: Path) -> Path:
    path = service_root / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _filled(output: Path, step: StreamStep) -> np.ndarray:
    """The output's values, asserting that the input's failure hole now has data."""
    hole = holes.detect(radolan.read_one(step.path)).failure
    assert hole.sum() == step.hole_pixels
    values = radolan.read_one(output).values
    assert np.isfinite(values[hole]).all()
    assert (values[hole] >= 0).all()
    return values


# -- arrivals ------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_slow_copy_is_processed_once_and_only_when_complete(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """inotify: the partial file is visible (the reconcile scan finds it) but is not read
    until the close event; it is processed exactly once, from the complete bytes."""
    config = make_config(tmp_path, settle_s=1.0, reconcile_interval_s=0.3)
    step = _holed(stream)[0]
    data = step.path.read_bytes()
    with running(config) as service:
        target = _incoming(tmp_path) / step.path.name
        sizes = slow_write(target, data, chunks=8, pause_s=0.25)
        wait_for(lambda: handled(service), SLOW, "the slow copy to be handled")
        time.sleep(1.5)  # a second sighting would be handled by now
        assert sizes[0] < len(data)
        assert count(service, "radinfill_reconcile_found_total") >= 1  # seen while partial
        assert outcomes(service) == {"processed": 1.0}
        assert service.ledger is not None
        (entry,) = service.ledger.history("RY", step.time)
        assert entry.sha256 == sha256(target)
    (record,) = check_outputs(config.outgoing).values()
    assert record["input"]["sha256"] == sha256(target)
    _filled(config.outgoing / step.path.name, step)


@pytest.mark.timeout(120)
def test_rename_in_is_processed_and_the_temporary_name_ignored(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    steps = [_holed(stream)[0], _complete(stream)[0]]
    with running(config) as service:
        for step in steps:
            deliver(step.path, _incoming(tmp_path), "rename")
        wait_for(lambda: handled(service) >= 2, SLOW, "two renamed-in files")
        assert outcomes(service) == {"processed": 1.0, "passthrough": 1.0}
    assert set(check_outputs(config.outgoing)) == {s.path.name for s in steps}
    assert not any(config.quarantine.iterdir())


@pytest.mark.timeout(120)
def test_file_closed_empty_then_written_is_processed_not_quarantined(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """A writer that creates the file, closes it and reopens it to write (``touch`` first)
    sends a close event for an empty file: that is an incomplete product, not a corrupt one."""
    config = make_config(tmp_path)
    step = _holed(stream)[0]
    with running(config) as service:
        target = _incoming(tmp_path) / step.path.name
        target.touch()
        time.sleep(0.5)
        target.write_bytes(step.path.read_bytes())
        wait_for(lambda: handled(service), SLOW, "the file to be handled")
        time.sleep(1.0)
        assert outcomes(service) == {"processed": 1.0}
    assert not any(config.quarantine.iterdir())


@pytest.mark.timeout(120)
def test_polling_mode_waits_until_the_file_is_quiet(stream: StreamManifest, tmp_path: Path) -> None:
    config = make_config(
        tmp_path, watch="polling", poll_interval_s=0.2, settle_s=1.0, reconcile_interval_s=600
    )
    step = _holed(stream)[0]
    with running(config) as service:
        assert service.watcher is not None
        assert set(service.watcher.modes.values()) == {"polling"}
        target = _incoming(tmp_path) / step.path.name
        sizes = slow_write(target, step.path.read_bytes(), chunks=8, pause_s=0.25)
        assert sizes[0] < sizes[-1]
        wait_for(lambda: handled(service), SLOW, "the polled file to be handled")
        time.sleep(1.0)
        assert outcomes(service) == {"processed": 1.0}
        assert service.ledger is not None
        (entry,) = service.ledger.history("RY", step.time)
        assert entry.sha256 == sha256(step.path)
    _filled(config.outgoing / step.path.name, step)


# -- duplicates, order, corrections ----------------------------------------------------------


def _corrected(step: StreamStep, path: Path) -> radolan.Field:
    """A correction of ``step``: same product and time, 0.5 mm more rain where it has data."""
    field = radolan.read_one(step.path)
    values = np.where(np.isfinite(field.values), field.values + 0.5, np.nan).astype(np.float32)
    radolan.write(field.replace(values=values), path)  # atomic: renamed in
    return radolan.read_one(path)


@pytest.mark.timeout(120)
def test_duplicates_skipped_out_of_order_processed_correction_is_version_2(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    incoming = _incoming(tmp_path)
    newer, older = stream.steps[9], stream.steps[5]
    with running(config) as service:
        assert service.ledger is not None
        deliver(newer.path, incoming)
        wait_for(lambda: handled(service) >= 1, SLOW, "the newer file")
        deliver(older.path, incoming)  # an older nominal time after a newer one
        wait_for(lambda: handled(service) >= 2, SLOW, "the older file")
        deliver(newer.path, incoming, name=f"{newer.path.name}-again")  # same content, new name
        wait_for(lambda: handled(service) >= 3, SLOW, "the copy")
        deliver(older.path, incoming)  # the same name rewritten with the same bytes
        wait_for(lambda: handled(service) >= 4, SLOW, "the rewrite")
        assert outcomes(service) == {"processed": 2.0, "duplicate": 2.0}

        corrected = _corrected(newer, incoming / newer.path.name)
        wait_for(lambda: handled(service) >= 5, SLOW, "the correction")
        assert outcomes(service) == {"processed": 3.0, "duplicate": 2.0}
        history = service.ledger.history("RY", newer.time)
        assert [e.version for e in history] == [1, 2]
        assert history[0].sha256 == sha256(newer.path)
        assert history[1].sha256 == sha256(incoming / newer.path.name)
        older_entry = service.ledger.current("RY", older.time)
        assert older_entry is not None
        assert older_entry.version == 1

    sidecars = check_outputs(config.outgoing)
    assert set(sidecars) == {newer.path.name, older.path.name}  # one set per product
    assert (sidecars[newer.path.name]["version"], sidecars[newer.path.name]["verdict"]) == (
        2,
        "correction",
    )
    assert (sidecars[older.path.name]["version"], sidecars[older.path.name]["verdict"]) == (
        1,
        "new",
    )
    output = radolan.read_one(config.outgoing / newer.path.name)
    observed = np.isfinite(corrected.values)
    # the corrected input's valid pixels, bit for bit (the infill touches the hole only)
    assert np.array_equal(output.values[observed], corrected.values[observed])


@pytest.mark.timeout(120)
def test_one_time_step_has_one_output_set_whatever_the_names(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """The same product gzipped under another name is a duplicate (not version 2); a correction
    under another name replaces the earlier output set instead of adding a second one."""
    config = make_config(tmp_path)
    incoming = _incoming(tmp_path)
    step = stream.steps[9]
    with running(config) as service:
        assert service.ledger is not None
        deliver(step.path, incoming)
        wait_for(lambda: handled(service) >= 1, SLOW, "the plain file")
        zipped = incoming / f"{step.path.name}.gz"
        zipped.write_bytes(gzip.compress(step.path.read_bytes()))
        wait_for(lambda: handled(service) >= 2, SLOW, "the gzipped copy")
        assert outcomes(service) == {"processed": 1.0, "duplicate": 1.0}
        assert set(check_outputs(config.outgoing)) == {step.path.name}

        renamed = incoming / f"{step.path.name}-corrected"
        corrected = _corrected(step, renamed)
        wait_for(lambda: handled(service) >= 3, SLOW, "the correction under another name")
        assert [e.version for e in service.ledger.history("RY", step.time)] == [1, 2]
    sidecars = check_outputs(config.outgoing)
    assert set(sidecars) == {renamed.name}  # the version 1 set is gone
    assert sidecars[renamed.name]["version"] == 2
    output = radolan.read_one(config.outgoing / renamed.name)
    observed = np.isfinite(corrected.values)
    # the corrected input's valid pixels, bit for bit (the infill touches the hole only)
    assert np.array_equal(output.values[observed], corrected.values[observed])


def _complete_version(stream: StreamManifest, k: int, path: Path) -> None:
    """Write step ``k`` as it looks with every radar back: the truth, all sites in ``MS``."""
    step = stream.steps[k]
    with xr.open_dataset(stream.truth) as truth:
        values = truth[stream.product].values[k].astype(np.float32)
    network = tuple(sorted(OPERATIONAL, key=DWD_SITE_ORDER.index))
    spec = PRODUCTS[stream.product]
    header = radolan.build_header(
        stream.product,
        step.time,
        values.shape,
        precision_exponent=spec.precision_exponent,
        interval_minutes=spec.interval_minutes,
        sites=network,
    )
    nodata = np.isnan(values)
    clear = np.zeros_like(nodata)
    grid = radolan.grid_for(*values.shape)
    field = radolan.Field(stream.product, step.time, values, nodata, clear, clear, header, grid)
    radolan.write(field, path)


@pytest.mark.timeout(120)
def test_late_radar_wait_holds_a_holed_field_for_its_complete_redelivery(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path, late_radar_wait_s=2.0)
    incoming = _incoming(tmp_path)
    step = _holed(stream)[0]
    staged = tmp_path / step.path.name
    _complete_version(stream, stream.steps.index(step), staged)
    with running(config) as service:
        deliver(step.path, incoming)
        time.sleep(0.5)
        assert handled(service) == 0  # held
        os.replace(staged, incoming / step.path.name)  # redelivered with every radar
        wait_for(lambda: handled(service), SLOW, "the redelivered file")
        time.sleep(1.0)
        assert outcomes(service) == {"passthrough": 1.0}
        assert service.ledger is not None
        (entry,) = service.ledger.history("RY", step.time)
    assert entry.sha256 == sha256(incoming / step.path.name)
    assert entry.hole_pixels == 0
    output = config.outgoing / step.path.name
    assert output.read_bytes() == (incoming / step.path.name).read_bytes()


@pytest.mark.timeout(120)
def test_correction_beyond_the_horizon_is_late_and_not_processed(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path, horizon_s=60)  # the stream's 2025 times are far older
    incoming = _incoming(tmp_path)
    step = _holed(stream)[0]
    with running(config) as service:
        deliver(step.path, incoming)
        wait_for(lambda: handled(service) >= 1, SLOW, "the first delivery")
        before = sha256(config.outgoing / step.path.name)
        _corrected(step, incoming / step.path.name)
        wait_for(lambda: handled(service) >= 2, SLOW, "the late correction")
        assert outcomes(service) == {"processed": 1.0, "late": 1.0}
        assert count(service, "radinfill_products_total", product="RY", outcome="late") == 1
        assert service.ledger is not None
        assert len(service.ledger.history("RY", step.time)) == 1
    assert sha256(config.outgoing / step.path.name) == before
    assert check_outputs(config.outgoing)[step.path.name]["version"] == 1


# -- bad inputs --------------------------------------------------------------------------------


def _quarantine_note(config_quarantine: Path, name: str) -> dict[str, object]:
    return json.loads((config_quarantine / f"{name}.reason.json").read_text())


@pytest.mark.timeout(120)
def test_bad_inputs_are_quarantined_and_the_service_carries_on(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path, settle_timeout_s=2.0, reconcile_interval_s=0.5)
    incoming = _incoming(tmp_path)
    good = _complete(stream)[:3]
    garbage = "raa01-ry_10000-2506011300-dwd---bin"
    oversized = "raa01-ry_10000-2506011500-dwd---bin"
    truncated = stream.steps[9].path
    other_grid = write_stream(
        tmp_path / "other-grid", grid=(150, 150), steps=1, start=START, seed=1, outages=False
    ).files[0]
    with running(config) as service:
        deliver(good[0].path, incoming)
        wait_for(lambda: handled(service) >= 1, SLOW, "the first good file")
        (incoming / garbage).write_bytes(b"\x00not a radolan product\xff" * 50)
        (incoming / truncated.name).write_bytes(truncated.read_bytes()[:20_000])
        # the same product and time as good[0], on a 150 x 150 grid
        deliver(other_grid, incoming, name=f"{other_grid.name}-150x150")
        with open(incoming / oversized, "wb") as f:
            f.truncate(MAX_INPUT_BYTES + 1)  # sparse: cheap to make, never read
        for step in good[1:]:
            deliver(step.path, incoming)
        wait_for(lambda: handled(service) >= 7, SLOW, "every input to be handled")
        time.sleep(1.2)  # reconcile scans run meanwhile: nothing is quarantined twice
        assert outcomes(service) == {"passthrough": 3.0, "quarantined": 4.0}
        for reason in ("corrupt", "truncated", "wrong_grid", "oversized"):
            assert count(service, "radinfill_quarantined_total", reason=reason) == 1, reason
        assert service.ledger is not None
        assert len(service.ledger.quarantined()) == 4

    box = config.quarantine
    for name, kind in [
        (garbage, "corrupt"),
        (truncated.name, "truncated"),
        (f"{other_grid.name}-150x150", "wrong_grid"),
    ]:
        note = _quarantine_note(box, name)
        assert (note["kind"], note["copied"]) == (kind, True)
        assert (box / name).read_bytes() == (incoming / name).read_bytes()
    assert "150x150" in str(_quarantine_note(box, f"{other_grid.name}-150x150")["reason"])
    assert _quarantine_note(box, oversized)["copied"] is False
    assert not (box / oversized).exists()
    assert set(check_outputs(config.outgoing)) == {s.path.name for s in good}


@pytest.mark.timeout(120)
def test_a_product_from_the_future_or_under_another_products_name_is_not_published(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """A nominal time in 2099 would be published and pin the freshness gauge (the missing-
    product alert could never fire again); a DWD name whose product is not the header's would
    publish RY data under an RW name."""
    config = make_config(tmp_path)
    incoming = _incoming(tmp_path)
    good = _complete(stream)[0]
    future = write_stream(
        tmp_path / "future",
        grid=(200, 200),
        steps=1,
        start=datetime(2099, 1, 1, tzinfo=UTC),
        seed=2,
    ).files[0]
    renamed = good.path.name.replace("raa01-ry_", "raa01-rw_")
    with running(config) as service:
        deliver(good.path, incoming)
        deliver(future, incoming)
        deliver(good.path, incoming, name=renamed)
        wait_for(lambda: handled(service) >= 3, SLOW, "the three inputs")
        assert outcomes(service) == {"passthrough": 1.0, "quarantined": 2.0}
        assert count(service, "radinfill_quarantined_total", reason="future") == 1
        assert count(service, "radinfill_quarantined_total", reason="mismatch") == 1
        newest = count(service, "radinfill_last_output_nominal_timestamp_seconds", product="RY")
        assert newest == good.time.timestamp()
    assert "2099-01-01 00:00 UTC" in str(_quarantine_note(config.quarantine, future.name))
    note = _quarantine_note(config.quarantine, renamed)
    assert note["reason"] == "the name says RW, the header RY"
    assert set(check_outputs(config.outgoing)) == {good.path.name}


@pytest.mark.timeout(120)
def test_a_file_name_that_is_not_utf8_costs_nothing(stream: StreamManifest, tmp_path: Path) -> None:
    """POSIX names are bytes: one that is not valid UTF-8 is processed like any other (outputs
    under the same bytes, ledger, netCDF and sidecar intact), and a restart with it still in
    incoming starts and does not redo it."""
    config = make_config(tmp_path)
    incoming = _incoming(tmp_path)
    holed, other = _holed(stream)[0], _complete(stream)[0]
    odd = os.fsdecode(os.fsencode(holed.path.name) + b"\xff\xfe")  # lone surrogates in str
    with running(config) as service:
        deliver(holed.path, incoming, name=odd)
        deliver(other.path, incoming)
        wait_for(lambda: handled(service) >= 2, SLOW, "both files")
        assert outcomes(service) == {"processed": 1.0, "passthrough": 1.0}
    sidecars = check_outputs(config.outgoing)
    assert set(sidecars) == {odd, other.path.name}
    record = sidecars[odd]
    assert record["input"]["path"].endswith(holed.path.name + "\\xff\\xfe")  # readable text
    readable = tmp_path / "odd.nc"  # netCDF4 itself opens UTF-8 names only
    readable.symlink_to(config.outgoing / f"{odd}.nc")
    with xr.open_dataset(readable) as ds:
        assert ds["infill_mask"].values.sum() == holed.hole_pixels
    with running(config) as again:
        time.sleep(1.5)  # startup scan and a reconcile scan
        assert handled(again) == 0  # nothing redone, nothing failed
        assert count(again, "radinfill_products_total", product="", outcome="failed") == 0


# -- outputs -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_field_without_failure_hole_passes_through_byte_identical(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    step = _complete(stream)[0]
    with running(config) as service:
        deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: handled(service), SLOW, "the file")
        assert outcomes(service) == {"passthrough": 1.0}
    record = check_outputs(config.outgoing)[step.path.name]
    assert (config.outgoing / step.path.name).read_bytes() == step.path.read_bytes()
    assert (record["method"], record["hole_pixels"]) == ("none", 0)
    with xr.open_dataset(config.outgoing / f"{step.path.name}.nc") as ds:
        assert not ds["infill_mask"].values.any()


@pytest.mark.timeout(120)
def test_the_drop_in_product_appears_before_its_netcdf_and_sidecar(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """A downstream watcher on the output tree (the real inotify observer) sees each product
    renamed in first, then its netCDF, then its sidecar; a correction's set loses its sidecar
    before the corrected product appears."""
    config = make_config(tmp_path)
    config.outgoing.mkdir(parents=True)
    seen: list[tuple[str, str]] = []

    class Watcher(FileSystemEventHandler):
        def on_moved(self, event: FileSystemEvent) -> None:
            seen.append(("renamed", Path(str(event.dest_path)).name))

        def on_deleted(self, event: FileSystemEvent) -> None:
            seen.append(("deleted", Path(str(event.src_path)).name))

    observer = InotifyObserver()
    observer.schedule(Watcher(), str(config.outgoing))
    observer.start()
    holed = _holed(stream)[0]
    correction = tmp_path / "correction" / holed.path.name
    correction.parent.mkdir()
    fld = radolan.read_one(holed.path)
    values = np.where(fld.nodata, fld.values, fld.values + 0.1).astype(np.float32)
    correction.write_bytes(radolan.dumps(fld.replace(values=values), correction.name))
    try:
        with running(config) as service:
            deliver(holed.path, _incoming(tmp_path))
            wait_for(lambda: handled(service) >= 1, SLOW, "the holed product")
            deliver(correction, _incoming(tmp_path))
            wait_for(lambda: handled(service) >= 2, SLOW, "its correction")
            assert outcomes(service) == {"processed": 2.0}
    finally:
        observer.stop()
        observer.join()
    name = holed.path.name
    one_set = [("renamed", name), ("renamed", f"{name}.nc"), ("renamed", f"{name}.json")]
    assert [e for e in seen if not e[1].startswith((".", "latest"))] == [
        *one_set,
        ("deleted", f"{name}.json"),
        *one_set,
    ]


@pytest.mark.timeout(120)
def test_latest_link_and_post_write_hook_follow_each_output(
    stream: StreamManifest, tmp_path: Path
) -> None:
    hook_log = tmp_path / "hook.log"
    hook = ["/bin/sh", "-c", f'echo "$0 $1" >> {hook_log}', "{radolan}", "{sidecar}"]
    config = make_config(tmp_path, post_write_hook=hook)
    steps = stream.steps[:2]
    with running(config) as service:
        for n, step in enumerate(steps, 1):
            deliver(step.path, _incoming(tmp_path))
            wait_for(lambda n=n: handled(service) >= n, SLOW, f"file {n}")
    last = config.outgoing / steps[-1].path.name
    assert os.readlink(config.outgoing / "latest") == last.name  # relative, movable
    assert hook_log.read_text().splitlines() == [
        f"{config.outgoing / s.path.name} {config.outgoing / s.path.name}.json" for s in steps
    ]


@pytest.mark.timeout(120)
def test_latest_link_names_the_newest_nominal_time_not_the_last_write(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """A backlog worked after a newer product, or a late older one, leaves ``latest`` alone."""
    config = make_config(tmp_path)
    newer, older = stream.steps[6], stream.steps[2]
    with running(config) as service:
        deliver(newer.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 1, SLOW, "the newer file")
        deliver(older.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 2, SLOW, "the older file")
    assert os.readlink(config.outgoing / "latest") == newer.path.name
    assert (config.outgoing / older.path.name).is_file()


@pytest.mark.timeout(120)
def test_products_not_configured_are_ignored_once(stream: StreamManifest, tmp_path: Path) -> None:
    config = make_config(tmp_path, products=["RW"], reconcile_interval_s=0.3)
    with running(config) as service:
        deliver(stream.steps[0].path, _incoming(tmp_path))
        wait_for(lambda: handled(service), SLOW, "the file")
        time.sleep(1.0)  # reconcile scans meanwhile do not queue it again
        assert outcomes(service) == {"ignored": 1.0}
        assert count(service, "radinfill_reconcile_found_total") == 0
    assert not any(config.outgoing.iterdir())


@pytest.mark.timeout(120)
def test_output_name_template_may_use_subdirectories(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path, output_name="{product}/{time:%Y%m%d}/{time:%H%M}-{name}")
    step = _holed(stream)[0]
    with running(config) as service:
        deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: handled(service), SLOW, "the file")
        assert outcomes(service) == {"processed": 1.0}
    folder = config.outgoing / "RY" / f"{step.time:%Y%m%d}"
    name = f"{step.time:%H%M}-{step.path.name}"
    check_outputs(folder)
    _filled(folder / name, step)


@pytest.mark.timeout(120)
def test_metrics_endpoint_reports_outcomes_latency_and_freshness(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    steps = list(stream.steps[:8])
    newest = steps[-1]
    with running(config) as service:
        assert service.server is not None
        incoming = _incoming(tmp_path)
        deliver(newest.path, incoming)  # the newest first, then the older ones
        wait_for(lambda: handled(service), SLOW, "the newest file")
        for step in steps[:-1]:
            deliver(step.path, incoming)
        (incoming / "raa01-ry_10000-2506011300-dwd---bin").write_bytes(b"\x03garbage")
        wait_for(lambda: handled(service) >= len(steps) + 1, SLOW, "every file")
        families = scrape(service.server.port)
    holed = sum(1 for s in steps if s.hole_pixels)
    total = "radinfill_products_total"
    assert sample(families, total, product="RY", outcome="processed") == holed
    assert sample(families, total, product="RY", outcome="passthrough") == len(steps) - holed
    assert sample(families, total, outcome="quarantined") == 1
    assert sample(families, "radinfill_quarantined_total", reason="corrupt") == 1
    latency = "radinfill_end_to_end_latency_seconds"
    assert sample(families, f"{latency}_count", product="RY") == len(steps)
    assert sample(families, f"{latency}_bucket", product="RY", le="+Inf") == len(steps)
    assert 0 < sample(families, f"{latency}_sum", product="RY") < SLOW * len(steps)
    stages = "radinfill_stage_duration_seconds_count"
    for stage in ("read", "holes", "infill", "write"):
        assert sample(families, stages, stage=stage) == len(steps)
    freshness = "radinfill_last_output_nominal_timestamp_seconds"
    assert sample(families, freshness, product="RY") == newest.time.timestamp()
    assert info_labels(families, "radinfill_model_info")["release"] == "baseline:advection"


@pytest.mark.timeout(120)
def test_window_is_rebuilt_from_the_ledger_after_a_restart(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """Steps 6-8 processed by one service, step 9 (holed) by the next: its context holds the
    three earlier fields, read back from the inputs the ledger names."""
    config = make_config(tmp_path)
    incoming = _incoming(tmp_path)
    with running(config) as service:
        for step in stream.steps[6:9]:
            deliver(step.path, incoming)
        wait_for(lambda: handled(service) >= 3, SLOW, "the first three files")
    step = stream.steps[9]
    with running(config) as service:
        deliver(step.path, incoming)
        wait_for(lambda: handled(service), SLOW, "the holed file")
        assert outcomes(service) == {"processed": 1.0}
    record = check_outputs(config.outgoing)[step.path.name]
    assert (record["window_frames"], record["window_present"]) == (4, 4)
    assert record["window_fill"] == 1.0


@pytest.mark.timeout(120)
def test_shadow_check_exports_a_quality_estimate(stream: StreamManifest, tmp_path: Path) -> None:
    config = make_config(tmp_path, shadow_interval_s=0.5)
    with running(config) as service:
        for step in _complete(stream)[:4]:
            deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 4, SLOW, "four complete files")
        stamp = "radinfill_shadow_last_run_timestamp_seconds"
        wait_for(lambda: count(service, stamp, product="RY"), SLOW, "a shadow check")
        rmse = count(service, "radinfill_shadow_rmse_mm_per_hour", product="RY")
        csi = count(service, "radinfill_shadow_csi", product="RY", threshold="1")
    assert 0 < rmse < 100  # mm/h: advection over a 15-minute outage is good, not perfect
    assert 0 < csi <= 1  # the stream rains above 1 mm/h in the disc cut out


@pytest.mark.timeout(180)
def test_downstream_readers_get_what_the_service_wrote(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """wradlib reads every RADOLAN output with our values, xarray the netCDF with the hole as
    infill_mask, and pysteps nowcasts from the gap-free sequence."""
    wio = require("wradlib.io")
    config = make_config(tmp_path)
    steps = list(stream.steps[:12])
    with running(config) as service:
        for step in steps:
            deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= len(steps), 2 * SLOW, "every file")
        assert outcomes(service) == {"processed": 4.0, "passthrough": 8.0}
    assert set(check_outputs(config.outgoing)) == {s.path.name for s in steps}

    with xr.open_dataset(stream.truth) as truth:
        truth_masks = truth["infill_mask"].values
    rates = []
    for k, step in enumerate(steps):
        output = config.outgoing / step.path.name
        ours = radolan.read_one(output)
        theirs, attrs = wio.read_radolan_composite(str(output), missing=-9999)
        assert attrs["datetime"].replace(tzinfo=UTC) == step.time
        assert np.all(theirs[ours.nodata] == -9999)
        np.testing.assert_allclose(theirs[~ours.nodata], ours.values[~ours.nodata], rtol=1e-6)

        report = holes.detect(radolan.read_one(step.path))
        np.testing.assert_array_equal(report.failure, truth_masks[k])
        assert np.isfinite(ours.values[report.coverage]).all()  # gap-free inside coverage
        with xr.open_dataset(config.outgoing / f"{step.path.name}.nc") as ds:
            np.testing.assert_array_equal(ds["infill_mask"].values[0], report.failure)
            np.testing.assert_array_equal(ds["RY"].values[0], ours.values)
            assert ds.attrs["infill_input_sha256"] == sha256(step.path)
        rates.append(np.where(report.coverage, ours.values * 12.0, 0.0))  # mm/h

    from pysteps import motion, nowcasts

    sequence = np.stack(rates[-6:])  # steps 6-11: the outage at 9-11 is infilled
    velocity = motion.get_method("LK")(sequence)
    forecast = nowcasts.get_method("extrapolation")(sequence[-1], velocity, 3)
    assert velocity.shape == (2, 200, 200)
    assert np.isfinite(velocity).all()
    assert forecast.shape == (3, 200, 200)
    inside = np.isfinite(forecast)
    assert inside.mean() > 0.8  # only pixels advected in from outside the grid are NaN
    assert (forecast[inside] >= 0).all()
    assert forecast[inside].max() > 0


# -- the real process: signals and systemd ---------------------------------------------------


def _serve_config(root: Path, **service: object) -> Path:
    return write_toml(root / "radinfill.toml", service_document(root, **service))


@pytest.mark.timeout(180)
def test_sigterm_mid_stream_then_restart_leaves_exactly_one_output_each(
    stream: StreamManifest, tmp_path: Path
) -> None:
    config = _serve_config(tmp_path)
    incoming, outgoing = _incoming(tmp_path), tmp_path / "outgoing"
    log = tmp_path / "serve.log"
    with ServeProcess(config, log) as first:
        first.wait_ready()
        for step in stream.steps:
            deliver(step.path, incoming)
        wait_for(lambda: len(output_sets(outgoing)) >= 2, SLOW, "the first outputs")
        started = time.monotonic()
        assert first.stop(timeout=60) == 0
        assert time.monotonic() - started < 30
        assert first.event("service_stopped")
    done_first = len(output_sets(outgoing))
    assert done_first < STEPS, "the stream was finished before SIGTERM; nothing was tested"
    check_outputs(outgoing)  # complete sets only, even right after the stop

    with ServeProcess(config, log) as second:
        second.wait_ready()
        wait_for(lambda: len(output_sets(outgoing)) >= STEPS, 4 * SLOW, "the rest")
        time.sleep(1.0)
        assert second.stop(timeout=60) == 0
        (ready,) = second.event("service_ready")
        assert ready["backlog"] == STEPS - done_first  # only what was left is queued again

    sidecars = check_outputs(outgoing)
    assert set(sidecars) == {s.path.name for s in stream.steps}
    assert all(record["version"] == 1 for record in sidecars.values())
    with Ledger(tmp_path / "state" / "ledger.sqlite") as ledger:
        for step in stream.steps:
            assert len(ledger.history("RY", step.time)) == 1, step.path.name
    for step in _holed(stream):
        _filled(outgoing / step.path.name, step)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, list[list[str]]]]:
    """A datagram socket like systemd's; yields (NOTIFY_SOCKET value, received messages)."""
    path = tmp_path / "notify.sock"
    address = str(path) if len(os.fsencode(path)) < 100 else f"@radinfill-{uuid.uuid4().hex}"
    received: list[list[str]] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address if not address.startswith("@") else "\0" + address[1:])
    sock.settimeout(0.2)
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                received.append(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield address, received
    done.set()
    thread.join()
    sock.close()


def _with(messages: list[list[str]], line: str) -> list[int]:
    return [i for i, m in enumerate(messages) if line in m]


@pytest.mark.timeout(120)
def test_systemd_notifications_ready_status_watchdog_reload_stopping(
    notify_socket: tuple[str, list[list[str]]], tmp_path: Path
) -> None:
    address, messages = notify_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    with ServeProcess(_serve_config(tmp_path), tmp_path / "serve.log", env) as process:
        process.wait_ready()
        wait_for(lambda: _with(messages, "READY=1"), SLOW, "READY=1")
        wait_for(lambda: len(_with(messages, "WATCHDOG=1")) >= 2, SLOW, "two WATCHDOG=1")
        process.signal(signal.SIGHUP)
        wait_for(lambda: len(_with(messages, "READY=1")) >= 2, SLOW, "READY=1 after reload")
        assert process.stop() == 0
    wait_for(lambda: _with(messages, "STOPPING=1"), 5, "STOPPING=1")
    ready = _with(messages, "READY=1")
    assert ready[0] < min(_with(messages, "WATCHDOG=1"))  # alive only once ready
    (reloading,) = _with(messages, "RELOADING=1")
    assert ready[0] < reloading < ready[1]
    assert any(line.startswith("MONOTONIC_USEC=") for line in messages[reloading])
    assert _with(messages, "STOPPING=1") == [len(messages) - 1]  # the last word
    statuses = [line for m in messages for line in m if line.startswith("STATUS=")]
    assert any("queue=" in s and "processed=" in s for s in statuses)
    assert all("\n" not in s for s in statuses)


def _checkpoint(directory: Path, seed: int) -> Path:
    import torch

    from radinfill.model import build, save_checkpoint

    torch.manual_seed(seed)
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    return save_checkpoint(model, directory, {"product": "RY", "interval_minutes": 5})


def _writable(path: Path) -> None:
    path.chmod(0o755 if path.is_dir() else 0o644)


def _break_golden(release: Path) -> None:
    """Make a release whose checksums are right but whose golden output is not what the
    model computes (a model that loads but computes something else)."""
    from radinfill.model import registry

    _writable(release)
    golden = release / registry.GOLDEN
    with np.load(golden) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["expected"] = np.where(arrays["hole"], arrays["expected"] + 1.0, arrays["expected"])
    _writable(golden)
    with open(golden, "wb") as f:
        np.savez(f, **arrays)
    lines = [
        f"{sha256(p)}  {p.name}\n"
        for p in sorted(release.iterdir())
        if p.name != registry.CHECKSUMS
    ]
    _writable(release / registry.CHECKSUMS)
    (release / registry.CHECKSUMS).write_text("".join(lines))
    registry.verify(release)  # the checksums pass: only the golden check can catch it


@pytest.mark.gpu
@pytest.mark.timeout(240)
def test_release_published_on_the_cpu_serves_on_the_gpu(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """The golden output is computed on the CPU at publication; the release must pass its
    golden check on the GPU and infill there without falling back."""
    torch = require("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from radinfill.model import registry

    models = tmp_path / "models"
    registry.publish(_checkpoint(tmp_path / "ckpt", 1), models, version="v1")
    registry.activate(models, "v1")
    config = make_config(tmp_path, model=str(models), device="cuda")
    step = _holed(stream)[0]
    with running(config) as service:
        assert service.slot is not None
        model = service.slot.current
        assert model.release == str((models / "releases" / "v1").resolve())  # not a fallback
        assert model.device.startswith("cuda")
        deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: handled(service), SLOW, "the file")
        assert outcomes(service) == {"processed": 1.0}
        assert not model.engine.fallbacks
    record = check_outputs(config.outgoing)[step.path.name]
    assert (record["method"], record["fallback"]) == ("baseline", "")
    _filled(config.outgoing / step.path.name, step)


@pytest.mark.timeout(240)
def test_sighup_swaps_in_a_good_release_and_keeps_the_model_on_a_bad_one(
    stream: StreamManifest, tmp_path: Path
) -> None:
    from radinfill.model import registry

    models = tmp_path / "models"
    for version, seed in (("v1", 1), ("v2", 2), ("v3", 3), ("v4", 4)):
        registry.publish(
            _checkpoint(tmp_path / f"ckpt-{version}", seed), models, version=version, export=False
        )
    registry.activate(models, "v1")
    config = _serve_config(tmp_path, model=str(models))
    incoming, outgoing = _incoming(tmp_path), tmp_path / "outgoing"
    holed = _holed(stream)

    def model_release(families: dict[str, object]) -> str:
        return info_labels(families, "radinfill_model_info")["release"]

    def reloads(port: int, outcome: str) -> float:
        return sample(scrape(port), "radinfill_model_reloads_total", outcome=outcome) or 0.0

    def infill(step: StreamStep) -> dict[str, object]:
        deliver(step.path, incoming)
        sidecar = outgoing / f"{step.path.name}.json"
        wait_for(sidecar.exists, SLOW, f"the outputs of {step.path.name}")
        _filled(outgoing / step.path.name, step)
        record = json.loads(sidecar.read_text())
        assert (record["method"], record["fallback"]) == ("baseline", "")  # the network did it
        return record["model"]

    release = {v: str((models / "releases" / v).resolve()) for v in ("v1", "v2", "v3", "v4")}
    with ServeProcess(config, tmp_path / "serve.log") as process:
        port = process.wait_ready()
        assert model_release(scrape(port)) == release["v1"]
        assert reloads(port, "ok") == 1  # the start-up load
        assert infill(holed[0])["release"] == release["v1"]

        registry.activate(models, "v2")
        process.signal(signal.SIGHUP)
        wait_for(lambda: reloads(port, "ok") == 2, SLOW, "the reload of v2")
        families = scrape(port)
        assert model_release(families) == release["v2"]
        v2_sha = json.loads((models / "releases" / "v2" / "metadata.json").read_text())["sha256"]
        assert info_labels(families, "radinfill_model_info")["sha256"] == v2_sha
        assert infill(holed[1]) == {
            "release": release["v2"],
            "variant": "baseline",
            "sha256": v2_sha,
        }

        registry.activate(models, "v3")
        weights = models / "releases" / "v3" / "weights.safetensors"
        _writable(weights.parent)
        _writable(weights)
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # one flipped bit pattern in the last byte of the weights
        weights.write_bytes(bytes(data))
        process.signal(signal.SIGHUP)
        wait_for(lambda: reloads(port, "failed") == 1, SLOW, "the failed reload of v3")

        _break_golden(models / "releases" / "v4")
        registry.activate(models, "v4")
        process.signal(signal.SIGHUP)
        wait_for(lambda: reloads(port, "failed") == 2, SLOW, "the failed reload of v4")

        families = scrape(port)
        assert model_release(families) == release["v2"]  # the running model stayed
        assert sample(families, "radinfill_model_reloads_total", outcome="ok") == 2
        assert infill(holed[2])["release"] == release["v2"]  # and keeps working
        assert process.stop() == 0
        failures = process.event("model_reload_failed")
    assert len(failures) == 2
    assert "weights.safetensors" in failures[0]["error"]
    assert "sha256" in failures[0]["error"]
    assert "golden" in failures[1]["error"]
    check_outputs(outgoing)


@pytest.mark.timeout(120)
def test_a_ledger_damaged_while_running_stops_the_service_for_a_restart(
    stream: StreamManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every product failed forever while the watchdog kept pinging. Now the service
    stops with status 1, so systemd restarts it and the start-up check names the damage."""
    config = make_config(tmp_path)
    with running(config) as service:
        assert service.ledger is not None

        def malformed(*args: object) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

        monkeypatch.setattr(service.ledger, "classify", malformed)
        deliver(stream.steps[0].path, _incoming(tmp_path))
        wait_for(service.stop_event.is_set, SLOW, "the service to stop itself")
        assert service.exit_status == 1
    assert not list(config.outgoing.glob("raa01-*"))


@pytest.mark.timeout(120)
def test_a_retried_failure_is_not_counted_as_a_missed_event(
    stream: StreamManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A product that failed is queued again by a reconcile scan once its backoff ran out:
    that is a retry, and ``radinfill_reconcile_found_total`` (the missed-events alert) must
    not count it."""
    config = make_config(tmp_path, reconcile_interval_s=0.3, retry_backoff_s=0.5)
    with running(config) as service:
        assert service.pipeline is not None
        process = service.pipeline.process
        calls: list[Path] = []

        def fail_once(arrival: Arrival) -> Result:
            calls.append(arrival.path)
            if len(calls) == 1:
                raise OSError(errno.EIO, "input/output error")
            return process(arrival)

        monkeypatch.setattr(service.pipeline, "process", fail_once)
        deliver(stream.steps[0].path, _incoming(tmp_path))
        done = ("processed", "passthrough")
        wait_for(lambda: sum(outcomes(service).get(o, 0) for o in done), SLOW, "the retry")
        assert len(calls) == 2
        assert count(service, "radinfill_products_total", product="", outcome="failed") == 1
        assert count(service, "radinfill_reconcile_found_total") == 0


def test_a_failed_file_removed_upstream_is_forgotten(
    stream: StreamManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's memory of failures does not grow with uptime: the next reconcile scan
    forgets a failed file that is no longer there."""
    config = make_config(tmp_path, reconcile_interval_s=0.3)
    with running(config) as service:
        assert service.pipeline is not None

        def fail(arrival: Arrival) -> Result:
            raise OSError(errno.EIO, "input/output error")

        monkeypatch.setattr(service.pipeline, "process", fail)
        path = deliver(stream.steps[0].path, _incoming(tmp_path))
        wait_for(lambda: service._failures, SLOW, "the failure")
        path.unlink()
        wait_for(lambda: not service._failures, SLOW, "the failure to be forgotten")


class _Pings(Notifier):
    """A notifier that records the WATCHDOG=1 pings instead of sending them."""

    def __init__(self) -> None:
        super().__init__("")
        self.pings: list[float] = []

    def watchdog(self) -> bool:
        self.pings.append(time.monotonic())
        return True


@pytest.mark.timeout(120)
@pytest.mark.parametrize("failure", ["observer dies", "worker stalls"])
def test_the_watchdog_is_withheld_when_the_service_stops_making_progress(
    stream: StreamManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Pings only while every observer lives and the worker shows progress: systemd's
    watchdog then restarts a service that would otherwise sit there looking healthy."""
    monkeypatch.setattr(service_module, "watchdog_interval", lambda: 0.2)
    monkeypatch.setattr(service_module, "STUCK_AFTER_S", 1.0)
    notifier = _Pings()
    service = Service(make_config(tmp_path), notifier=notifier, configure_logs=False)
    service.start()
    supervisor = threading.Thread(target=service._supervise, daemon=True)
    supervisor.start()
    try:
        wait_for(lambda: len(notifier.pings) >= 3, SLOW, "pings while healthy")
        assert service.watcher is not None
        assert service.pipeline is not None
        if failure == "observer dies":
            for observer in service.watcher.observers:
                observer.stop()
                observer.join(10)
        else:
            release = threading.Event()

            def hang(arrival: Arrival) -> Result:
                release.wait(30)
                raise OSError(errno.EIO, "released")

            monkeypatch.setattr(service.pipeline, "process", hang)
            deliver(stream.steps[0].path, _incoming(tmp_path))
            wait_for(lambda: not service.healthy(), SLOW, "the stall to be seen")
        wait_for(lambda: not service.healthy(), SLOW, "the service to be unhealthy")
        seen = len(notifier.pings)
        time.sleep(1.0)  # five ping intervals
        assert len(notifier.pings) <= seen + 1  # at most one already under way
        if failure == "worker stalls":
            release.set()
    finally:
        service.stop()
        supervisor.join(10)
        service.shutdown()


@pytest.mark.timeout(180)
def test_files_that_arrive_while_the_process_is_stopped_are_not_missed_events(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """SIGSTOP, files arrive, SIGCONT: their inotify events wait in the kernel and arrive on
    SIGCONT together with the overdue reconcile scan. Those files are not missed events, so
    ``radinfill_reconcile_found_total`` (the missed-events alert) stays 0."""
    config = _serve_config(tmp_path, reconcile_interval_s=0.5)
    incoming = _incoming(tmp_path)
    with ServeProcess(config, tmp_path / "serve.log") as serve:
        port = serve.wait_ready()
        serve.signal(signal.SIGSTOP)
        try:
            for step in stream.steps[:4]:
                deliver(step.path, incoming)
            time.sleep(3.0)  # several reconcile intervals pass while it is stopped
        finally:
            serve.signal(signal.SIGCONT)
        wait_for(lambda: len(output_sets(tmp_path / "outgoing")) >= 4, SLOW, "the outputs")
        time.sleep(1.5)  # and some reconcile scans after it
        families = scrape(port)
        assert serve.stop() == 0
    assert sample(families, "radinfill_reconcile_found_total") == 0


def test_the_first_scan_after_a_pause_does_not_count_missed_events(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """The order after SIGCONT is the kernel's: should the overdue scan run before the queued
    file events, what it finds is still not a missed event. A scan on time does count."""
    config = make_config(tmp_path, reconcile_interval_s=3600.0)
    with running(config) as service:
        assert service.watcher is not None
        service.watcher.stop()  # no events: only the scans find files
        incoming = _incoming(tmp_path)
        deliver(stream.steps[0].path, incoming)
        service._last_scan = time.monotonic() - 4 * 3600.0  # as after a four-hour pause
        assert service.reconcile() == 1
        assert count(service, "radinfill_reconcile_found_total") == 0
        deliver(stream.steps[1].path, incoming)
        assert service.reconcile() == 1  # on time: a missed event
        assert count(service, "radinfill_reconcile_found_total") == 1
