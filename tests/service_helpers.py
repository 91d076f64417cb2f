"""Helpers of the service tests: configurations, a running service, deliveries, scrapes, checks.

Everything is real: the service runs with its watchdog observers, its metrics HTTP server and
its ledger, in a thread of the test process (:func:`running`) or as ``python -m radinfill serve``
(:class:`ServeProcess`); inputs arrive the way upstream writers deliver them (:func:`deliver`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from radinfill import radolan
from radinfill.daemon import service_config
from radinfill.daemon.sdnotify import Notifier
from radinfill.daemon.service import Service
from radinfill.daemon.telemetry import Metrics
from radinfill.stream import StreamManifest, write_stream

#: Settings that keep a test run short: fast settling, frequent reconcile scans, no shadow job.
FAST = {
    "settle_s": 0.3,
    "settle_timeout_s": 10.0,
    "reconcile_interval_s": 1.0,
    "poll_interval_s": 0.2,
    "horizon_s": 1e9,
    "shadow_interval_s": 0.0,
    "model": "baseline:advection",
    "device": "cpu",
}


def oft_stream(directory: Path, steps: int) -> StreamManifest:
    """``steps`` RY products from 2025-06-01 12:00 UTC, 200 x 200, in which radar oft fails
    now and then (seed 0: at steps 5, 9-11 and 16-19): the service tests' feed."""
    return write_stream(
        directory,
        grid=(200, 200),
        steps=steps,
        start=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        seed=0,
        outage_options={
            "kinds": ("full",),
            "p_fail": 0.2,
            "mean_duration_steps": 4,
            "sites": ("oft",),
        },
    )


def service_document(root: Path, **service: Any) -> dict[str, Any]:
    """A service TOML document with its directories under ``root`` and :data:`FAST` timings;
    ``service`` overrides ``[service]`` keys."""
    values = {
        "incoming": [str(root / "incoming")],
        "outgoing": str(root / "outgoing"),
        "state_dir": str(root / "state"),
        "quarantine": str(root / "quarantine"),
        **FAST,
        **service,
    }
    return {"service": values, "metrics": {"port": 0}, "logging": {"format": "json"}}


def make_config(root: Path, **service: Any) -> service_config.ServiceConfig:
    """A validated configuration (see :func:`service_document`)."""
    return service_config.parse(service_document(root, **service), base=root)


def write_toml(path: Path, document: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a two-level document of strings, numbers, booleans and lists as TOML."""
    lines: list[str] = []
    for section, values in document.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def running(config: service_config.ServiceConfig) -> Iterator[Service]:
    """A started in-process service (threads, observers, HTTP server), stopped on exit."""
    service = Service(config, notifier=Notifier(""), metrics=Metrics(), configure_logs=False)
    service.start()
    try:
        yield service
    finally:
        service.stop()
        service.shutdown()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def count(service: Service, name: str, **labels: str) -> float:
    """A sample of the service's own registry (0 when the series does not exist yet)."""
    value = service.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def outcomes(service: Service) -> dict[str, float]:
    """``radinfill_products_total`` summed over products, by outcome."""
    totals: dict[str, float] = {}
    for family in service.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "radinfill_products_total":
                outcome = sample.labels["outcome"]
                totals[outcome] = totals.get(outcome, 0.0) + sample.value
    return totals


def handled(service: Service) -> float:
    """Inputs finished with any outcome."""
    return sum(outcomes(service).values())


def deliver(source: Path, directory: Path, how: str = "copy", name: str | None = None) -> Path:
    """Put ``source``'s bytes into ``directory`` the way a writer would.

    ``copy``: create, write, close (one close-after-write event). ``rename``: write a hidden
    ``.NAME.tmp`` and rename it in. ``slow``: a slow copy whose partial file is visible for
    about two seconds (see :func:`slow_write`).
    """
    target = directory / (name or source.name)
    data = source.read_bytes()
    if how == "copy":
        target.write_bytes(data)
    elif how == "rename":
        tmp = directory / f".{target.name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, target)
    elif how == "slow":
        slow_write(target, data)
    else:
        raise ValueError(f"unknown delivery {how!r}")
    return target


def slow_write(target: Path, data: bytes, chunks: int = 8, pause_s: float = 0.25) -> list[int]:
    """Write ``data`` in ``chunks`` pieces with ``pause_s`` between them through one open file,
    flushing each, so that readers see the growing file; returns the sizes seen on disk
    between the pieces."""
    step = -(-len(data) // chunks)
    sizes = []
    with open(target, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            sizes.append(os.stat(target).st_size)
            time.sleep(pause_s)
    return sizes


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_sets(outgoing: Path) -> dict[str, tuple[Path, Path, Path]]:
    """Sidecar stem -> (RADOLAN, netCDF, sidecar) of every complete output set."""
    sets = {}
    for sidecar in sorted(outgoing.glob("*.json")):
        stem = sidecar.name.removesuffix(".json")
        sets[stem] = (outgoing / stem, outgoing / f"{stem}.nc", sidecar)
    return sets


def check_outputs(outgoing: Path, state: str | None = None) -> dict[str, dict[str, Any]]:
    """Assert the output tree is consistent; returns the sidecars by RADOLAN file name.

    Consistent: no hidden (temporary) files or links but ``latest``; every file belongs to a
    set of RADOLAN file, netCDF and sidecar; the sidecar's checksums match the files; every
    RADOLAN file decodes. ``state``: a hidden directory that belongs there (backfill's).
    """
    entries = [p for p in outgoing.iterdir() if p.name != state]
    hidden = sorted(p.name for p in entries if p.name.startswith("."))
    assert not hidden, f"temporary files left in {outgoing}: {hidden}"
    links = {p.name for p in entries if p.is_symlink()}
    assert links <= {"latest"}, f"unexpected links in {outgoing}: {sorted(links)}"
    names = {p.name for p in entries if p.is_file() and not p.is_symlink()}
    sidecars: dict[str, dict[str, Any]] = {}
    for stem, files in output_sets(outgoing).items():
        record = json.loads(files[2].read_text())
        assert set(record["outputs"]) == {files[0].name, files[1].name}, record["outputs"]
        for file in files[:2]:
            assert sha256(file) == record["outputs"][file.name], f"checksum of {file}"
        radolan.read_one(files[0])
        sidecars[stem] = record
    stray = names - {f.name for files in output_sets(outgoing).values() for f in files}
    assert not stray, f"files outside a complete output set: {sorted(stray)}"
    return sidecars


def scrape(port: int) -> dict[str, Any]:
    """GET ``/metrics`` and parse it with the Prometheus parser: family name -> family."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: Mapping[str, Any], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None if absent)."""
    for family in families.values():
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    return None


def info_labels(families: Mapping[str, Any], name: str) -> dict[str, str]:
    """The labels of the one sample of the info metric ``name`` (``radinfill_model_info``)."""
    (only,) = [s for f in families.values() for s in f.samples if s.name == name]
    return dict(only.labels)


class ServeProcess:
    """``python -m radinfill serve --config CONFIG`` with its JSON log in a file.

    Parameters
    ----------
    config
        The service TOML file.
    log
        Where standard error (the JSON log) goes.
    env
        Extra environment variables (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``).
    """

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.log = log
        self._offset = log.stat().st_size if log.exists() else 0
        self._handle = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "radinfill", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._handle,
            env={**os.environ, **(env or {})},
        )

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written by this process so far."""
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            lines = f.read().decode(errors="replace").splitlines()
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def event(self, name: str) -> list[dict[str, Any]]:
        """Log records with ``event == name``."""
        return [e for e in self.events() if e.get("event") == name]

    def wait_ready(self, timeout: float = 60.0) -> int:
        """Wait for ``service_ready``; returns the metrics port."""

        def ready() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.process.returncode}: {self.tail()}"
                )
            found = self.event("service_ready")
            return found[0] if found else None

        return int(wait_for(ready, timeout, "service_ready")["metrics_port"])

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status (fails if it takes longer than
        ``timeout``)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"service did not exit within {timeout:g} s") from None
        finally:
            self._handle.close()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._handle.close()
