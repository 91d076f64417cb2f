"""Benchmark the service: end-to-end latency, stage times, backlog throughput, memory over time.

Usage: ``python bench/service.py [--products 24] [--grid 900x900] [--model SPEC]
[--interval 2.0]``

Three measurements on the same synthetic RY stream (``radinfill synth``: ``--products``
products with radar outages):

* **floor**: per product, what any service must do with the file: read it, decode it, encode
  it and write it with fsync + rename (:func:`radinfill.atomic.write_bytes`); no holes, no
  model, no netCDF.
* **live**: the service runs in this process on a temporary tree; products are delivered one
  every ``--interval`` seconds (temporary name, then rename, as an upstream feed does).
  End-to-end latency = file arrival -> all outputs renamed; stage times come from the
  service's own stage histograms. The resident set size (RSS) is sampled every 0.5 s.
* **backlog**: all products are in the incoming directory before the service starts;
  throughput = products / time until the last output.

*Non-model overhead* is the sum of the mean times of every stage but ``infill``: what the
service does per product besides the infill (decoding, checks, ledger, hole detection,
encoding, same-format product + netCDF + sidecar with fsyncs), printed as a ratio to the
floor. *Queue wait* is the rest of the end-to-end
latency (settling, waiting behind the product in hand, ledger). Default model: the shipped
one when installed, else the advection baseline (``--model baseline:advection``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

#: The pipeline's stages, in order (the ``stage`` label of ``radinfill_stage_duration_seconds``).
STAGES = ("read", "check", "classify", "holes", "infill", "encode", "write", "record")


def rss_mb() -> float:
    """This process's resident set size (MB) from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
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


def config(root: Path, model: str):
    """The demo's service configuration on a fresh tree under ``root``."""
    from radinfill.daemon.demo import service_document
    from radinfill.daemon.service_config import parse

    return parse(service_document(model), base=root)


def run_service(root: Path, model: str, files: list[Path], interval: float | None) -> dict:
    """Run the service on ``files``: delivered every ``interval`` s, or all before start."""
    from radinfill.daemon.service import Service
    from radinfill.daemon.telemetry import configure_logging

    settings = config(root, model)
    incoming = settings.incoming[0]
    incoming.mkdir(parents=True)
    if interval is None:
        for path in files:
            shutil.copyfile(path, incoming / path.name)
    service = Service(settings, configure_logs=False)
    rss: list[tuple[float, float]] = []
    sampling = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not sampling.wait(0.5):
            rss.append((time.monotonic() - t0, rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    service.start()
    if interval is not None:
        for path in files:
            tmp = incoming / f".{path.name}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, incoming / path.name)
            time.sleep(interval)
    while service.processed < len(files) and time.perf_counter() - started < 1800:
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    stages = {
        stage: _histogram_mean(service.metrics.registry, "radinfill_stage_duration_seconds", stage)
        for stage in STAGES
    }
    latencies = list(service.latencies)
    service.stop()
    service.shutdown()
    sampling.set()
    configure_logging(fmt="json", level="warning")
    return {"elapsed": elapsed, "latencies": latencies, "stages": stages, "rss": rss}


def _histogram_mean(registry, name: str, stage: str) -> float:
    total = registry.get_sample_value(f"{name}_sum", {"stage": stage}) or 0.0
    count = registry.get_sample_value(f"{name}_count", {"stage": stage}) or 0.0
    return total / count if count else float("nan")


def main() -> None:
    from radinfill import defaults, stream
    from radinfill.daemon.telemetry import configure_logging
    from radinfill.radolan.grids import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=24)
    parser.add_argument("--grid", default="900x900")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--interval", type=float, default=2.0, help="s between deliveries")
    args = parser.parse_args()
    model = args.model or defaults.DEFAULT_MODEL
    configure_logging(fmt="json", level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = stream.write_stream(
            root / "feed",
            grid=parse_size(args.grid),
            steps=args.products,
            start=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
            seed=11,
            outage_options={"p_fail": 0.08},
        )
        files = list(manifest.files)
        base = floor(files, root / "floor")
        live = run_service(root / "live", model, files, args.interval)
        backlog = run_service(root / "backlog", model, files, None)

    e2e = np.array(live["latencies"])
    p50, p95, p99 = np.percentile(e2e, [50, 95, 99])
    stages = live["stages"]
    overhead = sum(v for k, v in stages.items() if k != "infill")
    wait = float(e2e.mean()) - overhead - stages["infill"]
    print(f"service benchmark: {args.products} RY products {args.grid}, model {model}")
    print(f"{'measure':38} {'value':>10}")
    rows = [
        ("floor: read+decode+encode+fsync (s)", statistics.mean(base)),
        ("live end-to-end p50 (s)", p50),
        ("live end-to-end p95 (s)", p95),
        ("live end-to-end p99 (s)", p99),
        *((f"stage {k} mean (s)", v) for k, v in live["stages"].items()),
        ("non-model overhead mean (s)", overhead),
        ("non-model overhead / floor", overhead / statistics.mean(base)),
        ("queue wait mean (s)", wait),
        ("backlog throughput (products/s)", args.products / backlog["elapsed"]),
        ("backlog end-to-end p50 (s)", float(np.percentile(backlog["latencies"], 50))),
    ]
    for name, value in rows:
        print(f"{name:38} {value:10.3f}")
    samples = live["rss"]
    if samples:
        third = max(len(samples) // 3, 1)
        first = statistics.mean(v for _, v in samples[:third])
        last = statistics.mean(v for _, v in samples[-third:])
        print(f"{'RSS first third of live run (MB)':38} {first:10.1f}")
        print(f"{'RSS last third of live run (MB)':38} {last:10.1f}")
        print(f"{'RSS growth last/first':38} {last / first:10.3f}")


if __name__ == "__main__":
    main()
