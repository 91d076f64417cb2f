"""``radinfill demo``: the service, end to end, on data it generates itself.

The demo does what an operator's first day looks like, in one temporary tree:

1. writes a synthetic RY stream (900 x 900, radars failing and recovering, with its truth), a
   short synthetic ODIM_H5 RV stream (DWD's format since December 2025: ODIM in, ODIM out) and,
   when the real sample data is present (``../shared/data/radolan``), takes the real YW sequence
   of 2017-08-16 too (Quelle: Deutscher Wetterdienst);
2. writes a service configuration and starts the real service on it (the watchdog observer,
   the ledger, the default infill ``baseline:advection_boundary`` or the model given, the
   metrics endpoint);
3. delivers the products into the incoming directory one by one, the way an upstream feed does
   (written to a temporary name, then renamed);
4. waits until every product has its outputs, scrapes the metrics endpoint over HTTP, stops the
   service as SIGTERM would, and prints a summary: products, holes, latency percentiles, the
   infill scores against the synthetic truth, and where the outputs, quicklooks and the metrics
   snapshot are.

Nothing is downloaded; without the sample data the demo runs on the synthetic stream alone.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from radinfill import radolan, stream
from radinfill.daemon.service import Service
from radinfill.daemon.service_config import parse
from radinfill.daemon.telemetry import configure_logging
from radinfill.defaults import DEFAULT_MODEL, sample_data_dir
from radinfill.model import baselines

#: The real rainy 5-minute sequence among the samples.
_REAL_SEQUENCE = Path("radolan_to_netcdf") / "radolan_yw"
#: The synthetic ODIM_H5 stream (DWD's current format): RV products on a crop of DE1200.
ODIM_STEPS = 6
ODIM_GRID = (400, 400)
#: Longest wait (s) for one product's outputs before the next product is delivered anyway.
DELIVERY_TIMEOUT_S = 60.0


def run(
    out: Path,
    *,
    steps: int = 18,
    grid: tuple[int, int] = (900, 900),
    model: str | None = None,
    data: Path | None = None,
    real: bool = True,
    timeout_s: float = 900.0,
) -> int:
    """Run the demo in ``out`` (replaced); returns the exit status (0 when every product got
    its outputs)."""
    if out.exists():
        shutil.rmtree(out)
    feed = out / "feed"
    print(
        f"writing a synthetic RY stream of {steps} products ({grid[0]}x{grid[1]}) ...", flush=True
    )
    # The streams are made in a child process: their generation peaks at several hundred MB
    # that this process, which then runs the service, would otherwise keep.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        manifest, odim = (job.result() for job in _write_streams(pool, feed, steps, grid))
    deliveries = [*manifest.files, *odim.files]
    samples = data if data is not None else sample_data_dir()
    if real and samples is not None and (samples / _REAL_SEQUENCE).is_dir():
        real_files = sorted((samples / _REAL_SEQUENCE).glob("raa01-yw*"))
        deliveries += real_files
        print(f"adding {len(real_files)} real YW products of 2017-08-16 (Quelle: DWD)")
    spec = model_spec(model)
    document = service_document(spec)
    (out / "service.toml").write_text(_toml(document))
    config = parse(document, base=out, source=str(out / "service.toml"))

    log = (out / "service.log").open("w")
    configure_logging(fmt="json", level="info", stream=log)
    service = Service(config, configure_logs=False)
    print(f"starting the service with model {spec} (log: {out / 'service.log'}) ...", flush=True)
    service.start()
    try:
        _deliver(deliveries, config.incoming[0], config.outgoing)
        done = _wait(config.outgoing, len(deliveries), timeout_s)
        service.shadow_due.set()  # one quality estimate on the newest complete field
        _wait_for(lambda: service.shadow_runs > 0, 60.0)
        assert service.server is not None
        metrics = _scrape(service.server.port)
        latencies = list(service.latencies)
    finally:
        service.stop()
        service.shutdown()
        log.close()
    (out / "metrics.prom").write_text(metrics)
    sidecars = [json.loads(p.read_text()) for p in sorted(config.outgoing.glob("*.json"))]
    _summary(sidecars, latencies, len(deliveries))
    scores = _scores(manifest, config.outgoing)
    looks = _quicklooks(sidecars, config.outgoing, out / "quicklooks")
    print(
        f"\noutputs:     {config.outgoing}  (the input's format + netCDF + JSON sidecar per input)"
    )
    same = sum(_is_odim(config.outgoing / path.name) for path in odim.files)
    print(
        f"ODIM_H5:     {same} of {len(odim.files)} ODIM inputs answered in ODIM_H5 (quality field)"
    )
    print(f"quicklooks:  {', '.join(str(p) for p in looks) or '-'}")
    print(f"metrics:     {out / 'metrics.prom'} (scraped from the live endpoint)")
    print(f"config:      {out / 'service.toml'}   ledger: {config.ledger_path}")
    if scores:
        print("\nscores over the synthetic outages (mm/h, hole pixels only):")
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    if done < len(deliveries):
        print(f"\nonly {done} of {len(deliveries)} products got outputs in {timeout_s:.0f} s")
        return 1
    return 0


def model_spec(model: str | None) -> str:
    """The ``[service] model`` of the demo: a model directory given on the command line is
    made absolute, since the configuration is read relative to ``out``; a baseline stays."""
    spec = model or DEFAULT_MODEL
    return spec if baselines.spec_method(spec) is not None else str(Path(spec).resolve())


def service_document(model: str) -> dict[str, dict[str, object]]:
    """The service configuration of a throw-away tree (paths relative to its root): inotify,
    a free metrics port, no scheduled shadow check. Also the benchmark's configuration."""
    return {
        "service": {
            "incoming": ["incoming"],
            "outgoing": "outgoing",
            "state_dir": "state",
            "quarantine": "quarantine",
            "model": model,
            "window": 6,
            "watch": "inotify",
            "settle_s": 0.5,
            "reconcile_interval_s": 30,
            "shadow_interval_s": 0,
        },
        "metrics": {"address": "127.0.0.1", "port": 0},
        "logging": {"format": "json", "level": "info"},
    }


def _toml(document: dict[str, dict[str, object]]) -> str:
    lines = []
    for section, values in document.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _deliver(files: list[Path], incoming: Path, outgoing: Path) -> None:
    """Copy each file in as an upstream feed would (temporary name, then rename), the next one
    once the previous one has its outputs: a real feed delivers every 5 minutes, far slower
    than the service works, so the latencies printed are the service's, not a queue's."""
    incoming.mkdir(parents=True, exist_ok=True)
    for number, source in enumerate(files, 1):
        tmp = incoming / f".{source.name}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, incoming / source.name)
        if number % 6 == 0 or number == len(files):
            print(f"  delivered {number}/{len(files)}", flush=True)
        _wait(outgoing, number, DELIVERY_TIMEOUT_S)


def _is_odim(path: Path) -> bool:
    """Whether ``path`` is an ODIM-HDF5 file (by its magic bytes)."""
    try:
        return radolan.sniff(path.read_bytes()[:512]) == "hdf5"
    except OSError:
        return False


def _wait(outgoing: Path, expected: int, timeout_s: float) -> int:
    """Wait until ``expected`` sidecars exist (the last file of each output set)."""
    _wait_for(lambda: len(list(outgoing.glob("*.json"))) >= expected, timeout_s)
    return len(list(outgoing.glob("*.json")))


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.25)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def _summary(sidecars: list[dict[str, Any]], latencies: list[float], delivered: int) -> None:
    filled = [s for s in sidecars if s["hole_pixels"]]
    methods = sorted({s["method"] for s in filled})
    print(
        f"\n{len(sidecars)} of {delivered} products written: {len(filled)} infilled "
        f"({', '.join(methods) or '-'}), {len(sidecars) - len(filled)} passed through unchanged"
    )
    if filled:
        pixels = [s["hole_pixels"] for s in filled]
        radars = sorted({r for s in filled for r in s["missing_radars"]})
        print(
            f"hole pixels per infilled product: median {int(np.median(pixels))}, "
            f"max {max(pixels)}; missing radars seen: {', '.join(radars) or '-'}"
        )
    if latencies:
        p50, p95, p100 = np.percentile(latencies, [50, 95, 100])
        print(
            f"end-to-end latency (arrival -> outputs renamed): p50 {p50:.2f} s, "
            f"p95 {p95:.2f} s, max {p100:.2f} s"
        )


def _write_streams(
    pool: Executor, feed: Path, steps: int, grid: tuple[int, int]
) -> list[Future[stream.StreamManifest]]:
    """The synthetic RY stream with its truth and the ODIM_H5 RV stream, written by ``pool``."""
    print(f"writing a synthetic ODIM_H5 RV stream of {ODIM_STEPS} products (DWD's format) ...")
    streams: dict[str, dict[str, Any]] = {
        "synthetic": {
            "product": "RY",
            "grid": grid,
            "steps": steps,
            "start": datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
            "seed": 7,
            "outage_options": {"p_fail": 0.08},
        },
        "odim": {
            "product": "RV",
            "grid": ODIM_GRID,
            "steps": ODIM_STEPS,
            "start": datetime(2025, 12, 1, 6, 0, tzinfo=UTC),
            "seed": 11,
            "outage_options": {"p_fail": 0.2},
            "file_format": "odim",
        },
    }
    return [
        pool.submit(stream.write_stream, feed / name, preset="mixed", **options)
        for name, options in streams.items()
    ]


def _scores(manifest: stream.StreamManifest, outgoing: Path) -> dict[str, float]:
    """Hole scores of the synthetic outputs against the stream's truth."""
    import xarray as xr

    from radinfill import scores

    with xr.open_dataset(manifest.truth, engine="netcdf4") as truth_ds:
        truth = truth_ds[manifest.product].load().values
        masks = truth_ds["infill_mask"].load().values.astype(bool)
    outputs = []
    for step in manifest.steps:
        target = outgoing / Path(step.path).name
        outputs.append(
            radolan.read_one(target).values if target.exists() else np.full(truth.shape[1:], np.nan)
        )
    to_rate = 60.0 / manifest.interval_minutes
    result = scores.evaluate(truth * to_rate, np.stack(outputs) * to_rate, masks)
    return {k: result[k] for k in ("rmse", "mae", "csi_1", "fss", "blur_ratio")}


def _quicklooks(sidecars: list[dict[str, Any]], outgoing: Path, directory: Path) -> list[Path]:
    """Before/after panels of the two products with the largest holes."""
    from radinfill import holes, plots

    worst = sorted(sidecars, key=lambda s: s["hole_pixels"], reverse=True)[:2]
    paths = []
    for record in worst:
        if not record["hole_pixels"]:
            continue
        before = radolan.read_one(record["input"]["path"])
        name = Path(record["input"]["path"]).name
        after = radolan.read_one(outgoing / name)
        target = directory / f"{before.product}_{before.time:%Y%m%d%H%M}.png"
        directory.mkdir(parents=True, exist_ok=True)
        paths.append(plots.before_after(before, after, report=holes.detect(before), path=target))
    return paths
