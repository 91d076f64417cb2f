"""``radinfill serve``: the long-running service that ties the parts together.

Threads and their jobs::

    main thread      signals (SIGTERM/SIGINT: stop, SIGHUP: reload), model hot swap,
                     systemd notifications (READY, STATUS, WATCHDOG, STOPPING), gauges
    observers        watchdog: file events -> WorkQueue (only enqueue)
    scheduler        APScheduler: reconcile scan, shadow-check trigger, ledger retention
    worker           WorkQueue -> settle -> Pipeline.process -> metrics + one log line;
                     the shadow check runs here too, between products

Start-up order follows what systemd's ``Type=notify`` needs: the single-instance lock on the
state directory (before anything is touched: a second instance must not clean away the first
one's temporary files), configuration, metrics port, ledger, model (loaded, verified and warmed
up), observers, startup scan; only then ``READY=1``. A start-up that cannot succeed by being
repeated (another instance, a port in use) raises :class:`StartupError`, one line naming what
and where, which ``radinfill serve`` turns into exit status 2.
The backlog found by the scan is worked after READY, behind live files.

``WATCHDOG=1`` is sent only while the worker shows progress (a heartbeat per item or idle
tick) and every observer thread is alive: a hung inference or a dead observer stops the pings
and systemd restarts the service. On SIGTERM the worker finishes the product in hand, the
ledger is closed, ``STOPPING=1`` is sent and :meth:`Service.run` returns 0.

The service is meant to run as an unprivileged user (systemd/radinfill.service sets ``User=``);
started as root it still runs, since containers and tests often are root, but logs a
``running_as_root`` warning. Directories it creates get 0755 (outputs) or 0750 (state,
quarantine) whatever the umask.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from radinfill import code_version, heap, permissions
from radinfill.daemon import live_model, outputs, shadow
from radinfill.daemon.catalog import Catalog
from radinfill.daemon.intake import Arrival, WorkQueue, settled
from radinfill.daemon.ledger import Ledger, LedgerError, is_damage
from radinfill.daemon.pipeline import WRONG_GRID, NotReadyError, Outcome, Pipeline, Result
from radinfill.daemon.sdnotify import Notifier, watchdog_interval
from radinfill.daemon.service_config import ServiceConfig
from radinfill.daemon.telemetry import Metrics, MetricsServer, configure_logging
from radinfill.daemon.watcher import Watcher, scan
from radinfill.model import baselines, memo

__all__ = ["Service"]

_log = structlog.get_logger("radinfill.service")


#: Name of the single-instance lock file in the state directory.
LOCK_FILE = "radinfill.lock"


class StartupError(RuntimeError):
    """A start-up failure that repeating the start cannot cure (the message says what to do)."""


def _lock(state_dir: Path) -> int:
    """Hold the exclusive lock of ``state_dir`` for the life of the process; its descriptor.

    Raises
    ------
    StartupError
        If another process holds it (naming its pid, written into the lock file).
    """
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as err:
        raise StartupError(
            f"{path}: {err.strerror}: the state directory must be writable by the service user"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(
            f"{path}: another radinfill serve (pid {holder}) runs on this state directory; "
            "stop it first, or give this one its own state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


#: The worker counts as stuck when its heartbeat is older than this (s); longer than any one
#: product takes (seconds on a CPU), shorter than a systemd WatchdogSec of minutes.
STUCK_AFTER_S = 120.0
#: Longest wait (s) before a reconcile scan retries an input that failed; the first is
#: ``[service] retry_backoff_s``, doubling with every failure in a row.
MAX_FAILURE_BACKOFF_S = 3600.0
#: Interval of the ledger retention job (s); pruning is cheap, retention is counted in days.
PRUNE_INTERVAL_S = 3600.0
#: A reconcile scan later than this many intervals after the previous one follows a pause
#: (SIGSTOP, a suspended VM, a stalled scheduler): the file events of the pause are still
#: queued in the kernel, so what it finds is not counted as missed events.
PAUSE_INTERVALS = 3.0
#: End-to-end latencies kept in memory (:attr:`Service.latencies`).
LATENCY_HISTORY = 10_000
#: Longest wait for the worker to finish the product in hand on shutdown (s).
STOP_TIMEOUT_S = 60.0


class Service:
    """The infill service (see the module docstring).

    Parameters
    ----------
    config
        The validated configuration.
    notifier
        systemd notifications (default: from ``NOTIFY_SOCKET``; a no-op without it).
    metrics
        The metrics (default: a fresh registry).
    configure_logs
        Set up structlog from the configuration (tests that capture logs pass False).
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        configure_logs: bool = True,
    ) -> None:
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier()
        self.metrics = metrics if metrics is not None else Metrics()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.shadow_due = threading.Event()
        self.queue = WorkQueue()
        self.catalog = Catalog()
        #: Inputs whose processing failed: path -> (failures, monotonic time of the next try);
        #: reconcile scans retry them with exponential backoff instead of every scan.
        self._failures: dict[Path, tuple[int, float]] = {}
        #: Monotonic time of the last reconcile scan (pause detection).
        self._last_scan: float | None = None
        self.heartbeat = time.monotonic()
        self.processed = 0
        self.shadow_runs = 0
        #: End-to-end latencies (s) of the latest outputs, for the demo and benchmarks.
        self.latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self.last_output: dict[str, datetime] = {}
        self.server: MetricsServer | None = None
        self.ledger: Ledger | None = None
        self.slot: live_model.ModelSlot | None = None
        self.pipeline: Pipeline | None = None
        self.watcher: Watcher | None = None
        self.scheduler: BackgroundScheduler | None = None
        self._worker: threading.Thread | None = None
        self._configure_logs = configure_logs
        self._lock_fd: int | None = None
        #: Bounds the freed memory kept for the next product (heap.keep_freed_memory at start).
        self._free_memory = heap.FreeMemoryBound()
        #: What :meth:`run` returns: 0, or 1 after a failure only a restart can handle.
        self.exit_status = 0

    # -- life cycle --------------------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (or :meth:`stop`), shut down; returns
        :attr:`exit_status` (0, or 1 when the service stopped itself on a damaged ledger)."""
        previous = self._install_signals()
        try:
            self.start()
            self._supervise()
        finally:
            self.shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.exit_status

    def start(self) -> None:
        """Everything up to READY=1 (see the module docstring)."""
        config = self.config
        if self._configure_logs:
            configure_logging(fmt=config.log_format, level=config.log_level)
        if os.geteuid() == 0:
            _log.warning("running_as_root", hint="run as an unprivileged user (systemd: User=)")
        heap.keep_freed_memory()  # products reuse the memory instead of faulting it in again
        permissions.make_dirs(config.state_dir, permissions.PRIVATE_DIRECTORY_MODE)
        self._lock_fd = _lock(config.state_dir)
        permissions.make_dirs(config.outgoing)  # 0755 / 0750 whatever the umask
        permissions.make_dirs(config.quarantine, permissions.PRIVATE_DIRECTORY_MODE)
        for path in outputs.remove_partial(config.outgoing):
            _log.info("removed_partial_output", path=str(path))
        self.server = self._serve_metrics()
        try:
            self.ledger = Ledger(config.ledger_path, horizon=timedelta(seconds=config.horizon_s))
        except LedgerError as err:
            raise StartupError(
                f"{err}; restore it from a backup, or move it aside to start a new one (the "
                "inputs still in incoming are then processed again)"
            ) from None
        # files off their product's grid are judged again, under the grids configured now
        self.ledger.forget_files(WRONG_GRID)
        self.notifier.status("loading model")
        self.slot = live_model.ModelSlot(self._load_model(config.model, startup=True))
        self._export_model(self.slot.current)
        self.pipeline = Pipeline.assemble(
            config,
            ledger=self.ledger,
            slot=self.slot,
            metrics=self.metrics,
            catalog=self.catalog,
            locate=self._locate,
            stop=self.stop_event,
        )
        self.watcher = Watcher(
            config.incoming,
            config.patterns,
            mode=config.watch,
            poll_interval_s=config.poll_interval_s,
            enqueue=self.queue.put,
        )
        self.watcher.start()
        found = self.reconcile(startup=True)
        self.scheduler = self._schedule()
        self._worker = threading.Thread(target=self._work, name="radinfill-worker", daemon=True)
        self._worker.start()
        self.notifier.ready(self._status())
        _log.info(
            "service_ready",
            model=self.slot.current.release,
            device=self.slot.current.device,
            runtime=self.slot.current.runtime,
            backlog=found,
            metrics_port=self.server.port,
            watch_modes={str(k): v for k, v in self.watcher.modes.items()},
            version=code_version(),
        )

    def stop(self) -> None:
        """Ask the service to stop (what SIGTERM does)."""
        self.stop_event.set()

    def shutdown(self) -> None:
        """Stop taking work, let the worker finish the product in hand, close everything."""
        self.stop_event.set()
        self.notifier.stopping()
        if self.watcher is not None:
            self.watcher.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        if self._worker is not None:
            self._worker.join(STOP_TIMEOUT_S)
            if self._worker.is_alive():
                _log.error("worker_did_not_stop", timeout_s=STOP_TIMEOUT_S)
            self._worker = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        memo.release()  # the flows and factorisations of the outages served
        heap.release_free_memory()
        _log.info("service_stopped", processed=self.processed)

    def _serve_metrics(self) -> MetricsServer:
        """The metrics endpoint; a taken address is a :class:`StartupError` naming it."""
        address, port = self.config.metrics.address, self.config.metrics.port
        try:
            return self.metrics.serve(address, port)
        except OSError as err:
            raise StartupError(
                f"metrics endpoint {address}:{port}: {err.strerror or err}; another process "
                "listens there: stop it or set [metrics] port"
            ) from None

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        handlers: dict[int, Callable[[int, FrameType | None], None]] = {
            signal.SIGTERM: lambda s, f: self.stop_event.set(),
            signal.SIGINT: lambda s, f: self.stop_event.set(),
            signal.SIGHUP: lambda s, f: self.reload_event.set(),
        }
        for signum, handler in handlers.items():
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _supervise(self) -> None:
        """The main thread's loop: reloads, health, watchdog pings, status and gauges."""
        interval = watchdog_interval() or 5.0
        tick = min(interval, 1.0)
        last_ping = 0.0
        while not self.stop_event.wait(tick):
            if self.reload_event.is_set():
                self.reload_event.clear()
                self.reload()
            self.metrics.queue_depth.set(len(self.queue))
            self.metrics.oldest_pending_seconds.set(self.queue.oldest_age())
            now = time.monotonic()
            if now - last_ping >= interval and self.healthy():
                self.notifier.watchdog()
                self.notifier.status(self._status())
                last_ping = now

    def healthy(self) -> bool:
        """Worker heartbeat recent and every observer alive (gates WATCHDOG=1)."""
        worker_ok = self._worker is not None and self._worker.is_alive()
        fresh = time.monotonic() - self.heartbeat < STUCK_AFTER_S
        return worker_ok and fresh and self.watcher is not None and self.watcher.alive()

    def _status(self) -> str:
        model = self.slot.current if self.slot is not None else None
        last = max(self.last_output.values(), default=None)
        stamp = f"{last:%Y-%m-%dT%H:%MZ}" if last is not None else "-"
        name = Path(model.release).name if model is not None else "-"
        return f"last={stamp} queue={len(self.queue)} processed={self.processed} model={name}"

    # -- model -------------------------------------------------------------------------------

    def _load_model(self, spec: str, *, startup: bool) -> live_model.LoadedModel:
        """Load the configured model; at start-up a model that fails falls back to the
        configured baseline (the service must produce outputs), counted and logged."""
        try:
            model = live_model.load(
                spec,
                device=self.config.device,
                fallback=self.config.fallback,
                engine=self.config.engine_options(),
            )
        except Exception as err:
            self.metrics.model_reloads_total.labels("failed").inc()
            if not startup:
                raise
            _log.error("model_load_failed", model=spec, error=str(err), using=self.config.fallback)
            return live_model.load(baselines.method_spec(self.config.fallback))
        self.metrics.model_reloads_total.labels("ok").inc()
        return model

    def reload(self) -> bool:
        """SIGHUP: load, verify and test the configured model, then swap it in; on any failure
        keep the running model. Returns whether the swap happened."""
        assert self.slot is not None
        self.notifier.reloading()
        try:
            model = self._load_model(self.config.model, startup=False)
        except Exception as err:
            _log.error("model_reload_failed", model=self.config.model, error=str(err))
            self.notifier.ready(self._status())
            return False
        previous = self.slot.swap(model)
        self._export_model(model)
        _log.info("model_reloaded", model=model.release, previous=previous.release)
        self.notifier.ready(self._status())
        return True

    def _export_model(self, model: live_model.LoadedModel) -> None:
        self.metrics.model_info.info(
            {
                "release": model.release,
                "variant": model.variant,
                "sha256": model.sha256,
                "device": model.device,
                "runtime": model.runtime,
                "code_version": code_version(),
            }
        )

    # -- discovery ---------------------------------------------------------------------------

    def reconcile(self, startup: bool = False) -> int:
        """Queue every input on disk not handled yet; returns how many were queued.

        At start-up this is the backlog; later, anything found means events were missed
        (``radinfill_reconcile_found_total``), except a failed file whose backoff has run
        out (queuing it again is a retry) and what the first scan after a pause finds (see
        :data:`PAUSE_INTERVALS`).
        """
        assert self.ledger is not None
        now = time.monotonic()
        interval = self.config.reconcile_interval_s
        previous, self._last_scan = self._last_scan, now
        pause = 0.0 if previous is None else now - previous
        paused = pause > PAUSE_INTERVALS * interval
        queued = 0
        retries = 0
        present: set[Path] = set()
        for path in scan(self.config.incoming, self.config.patterns):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            present.add(path)
            if self.ledger.known_file(str(path), st.st_size, st.st_mtime_ns) is not None:
                continue
            if time.monotonic() < self._failures.get(path, (0, 0.0))[1]:
                continue
            self.catalog.note_file(path)
            if self.queue.put(Arrival.now(path, "scan")):
                queued += 1
                retries += path in self._failures
        for gone in set(self._failures) - present:  # a failed file removed upstream
            self._failures.pop(gone, None)
        missed = queued - retries
        if missed and paused:
            _log.info("reconcile_after_pause", count=missed, pause_s=round(pause, 1))
        elif missed and not startup:
            self.metrics.reconcile_found_total.inc(missed)
            _log.warning("reconcile_found_files", count=missed)
        return queued

    def _locate(self, product: str, nominal: datetime) -> Path | None:
        path = self.catalog.get(product, nominal)
        if path is not None:
            return path
        if self.ledger is None:
            return None
        entry = self.ledger.current(product, nominal)
        return Path(entry.input_path) if entry is not None else None

    def _schedule(self) -> BackgroundScheduler:
        config = self.config
        scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        scheduler.add_job(
            self.reconcile, "interval", seconds=config.reconcile_interval_s, id="reconcile"
        )
        if config.shadow_interval_s > 0:
            scheduler.add_job(
                self.shadow_due.set, "interval", seconds=config.shadow_interval_s, id="shadow"
            )
        if config.retention_days > 0:
            scheduler.add_job(self._prune, "interval", seconds=PRUNE_INTERVAL_S, id="retention")
        scheduler.start()
        return scheduler

    def _prune(self) -> None:
        assert self.ledger is not None
        cutoff = datetime.now(UTC) - timedelta(days=self.config.retention_days)
        removed = self.ledger.prune(cutoff)
        forgotten = self.catalog.prune(cutoff)
        _log.info("ledger_pruned", rows=removed, catalog=forgotten, before=cutoff)

    # -- work --------------------------------------------------------------------------------

    def _work(self) -> None:
        """The worker thread: one arrival at a time until stopped."""
        while not self.stop_event.is_set():
            self.heartbeat = time.monotonic()
            arrival = self.queue.get(timeout=0.5)
            if arrival is None:
                if self.shadow_due.is_set():
                    self.shadow_due.clear()
                    self._shadow()
                continue
            self._handle(arrival)
            self._free_memory.check()  # what a long outage's product freed does not stay

    def _handle(self, arrival: Arrival) -> None:
        assert self.pipeline is not None
        for path in self.queue.paths():
            self.catalog.note_file(path)
        try:
            ready, arrival = settled(arrival, self.config.settle_s)
            overdue = time.monotonic() - arrival.seen_monotonic > self.config.settle_timeout_s
            if not ready and not overdue:
                self.queue.defer(arrival, max(self.config.settle_s, 0.2))
                return
            result = self.pipeline.process(arrival)
        except NotReadyError as err:
            self.queue.defer(arrival, err.retry_after)
            return
        except FileNotFoundError:
            _log.warning("input_vanished", path=str(arrival.path))
            self.queue.done(arrival)
            return
        except Exception as err:
            self.queue.done(arrival)
            if is_damage(err):
                # Every later product would fail the same way while the watchdog is fed:
                # stop with status 1 instead, so systemd restarts and the start-up check says
                # what is wrong with the ledger in one line.
                _log.error("ledger_damaged", path=str(self.config.ledger_path), error=str(err))
                self.exit_status = 1
                self.stop_event.set()
                return
            failures = self._failures.get(arrival.path, (0, 0.0))[0] + 1
            first = self.config.retry_backoff_s
            backoff = min(first * 2 ** (failures - 1), MAX_FAILURE_BACKOFF_S)
            self._failures[arrival.path] = (failures, time.monotonic() + backoff)
            self.metrics.products_total.labels("", Outcome.FAILED.value).inc()
            _log.exception(
                "product_failed", path=str(arrival.path), error=str(err), retry_in_s=backoff
            )
            return
        self._failures.pop(arrival.path, None)
        self.queue.done(arrival)
        self._account(arrival, result)

    def _account(self, arrival: Arrival, result: Result) -> None:
        """Metrics and the one log line of a finished input."""
        metrics, product = self.metrics, result.product
        metrics.products_total.labels(product, result.outcome.value).inc()
        fields: dict[str, Any] = {
            "path": str(arrival.path),
            "outcome": result.outcome.value,
            "product": product,
            "nominal_time": result.nominal.isoformat() if result.nominal else None,
        }
        if result.outcome in (Outcome.PROCESSED, Outcome.PASSTHROUGH):
            done = time.time()
            assert result.nominal is not None
            metrics.end_to_end_seconds.labels(product).observe(done - arrival.seen)
            self.latencies.append(done - arrival.seen)
            nominal_lag = done - result.nominal.timestamp()
            metrics.nominal_latency_seconds.labels(product).observe(max(nominal_lag, 0.0))
            metrics.hole_fraction.labels(product).set(result.details["hole_fraction"])
            metrics.hole_pixels.labels(product).observe(result.details["hole_pixels"])
            metrics.missing_radars.labels(product).set(len(result.details["missing_radars"]))
            metrics.window_fill.labels(product).set(result.details["window_fill"])
            latest = max(self.last_output.get(product, result.nominal), result.nominal)
            self.last_output[product] = latest
            metrics.last_output_nominal.labels(product).set(latest.timestamp())
            self.processed += 1
            fields |= {
                "version": result.version,
                "latency_s": round(done - arrival.seen, 3),
                "outputs": [str(p) for p in result.outputs],
                **result.details,
            }
        else:
            fields |= result.details
        level = "warning" if result.outcome is Outcome.QUARANTINED else "info"
        getattr(_log, level)("product", **fields)

    def _shadow(self) -> None:
        """Run the quality estimate on the newest complete field of each product."""
        assert self.pipeline is not None
        assert self.slot is not None
        model = self.slot.current
        for product, (fld, frames) in list(self.pipeline.complete.items()):
            try:
                result = shadow.check(frames, fld.grid, fld.interval_minutes, model.method)
            except Exception as err:
                _log.warning("shadow_check_failed", product=product, error=str(err))
                continue
            self.metrics.shadow_rmse.labels(product).set(result["rmse"])
            self.metrics.shadow_csi.labels(product, "1").set(result["csi_1"])
            self.metrics.shadow_timestamp.labels(product).set(time.time())
            _log.info("shadow_check", product=product, nominal_time=fld.time.isoformat(), **result)
        self.shadow_runs += 1
