"""Benchmark the service: end-to-end latency, stage times, backlog throughput, memory over time.

Usage: ``python bench/service.py [--products 24] [--grid 900x900] [--model SPEC]
[--tile ROWSxCOLS] [--interval 2.0] [--outage KM [--data DIR]]``

Three measurements on the same stream of ``--products`` products (``bench/workload.py``):
a synthetic RY stream whose radars fail at random (the default), or with ``--outage KM``
exactly one radar's KM disc missing in every field (synthetic, or the first products of the
real sequence in ``--data``, e.g. the YW 1100 x 900 sample of 2017-08-16):

* **floor**: per product, what any service must do with the file: read it, decode it, encode
  it and write it with fsync + rename (:func:`radinfill.atomic.write_bytes`); no holes, no
  model, no netCDF.
* **live**: the service runs in this process on a temporary tree; products are delivered one
  every ``--interval`` seconds (temporary name, then rename, as an upstream feed does).
  End-to-end latency = file arrival -> all outputs renamed (the service's own measure);
  *arrival -> drop-in* = delivery -> the same-format product renamed into the output tree,
  as a downstream watcher sees it (inotify on the output tree). Stage times come from the
  service's own stage histograms. The resident set size (RSS) is sampled every
  :data:`RSS_PERIOD_S`; its peak is the largest sample. The RSS once the service has started
  (its imports, the model loaded and checked) is printed too: what no product's work can
  lower.
  The first product after the start pays one-off costs (coverage masks of the grid, the
  allocator's first large blocks): the live latencies and stage means are those of the
  products after it, and its own arrival -> drop-in time is printed apart.
* **backlog**: all products are in the incoming directory before the service starts;
  throughput = products / time until the last output. It runs in a fresh (spawned) process,
  as a service started on a backlog does: a second service in the live run's process would
  find the first one's module-level caches and heap there.

*Non-model overhead on the drop-in path* is the sum of the mean times of the stages before
the drop-in product is out, but ``infill`` (reading and decoding, checks, ledger, hole
detection, encoding, the product written with fsync), printed as a ratio to the floor; *rest
of the set* is what follows it (the netCDF and the sidecar with fsyncs, the ledger record).
*Queue wait* is the rest of the end-to-end latency (settling, waiting behind the product in
hand). Default model: the service's (``baseline:advection_boundary``); the shipped network
with ``--model assets/model``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import workload
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

#: The pipeline's stages, in order (the ``stage`` label of ``radinfill_stage_duration_seconds``).
STAGES = ("read", "check", "classify", "holes", "infill", "encode", "publish", "write", "record")
#: Seconds between two RSS samples.
RSS_PERIOD_S = 0.1
#: Probability per radar and step that it fails in the default synthetic stream.
P_FAIL = 0.08


def rss_mb(key: str = "VmRSS") -> float:
    """This process's resident set size (``VmRSS``) or its peak (``VmHWM``), MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def floor(files: list[Path], out: Path) -> list[float]:
    """Seconds per product to read, decode, encode and atomically write it."""
    from radinfill import atomic, radolan

    out.mkdir(parents=True, exist_ok=True)
    times = []
    for path in files:
        start = time.perf_counter()
        field = radolan.read_one(path)
        atomic.write_bytes(out / path.name, radolan.encode(field))
        times.append(time.perf_counter() - start)
    return times


def config(root: Path, model: str, tile: str):
    """The demo's service configuration on a fresh tree under ``root`` (``tile``: the network's
    ``[service] tile``, "" for whole crops)."""
    from radinfill.daemon.demo import service_document
    from radinfill.daemon.service_config import parse

    document = service_document(model)
    document["service"]["tile"] = tile
    return parse(document, base=root)


class Published(FileSystemEventHandler):
    """When each file name appeared in the output tree (``time.time()``, first rename only)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def on_moved(self, event: FileSystemEvent) -> None:
        self.seen.setdefault(Path(str(event.dest_path)).name, time.time())


def run_service(
    root: Path, model: str, tile: str, files: list[Path], interval: float | None
) -> dict:
    """Run the service on ``files``: delivered every ``interval`` s, or all before start."""
    from radinfill.daemon.service import Service

    settings = config(root, model, tile)
    incoming = settings.incoming[0]
    incoming.mkdir(parents=True)
    settings.outgoing.mkdir(parents=True, exist_ok=True)
    delivered: dict[str, float] = {}
    if interval is None:
        for path in files:
            shutil.copyfile(path, incoming / path.name)
    published = Published()
    observer = InotifyObserver()
    observer.schedule(published, str(settings.outgoing), recursive=True)
    observer.start()
    service = Service(settings, configure_logs=False)
    rss: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(RSS_PERIOD_S):
            rss.append(rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    service.start()
    at_start = rss_mb()
    warm = _stage_totals(service.metrics.registry)  # nothing: the backlog's stages all count
    if interval is not None:
        for n, path in enumerate(files):
            if n == 1:  # the first product after a start pays one-off costs: timed apart
                while service.processed < 1 and time.perf_counter() - started < 600:
                    time.sleep(0.05)
                warm = _stage_totals(service.metrics.registry)
            tmp = incoming / f".{path.name}.tmp"
            shutil.copyfile(path, tmp)
            delivered[path.name] = time.time()
            os.replace(tmp, incoming / path.name)
            time.sleep(interval)
    while service.processed < len(files) and time.perf_counter() - started < 1800:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    done = _stage_totals(service.metrics.registry)
    stages = {
        stage: (done[stage][0] - warm[stage][0]) / max(done[stage][1] - warm[stage][1], 1)
        for stage in STAGES
    }
    latencies = list(service.latencies)
    service.stop()
    service.shutdown()
    observer.stop()
    observer.join()
    sampling.set()
    _quiet_logs()
    dropin = [published.seen[name] - t for name, t in delivered.items() if name in published.seen]
    return {
        "elapsed": elapsed,
        "latencies": latencies,
        "dropin": dropin,
        "stages": stages,
        "rss": rss,
        "rss_at_start": at_start,
        "rss_peak": rss_mb("VmHWM"),
    }


def _quiet_logs() -> None:
    """Warnings and errors only, as JSON (the benchmark's tables stay readable)."""
    from radinfill.daemon.telemetry import configure_logging

    configure_logging(fmt="json", level="warning")


def _stage_totals(registry) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of every stage so far, from the service's stage histogram."""
    name = "radinfill_stage_duration_seconds"
    return {
        stage: tuple(
            registry.get_sample_value(f"{name}_{part}", {"stage": stage}) or 0.0
            for part in ("sum", "count")
        )
        for stage in STAGES
    }


def make_stream(
    out: Path, grid: tuple[int, int], steps: int, outage_km: float | None, data: Path | None
) -> list[Path]:
    """The benchmark's products (``bench/workload.py``), written in a child process so that
    their generation leaves no memory behind in the process measured."""
    with ProcessPoolExecutor(max_workers=1) as pool:
        if outage_km is None:
            job = pool.submit(workload.synthetic, out, grid, steps, P_FAIL)
        else:
            job = pool.submit(workload.one_outage, out, grid, steps, radius_km=outage_km, data=data)
        return job.result()


def main() -> None:
    from radinfill import defaults
    from radinfill.radolan.grids import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=24)
    parser.add_argument("--grid", default="900x900")
    parser.add_argument("--model", default=None, help="default: the service's default")
    parser.add_argument("--interval", type=float, default=2.0, help="s between deliveries")
    parser.add_argument(
        "--outage", type=float, default=None, metavar="KM", help="one radar's KM disc missing"
    )
    parser.add_argument("--data", type=Path, default=None, help="real sequence (with --outage)")
    parser.add_argument(
        "--tile", default="", metavar="ROWSxCOLS", help="the network's [service] tile"
    )
    args = parser.parse_args()
    model = args.model or defaults.DEFAULT_MODEL
    _quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        grid = parse_size(args.grid)
        files = make_stream(root / "feed", grid, args.products, args.outage, args.data)
        base = floor(files, root / "floor")
        live = run_service(root / "live", model, args.tile, files, args.interval)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn, initializer=_quiet_logs) as pool:
            backlog = pool.submit(
                run_service, root / "backlog", model, args.tile, files, None
            ).result()

    e2e, dropin = np.array(live["latencies"][1:]), np.array(live["dropin"][1:])
    stages = live["stages"]
    dropin_path = STAGES[: STAGES.index("publish") + 1]
    overhead = sum(v for k, v in stages.items() if k in dropin_path and k != "infill")
    rest = sum(v for k, v in stages.items() if k not in dropin_path)
    wait = float(e2e.mean()) - overhead - rest - stages["infill"]
    workload_name = (
        f"one {args.outage:g} km outage{f' in {args.data.name}' if args.data else ''}"
        if args.outage
        else f"synthetic outages p_fail {P_FAIL}"
    )
    tiles = f", tiles {args.tile}" if args.tile else ""
    print(
        f"service benchmark: {len(files)} products {args.grid}, {workload_name}, "
        f"model {model}{tiles}"
    )
    print(f"{'measure':38} {'value':>10}")
    rows = [
        ("floor: read+decode+encode+fsync (s)", statistics.mean(base)),
        ("live end-to-end p50 (s)", float(np.percentile(e2e, 50))),
        ("live end-to-end p95 (s)", float(np.percentile(e2e, 95))),
        ("live arrival -> drop-in p50 (s)", float(np.percentile(dropin, 50))),
        ("live arrival -> drop-in p95 (s)", float(np.percentile(dropin, 95))),
        ("first product: arrival -> drop-in (s)", live["dropin"][0]),
        *((f"stage {k} mean (s)", v) for k, v in live["stages"].items()),
        ("non-model drop-in path mean (s)", overhead),
        ("non-model drop-in path / floor", overhead / statistics.mean(base)),
        ("rest of the set mean (s)", rest),
        ("queue wait mean (s)", wait),
        ("backlog throughput (products/s)", len(files) / backlog["elapsed"]),
        ("backlog end-to-end p50 (s)", float(np.percentile(backlog["latencies"], 50))),
    ]
    for name, value in rows:
        print(f"{name:38} {value:10.3f}")
    samples = live["rss"]
    third = max(len(samples) // 3, 1)
    first = statistics.mean(samples[:third])
    last = statistics.mean(samples[-third:])
    print(f"{'RSS started, before any product (MB)':38} {live['rss_at_start']:10.1f}")
    print(f"{'RSS first third of live run (MB)':38} {first:10.1f}")
    print(f"{'RSS last third of live run (MB)':38} {last:10.1f}")
    print(f"{'RSS growth last/first':38} {last / first:10.3f}")
    print(f"{'RSS peak, live run (MB)':38} {max(samples):10.1f}")
    print(f"{'RSS peak, backlog, own process (MB)':38} {backlog['rss_peak']:10.1f}")


if __name__ == "__main__":
    main()
