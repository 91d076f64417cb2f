"""The service's reliability paths, each with a real running service (observers, scheduler,
worker, metrics HTTP endpoint): ledger retention by the scheduler, the fallback counter when
the model cannot be used, and a full disk during the output writes.

Expected facts come from the synthetic stream's manifest, an independent SQLite reader of the
ledger and a Prometheus parse of the scraped endpoint, not from the service's own objects.
"""

from __future__ import annotations

import errno
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from radinfill import holes, radolan
from radinfill.daemon import service as service_module
from radinfill.daemon.faults import Faults
from radinfill.stream import StreamManifest, StreamStep, write_stream
from tests.service_helpers import (
    check_outputs,
    deliver,
    handled,
    make_config,
    oft_stream,
    outcomes,
    running,
    sample,
    scrape,
    wait_for,
)

#: Generous bound for one input to come out on this small grid (a loaded 2-core machine).
SLOW = 30.0
GRID = (200, 200)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> StreamManifest:
    """12 RY products of June 2025, 200 x 200; radar oft fails at steps 5 and 9-11."""
    return oft_stream(tmp_path_factory.mktemp("reliability-stream"), 12)


def _holed(stream: StreamManifest) -> StreamStep:
    step = next(s for s in stream.steps if s.hole_pixels)
    assert holes.detect(radolan.read_one(step.path)).failure.sum() == step.hole_pixels
    return step


def _incoming(root: Path) -> Path:
    path = root / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ledger_inputs(path: Path) -> set[tuple[str, str]]:
    """(product, nominal) of every input the ledger file holds, read with plain SQLite."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return set(db.execute("SELECT product, nominal FROM inputs").fetchall())


# -- retention ------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_scheduler_prunes_ledger_rows_older_than_the_retention(
    stream: StreamManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``retention_days = 1`` the scheduled job removes the June 2025 input from the
    ledger and keeps one of an hour ago; the job runs by itself every ``PRUNE_INTERVAL_S``."""
    monkeypatch.setattr(service_module, "PRUNE_INTERVAL_S", 0.5)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    recent = write_stream(
        tmp_path / "recent",
        grid=GRID,
        steps=1,
        start=now - timedelta(hours=1, minutes=now.minute % 5),
        seed=1,
        outages=False,
    ).steps[0]
    old = stream.steps[0]
    config = make_config(tmp_path, retention_days=1.0)
    with running(config) as service:
        deliver(old.path, _incoming(tmp_path))
        deliver(recent.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 2, SLOW, "both inputs")
        assert outcomes(service) == {"passthrough": 2.0}

        def pruned() -> bool:
            nominals = {nominal for _, nominal in _ledger_inputs(config.ledger_path)}
            return not any(n.startswith("2025-06-01") for n in nominals)

        wait_for(pruned, 10.0, "the scheduled prune of the old input")
        kept = _ledger_inputs(config.ledger_path)
    assert [(p, datetime.fromisoformat(n)) for p, n in kept] == [("RY", recent.time)]
    assert set(check_outputs(config.outgoing)) == {old.path.name, recent.path.name}


# -- fallbacks ------------------------------------------------------------------------------------


def _checkpoint(directory: Path, product: str, interval_minutes: int) -> Path:
    """A small network checkpoint trained (by its metadata) for ``product`` fields."""
    import torch

    from radinfill.model import build, save_checkpoint

    torch.manual_seed(0)
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    meta = {"product": product, "interval_minutes": interval_minutes}
    return save_checkpoint(model, directory, meta)


def _failing(*args: object, **kwargs: object) -> np.ndarray:
    raise RuntimeError("the model blew up")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reason", ["interval", "model_to_baseline"])
def test_a_model_that_cannot_infill_is_counted_as_a_fallback_on_the_endpoint(
    stream: StreamManifest, tmp_path: Path, reason: str
) -> None:
    """A network trained for hourly products meets a 5-minute RY field (``interval``), or the
    network raises (``model_to_baseline``): the fallback baseline infills the hole, the sidecar
    says so, and the scraped ``radinfill_fallbacks_total{product,reason}`` counts it."""
    hourly = reason == "interval"
    model = _checkpoint(tmp_path / "ckpt", "RW" if hourly else "RY", 60 if hourly else 5)
    config = make_config(tmp_path, model=str(model))
    step = _holed(stream)
    with running(config) as service:
        assert service.slot is not None
        assert service.server is not None
        engine = service.slot.current.engine
        assert engine is not None  # the network was loaded, not a start-up fallback
        if not hourly:
            engine._forward_all = _failing
        port = service.server.port
        assert sample(scrape(port), "radinfill_fallbacks_total") is None
        deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: handled(service), SLOW, "the holed file")
        families = scrape(port)
    assert sample(families, "radinfill_fallbacks_total", product="RY", reason=reason) == 1.0
    assert sample(families, "radinfill_products_total", product="RY", outcome="processed") == 1
    record = check_outputs(config.outgoing)[step.path.name]
    assert (record["method"], record["fallback"]) == (config.fallback, reason)
    values = radolan.read_one(config.outgoing / step.path.name).values
    hole = holes.detect(radolan.read_one(step.path)).failure
    assert np.isfinite(values[hole]).all()


# -- a full disk ----------------------------------------------------------------------------------


class _Countdown(Faults):
    """Each rule fails every call until it has failed ``times`` times (None: for ever)."""

    def __init__(self, op: str, code: int, times: int | None = None) -> None:
        super().__init__({op: (code, 1.0)})
        self.times = times

    def check(self, operation: str, *, correction: bool = False) -> None:
        if self.times is None or self.injected < self.times:
            super().check(operation, correction=correction)


@pytest.mark.timeout(120)
def test_a_full_disk_publishes_no_partial_set_and_the_product_is_retried_until_written(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """The netCDF write hits ENOSPC on every try: the product fails (no in-place retry of a
    full disk), no sidecar or temporary file appears, and the service retries it after its
    backoff, again and again. Once space is back (two transient EIO left, in the sidecar write,
    retried in place) the set is complete and consistent, and the endpoint counts it all."""
    config = make_config(tmp_path, reconcile_interval_s=0.3, retry_backoff_s=0.3)
    step = _holed(stream)
    outgoing = config.outgoing
    with running(config) as service:
        assert service.pipeline is not None
        assert service.server is not None
        writer = service.pipeline.writer
        full = _Countdown("write_netcdf", errno.ENOSPC)
        writer.faults = full
        deliver(step.path, _incoming(tmp_path))
        wait_for(lambda: full.injected >= 3, SLOW, "three failed tries on the full disk")
        failed = sample(scrape(service.server.port), "radinfill_products_total", outcome="failed")
        assert (failed or 0) >= 2
        # Between tries: the RADOLAN file is complete, nothing vouches for a netCDF file.
        assert sorted(p.name for p in outgoing.iterdir()) == [step.path.name]
        radolan.read_one(outgoing / step.path.name)

        writer.faults = _Countdown("write_sidecar", errno.EIO, times=2)
        wait_for(lambda: outcomes(service).get("processed"), SLOW, "the product once space is back")
        families = scrape(service.server.port)
    retries = "radinfill_io_retries_total"
    assert sample(families, retries, op="write_sidecar") == 2
    assert sample(families, retries, op="write_netcdf") is None  # a full disk is not retried
    assert sample(families, "radinfill_products_total", product="RY", outcome="processed") == 1
    record = check_outputs(outgoing)[step.path.name]
    assert set(record["outputs"]) == {step.path.name, f"{step.path.name}.nc"}


# -- a product on another grid ---------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_first_field_on_another_grid_costs_only_itself_once_grids_are_configured(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """Without ``[service] grids`` the first field of a product sets its grid (kept in the
    ledger across restarts), so an odd grid first makes the normal fields ``wrong_grid``.
    Configuring the grid and restarting takes those files again: nothing is lost."""
    before = stream.steps[0].time - timedelta(minutes=5)
    odd = write_stream(tmp_path / "odd", grid=(240, 240), steps=1, start=before, seed=5).steps[0]
    incoming = _incoming(tmp_path)
    deliver(odd.path, incoming)
    normal = stream.steps[:3]
    config = make_config(tmp_path)
    with running(config) as service:
        wait_for(lambda: handled(service) >= 1, SLOW, "the odd field")
        for step in normal:
            deliver(step.path, incoming)
        wait_for(lambda: handled(service) >= 4, SLOW, "the normal fields")
        assert outcomes(service).get("quarantined") == 3
    with sqlite3.connect(f"file:{config.ledger_path}?mode=ro", uri=True) as db:
        assert db.execute("SELECT rows, cols FROM grids").fetchall() == [(240, 240)]

    pinned = make_config(tmp_path, grids={"RY": f"{GRID[0]}x{GRID[1]}"})
    with running(pinned) as service:
        wait_for(lambda: handled(service) >= 3, SLOW, "the normal fields again")
        assert outcomes(service).get("quarantined", 0) == 0
    published = check_outputs(pinned.outgoing)
    assert {step.path.name for step in normal} <= set(published)
    assert odd.path.name in published  # processed before the grid was pinned: kept
