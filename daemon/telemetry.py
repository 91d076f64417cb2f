"""What the service tells its operators: Prometheus metrics and one log format for everything.

Metrics
    :class:`Metrics` owns every ``radinfill_*`` metric on its own ``CollectorRegistry`` (never the
    process-global one), so two services, or two tests, in one process cannot collide, and the
    exposition holds only what the service defines, plus the standard ``process_*`` metrics
    (resident memory, CPU seconds, open files, start time; read from ``/proc``, so Linux only)
    that show a leaking or restarting process. Names follow the Prometheus conventions:
    base units with ``_seconds`` / ``_ratio`` suffixes, ``_total`` counters, timestamps as Unix
    seconds, and only bounded labels (product, stage, outcome, reason) — never a file name,
    time or model version, which go into the ``_info`` metrics instead. Histogram buckets are
    sized for the domain (5-minute products; latencies from 0.1 s to an hour; holes up to the
    whole 900 x 900 grid), because the library's default 5 ms–10 s buckets would put most
    observations into ``+Inf``.

Logging
    :func:`configure_logging` sends structlog events *and* stdlib records (watchdog,
    apscheduler, the root logger) through one ``ProcessorFormatter`` on one root handler, so every
    line has the same shape: one JSON object per line in production (journald, Loki) or the
    coloured console format on a terminal.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from threading import Thread
from typing import Any, TextIO
from wsgiref.simple_server import WSGIServer

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from radinfill import code_version

__all__ = ["Metrics", "MetricsServer", "configure_logging", "get_logger"]

#: File arrival to outputs renamed into place, in seconds.
END_TO_END_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
#: Outputs renamed minus the product's nominal time, in seconds (DWD delivers minutes late).
NOMINAL_BUCKETS = (30, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1800, 3600)
#: One pipeline stage (read, check, classify, holes, infill, encode, publish, write, record), in
#: seconds.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
#: Infilled pixels per product; the top bucket is the whole 900 x 900 national grid.
HOLE_PIXEL_BUCKETS = (0, 100, 1000, 5000, 10000, 25000, 50000, 100000, 250000, 810000)


class Metrics:
    """Every metric of the infill service, registered on one registry.

    Label values the service uses (kept bounded so that series never multiply):

    * ``product``: the RADOLAN product code (RY, RW, YW, ...), a handful at most;
    * ``stage``: ``read | check | classify | holes | infill | write | record``;
    * ``outcome`` of ``products_total``: ``processed | passthrough | duplicate | late |
      superseded | failed | quarantined``; of ``model_reloads_total``: ``ok | failed``;
    * ``reason`` of ``quarantined_total``: ``truncated | corrupt | oversized | wrong_grid |
      unsupported | future | mismatch | other``; of ``fallbacks_total``: why the model was not used;
    * ``op`` of ``io_retries_total``: the retried I/O operation (read, write, ledger, ...).

    Constructing a ``Metrics`` switches off the ``_created`` series of counters and histograms
    for the process (``prometheus_client.disable_created_metrics``). They double the series
    count and nothing here queries them. The alternative, the environment variable
    ``PROMETHEUS_DISABLE_CREATED_SERIES``, is read once when ``prometheus_client`` is first
    imported, so a library cannot set it reliably; filtering the registry instead would miss
    the ``?name[]=`` exposition path, which bypasses ``CollectorRegistry.collect``.

    Parameters
    ----------
    registry
        Where to register the metrics; a new, private registry by default.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry() if registry is None else registry
        reg = self.registry
        product = ("product",)

        # latency and freshness
        self.end_to_end_seconds = Histogram(
            "radinfill_end_to_end_latency_seconds",
            "Time from an input file's arrival to its outputs being renamed into place.",
            product,
            buckets=END_TO_END_BUCKETS,
            registry=reg,
        )
        self.nominal_latency_seconds = Histogram(
            "radinfill_nominal_latency_seconds",
            "Time from a product's nominal time to its outputs being renamed into place.",
            product,
            buckets=NOMINAL_BUCKETS,
            registry=reg,
        )
        self.stage_seconds = Histogram(
            "radinfill_stage_duration_seconds",
            "Duration of one pipeline stage (read, check, classify, holes, infill, encode, "
            "publish, write, record) for one product.",
            ("stage",),
            buckets=STAGE_BUCKETS,
            registry=reg,
        )
        self.last_input_nominal = Gauge(
            "radinfill_last_input_nominal_timestamp_seconds",
            "Nominal time of the newest input seen; tells a late upstream from a stuck service.",
            product,
            registry=reg,
        )
        self.last_output_nominal = Gauge(
            "radinfill_last_output_nominal_timestamp_seconds",
            "Nominal time of the newest output written; the service's freshness.",
            product,
            registry=reg,
        )

        # outcomes
        self.products_total = Counter(
            "radinfill_products_total",
            "Inputs handled, by outcome.",
            ("product", "outcome"),
            registry=reg,
        )
        self.fallbacks_total = Counter(
            "radinfill_fallbacks_total",
            "Products infilled by a fallback method instead of the model, by reason.",
            ("product", "reason"),
            registry=reg,
        )
        self.quarantined_total = Counter(
            "radinfill_quarantined_total",
            "Input files moved to quarantine, by reason.",
            ("reason",),
            registry=reg,
        )

        # what the infill did
        self.hole_fraction = Gauge(
            "radinfill_hole_fraction_ratio",
            "Share of the radar-covered domain infilled in the last product (0-1).",
            product,
            registry=reg,
        )
        self.hole_pixels = Histogram(
            "radinfill_hole_pixels",
            "Number of infilled pixels per product.",
            product,
            buckets=HOLE_PIXEL_BUCKETS,
            registry=reg,
        )
        self.missing_radars = Gauge(
            "radinfill_missing_radars",
            "Radars expected but absent from the last product's site list.",
            product,
            registry=reg,
        )
        self.window_fill = Gauge(
            "radinfill_window_fill_ratio",
            "Share of the rolling input window present for the last product (0-1).",
            product,
            registry=reg,
        )

        # backlog and discovery
        self.queue_depth = Gauge(
            "radinfill_queue_depth", "Input files waiting to be processed.", registry=reg
        )
        self.oldest_pending_seconds = Gauge(
            "radinfill_oldest_pending_age_seconds",
            "Age of the oldest input file waiting to be processed.",
            registry=reg,
        )
        self.reconcile_found_total = Counter(
            "radinfill_reconcile_found_total",
            "Files found by the reconcile scan that no file event announced.",
            registry=reg,
        )
        self.watch_overflows_total = Counter(
            "radinfill_watch_overflows_total",
            "File-event queue overflows (events were lost; the reconcile scan catches up).",
            registry=reg,
        )
        self.io_retries_total = Counter(
            "radinfill_io_retries_total",
            "Retried I/O operations, by operation.",
            ("op",),
            registry=reg,
        )

        # model
        self.model_info = Info(
            "radinfill_model",
            "The model in use: release, variant, weights sha256, device and code version.",
            registry=reg,
        )
        self.model_reloads_total = Counter(
            "radinfill_model_reloads_total",
            "Model hot-reload attempts, by outcome (ok, failed).",
            ("outcome",),
            registry=reg,
        )
        self.shadow_rmse = Gauge(
            "radinfill_shadow_rmse_mm_per_hour",
            "RMSE of the last shadow check (infill of synthetic holes in observed rain).",
            product,
            registry=reg,
        )
        self.shadow_csi = Gauge(
            "radinfill_shadow_csi",
            "Critical success index of the last shadow check, per rain-rate threshold.",
            ("product", "threshold"),
            registry=reg,
        )
        self.shadow_timestamp = Gauge(
            "radinfill_shadow_last_run_timestamp_seconds",
            "When the last shadow check ran.",
            product,
            registry=reg,
        )

        self.build_info = Info("radinfill_build", "The radinfill code running.", registry=reg)
        self.build_info.info({"code_version": code_version()})
        ProcessCollector(registry=reg)

    def snapshot(self) -> str:
        """The current metrics in the Prometheus text exposition format."""
        return prometheus_client.generate_latest(self.registry).decode()

    def serve(self, address: str = "127.0.0.1", port: int = 9108) -> MetricsServer:
        """Expose ``/metrics`` over HTTP from a background thread.

        Parameters
        ----------
        address
            Interface to bind. Loopback by default, since ``prometheus_client`` itself would bind
            every interface.
        port
            TCP port; ``0`` lets the kernel pick a free one (see :attr:`MetricsServer.port`).

        Returns
        -------
        MetricsServer
            The running server; :meth:`MetricsServer.close` stops it and frees the port.
        """
        server, thread = prometheus_client.start_http_server(port, address, self.registry)
        return MetricsServer(server, thread)


@dataclass
class MetricsServer:
    """A running metrics endpoint that can be shut down cleanly (tests, reloads, SIGTERM)."""

    server: WSGIServer
    thread: Thread
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.server.server_address[1]

    def close(self) -> None:
        """Stop serving, close the listening socket and wait for the serving thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


#: Log levels accepted by :func:`configure_logging`.
LEVELS = ("debug", "info", "warning", "error", "critical")


class _Handler(logging.StreamHandler[TextIO]):
    """The root handler installed by :func:`configure_logging`; its type marks it for removal."""


def configure_logging(
    *, fmt: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Send structlog and stdlib logging through one handler in one format.

    Every line carries ``event``, ``level``, ``timestamp`` (ISO 8601, UTC), ``logger`` and any
    bound or context-variable fields (``structlog.contextvars.bound_contextvars``). Records of
    stdlib loggers (watchdog, apscheduler, torch) get the same keys, so a log shipper parses one
    format. Calling again replaces the handler installed before, so reconfiguring never
    duplicates lines.

    Parameters
    ----------
    fmt
        ``json`` (one object per line, for journald and log shippers), ``console`` (aligned,
        coloured on a terminal) or ``auto``: console when ``stream`` is a TTY, else JSON.
    level
        Minimum level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
    stream
        Where lines go; standard error by default, which keeps standard output free for
        command results (under systemd both end up in the journal).

    Raises
    ------
    ValueError
        For an unknown ``fmt`` or ``level``.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    stream = sys.stderr if stream is None else stream
    tty = stream.isatty()
    if fmt == "auto":
        fmt = "console" if tty else "json"

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: list[Any] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=tty)]
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler logs every run of every job ("Running job ...", "executed successfully") at
    # info: two lines per reconcile scan. Its warnings (missed or skipped runs) still show.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))

    # structlog loggers are stdlib loggers underneath: the level check happens first (cheap for
    # filtered-out debug calls), rendering happens once, in the handler's formatter.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # no caching: a module-level logger used before this call must not keep the defaults
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (normally the module's ``__name__``).

    Usable before :func:`configure_logging` runs: the configuration is looked up on the first
    log call, so module-level loggers pick up the format chosen at start-up.
    """
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
