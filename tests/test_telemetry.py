"""Metrics over real HTTP, and one structured log format for structlog and stdlib loggers."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from radinfill import code_version
from radinfill.daemon.telemetry import Metrics, MetricsServer, configure_logging, get_logger

# --- metrics -------------------------------------------------------------------------------------

#: Exposed family name -> (type, label names), as specified for the service's dashboards and
#: alerts. Counters appear without ``_total`` and Info metrics as ``<name>_info`` gauges in the
#: text format, which is how Prometheus itself names them.
EXPECTED = {
    "radinfill_end_to_end_latency_seconds": ("histogram", {"product"}),
    "radinfill_nominal_latency_seconds": ("histogram", {"product"}),
    "radinfill_stage_duration_seconds": ("histogram", {"stage"}),
    "radinfill_products": ("counter", {"product", "outcome"}),
    "radinfill_fallbacks": ("counter", {"product", "reason"}),
    "radinfill_quarantined": ("counter", {"reason"}),
    "radinfill_hole_fraction_ratio": ("gauge", {"product"}),
    "radinfill_hole_pixels": ("histogram", {"product"}),
    "radinfill_missing_radars": ("gauge", {"product"}),
    "radinfill_queue_depth": ("gauge", set()),
    "radinfill_oldest_pending_age_seconds": ("gauge", set()),
    "radinfill_window_fill_ratio": ("gauge", {"product"}),
    "radinfill_last_input_nominal_timestamp_seconds": ("gauge", {"product"}),
    "radinfill_last_output_nominal_timestamp_seconds": ("gauge", {"product"}),
    "radinfill_model_info": ("gauge", {"release", "variant", "sha256", "device", "code_version"}),
    "radinfill_model_reloads": ("counter", {"outcome"}),
    "radinfill_reconcile_found": ("counter", set()),
    "radinfill_watch_overflows": ("counter", set()),
    "radinfill_io_retries": ("counter", {"op"}),
    "radinfill_shadow_rmse_mm_per_hour": ("gauge", {"product"}),
    "radinfill_shadow_csi": ("gauge", {"product", "threshold"}),
    "radinfill_shadow_last_run_timestamp_seconds": ("gauge", {"product"}),
    "radinfill_build_info": ("gauge", {"code_version"}),
}

#: Bucket upper bounds (without +Inf) as specified: seconds, seconds, seconds, pixels.
BUCKETS = {
    "radinfill_end_to_end_latency_seconds": [
        0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600,
    ],
    "radinfill_nominal_latency_seconds": [
        30, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1800, 3600,
    ],
    "radinfill_stage_duration_seconds": [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60,
    ],
    "radinfill_hole_pixels": [
        0, 100, 1000, 5000, 10000, 25000, 50000, 100000, 250000, 810000,
    ],
}  # fmt: skip


def _observe_one_of_everything(metrics: Metrics) -> None:
    metrics.end_to_end_seconds.labels("RY").observe(2.5)
    metrics.nominal_latency_seconds.labels("RY").observe(95)
    for stage in ("read", "holes", "infill", "write"):
        metrics.stage_seconds.labels(stage).observe(0.2)
    metrics.products_total.labels("RY", "processed").inc()
    metrics.fallbacks_total.labels("RY", "model_unavailable").inc()
    metrics.quarantined_total.labels("truncated").inc()
    metrics.hole_fraction.labels("RY").set(0.04)
    metrics.hole_pixels.labels("RY").observe(12_345)
    metrics.missing_radars.labels("RY").set(2)
    metrics.queue_depth.set(3)
    metrics.oldest_pending_seconds.set(42)
    metrics.window_fill.labels("RY").set(1.0)
    metrics.last_input_nominal.labels("RY").set(1_764_000_000)
    metrics.last_output_nominal.labels("RY").set(1_764_000_000)
    metrics.model_info.info(
        {"release": "v3", "variant": "unet", "sha256": "ab12", "device": "cpu", "code_version": "x"}
    )
    metrics.model_reloads_total.labels("ok").inc()
    metrics.reconcile_found_total.inc()
    metrics.watch_overflows_total.inc()
    metrics.io_retries_total.labels("write").inc()
    metrics.shadow_rmse.labels("RY").set(0.8)
    metrics.shadow_csi.labels("RY", "1.0").set(0.6)
    metrics.shadow_timestamp.labels("RY").set(1_764_000_000)


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics()
    server = metrics.serve("127.0.0.1", 0)
    yield metrics, server
    server.close()


def _scrape(port: int) -> dict[str, tuple[str, list[Sample]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def test_scrape_has_every_metric_with_its_type_and_labels(
    served: tuple[Metrics, MetricsServer],
) -> None:
    metrics, server = served
    assert server.port > 0
    _observe_one_of_everything(metrics)
    families = _scrape(server.port)
    assert {name for name in families if not name.startswith("process_")} == set(EXPECTED)
    assert {"process_resident_memory_bytes", "process_cpu_seconds"} <= set(families)
    for name, (kind, labels) in EXPECTED.items():
        family_kind, samples = families[name]
        assert family_kind == kind, name
        assert samples, f"{name} has no samples after an observation"
        for sample in samples:
            assert set(sample.labels) - {"le"} == labels, sample
            assert not sample.name.endswith("_created"), sample


def test_histogram_buckets_are_sized_for_the_domain(
    served: tuple[Metrics, MetricsServer],
) -> None:
    metrics, server = served
    _observe_one_of_everything(metrics)
    families = _scrape(server.port)
    for name, bounds in BUCKETS.items():
        _, samples = families[name]
        les = [s.labels["le"] for s in samples if s.name == f"{name}_bucket"]
        les = list(dict.fromkeys(les))  # stage histogram repeats the bounds per stage
        assert les == [*(str(float(b)) for b in bounds), "+Inf"], name


def test_observed_values_land_in_the_right_series(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    metrics.end_to_end_seconds.labels("RW").observe(7)
    metrics.products_total.labels("RW", "duplicate").inc(2)
    metrics.hole_pixels.labels("RW").observe(810_000)
    families = _scrape(server.port)
    _, e2e = families["radinfill_end_to_end_latency_seconds"]
    buckets = {s.labels["le"]: s.value for s in e2e if s.name.endswith("_bucket")}
    assert buckets["5.0"] == 0
    assert buckets["10.0"] == 1
    assert buckets["+Inf"] == 1
    _, products = families["radinfill_products"]
    assert [(s.name, s.labels, s.value) for s in products] == [
        ("radinfill_products_total", {"product": "RW", "outcome": "duplicate"}, 2.0)
    ]
    _, pixels = families["radinfill_hole_pixels"]
    whole_grid = {s.labels["le"]: s.value for s in pixels if s.name.endswith("_bucket")}
    assert whole_grid["250000.0"] == 0
    assert whole_grid["810000.0"] == 1


def test_build_info_names_the_code_version() -> None:
    families = {f.name: f for f in text_string_to_metric_families(Metrics().snapshot())}
    (sample,) = families["radinfill_build_info"].samples
    assert sample.labels == {"code_version": code_version()}
    assert sample.value == 1


def test_two_instances_have_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    assert first.registry is not second.registry
    first.queue_depth.set(5)
    first.products_total.labels("RY", "late").inc()
    assert first.registry.get_sample_value("radinfill_queue_depth") == 5
    assert second.registry.get_sample_value("radinfill_queue_depth") == 0
    labels = {"product": "RY", "outcome": "late"}
    assert second.registry.get_sample_value("radinfill_products_total", labels) is None
    assert "radinfill_queue_depth 5.0" in first.snapshot()
    assert "radinfill_queue_depth 0.0" in second.snapshot()


def test_close_stops_serving_and_frees_the_port() -> None:
    server = Metrics().serve("127.0.0.1", 0)
    port = server.port
    assert _scrape(port)
    server.close()
    assert not server.thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    again = Metrics().serve("127.0.0.1", port)
    try:
        assert again.port == port
        assert "radinfill_build_info" in _scrape(port)
    finally:
        again.close()


# --- logging -------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and structlog back as they were (configure_logging is process-wide)."""
    root, scheduler = logging.getLogger(), logging.getLogger("apscheduler")
    handlers, level, scheduler_level = list(root.handlers), root.level, scheduler.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    scheduler.setLevel(scheduler_level)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_event_level_timestamp_and_fields() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    before = datetime.now(UTC)
    get_logger("radinfill.daemon.service").info("product_done", product="RY", duration_s=1.5)
    (line,) = _lines(stream)
    assert line["event"] == "product_done"
    assert line["level"] == "info"
    assert line["logger"] == "radinfill.daemon.service"
    assert line["product"] == "RY"
    assert line["duration_s"] == 1.5
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)


@pytest.mark.usefixtures("restore_logging")
def test_stdlib_records_share_the_format() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    get_logger("radinfill.daemon.watcher").warning("own_line")
    logging.getLogger("watchdog.observers.inotify_buffer").warning("queue %d overflowed", 3)
    ours, foreign = _lines(stream)
    assert foreign["event"] == "queue 3 overflowed"
    assert foreign["level"] == "warning"
    assert foreign["logger"] == "watchdog.observers.inotify_buffer"
    assert set(foreign) == set(ours)


@pytest.mark.usefixtures("restore_logging")
def test_context_variables_are_bound_into_every_line() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    with structlog.contextvars.bound_contextvars(product="RW", nominal="2025-06-01T12:50Z"):
        get_logger("a").info("read")
        logging.getLogger("watchdog.observers").info("job ran")
    get_logger("a").info("outside")
    read, job, outside = _lines(stream)
    assert read["product"] == job["product"] == "RW"
    assert read["nominal"] == job["nominal"] == "2025-06-01T12:50Z"
    assert "product" not in outside


@pytest.mark.usefixtures("restore_logging")
def test_level_filtering_applies_to_both_sources() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=stream)
    get_logger("a").info("hidden")
    get_logger("a").debug("hidden")
    logging.getLogger("apscheduler").info("hidden")
    get_logger("a").warning("shown")
    logging.getLogger("apscheduler").error("shown too")
    assert [line["event"] for line in _lines(stream)] == ["shown", "shown too"]


@pytest.mark.usefixtures("restore_logging")
def test_scheduler_chatter_is_quiet_but_its_warnings_show() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream)
    logging.getLogger("apscheduler.executors.default").info("Running job reconcile")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    get_logger("a").info("ours")
    assert [line["event"] for line in _lines(stream)] == ["Run time of job was missed", "ours"]


@pytest.mark.usefixtures("restore_logging")
def test_configuring_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(fmt="json", stream=first)
    configure_logging(fmt="json", level="debug", stream=second)
    get_logger("a").debug("once")
    logging.getLogger("watchdog").info("once too")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once", "once too"]


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_are_structured_in_json() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    try:
        raise OSError("disk gone")
    except OSError:
        logging.getLogger("radinfill").exception("write failed")
    (line,) = _lines(stream)
    assert line["level"] == "error"
    (frame,) = line["exception"]  # type: ignore[misc]
    assert frame["exc_type"] == "OSError"
    assert frame["exc_value"] == "disk gone"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("restore_logging")
def test_auto_picks_console_on_a_terminal_and_json_otherwise() -> None:
    terminal = _Terminal()
    configure_logging(stream=terminal)
    get_logger("a").info("hello_console", product="RY")
    text = terminal.getvalue()
    assert "hello_console" in text
    assert "product" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    pipe = io.StringIO()
    configure_logging(stream=pipe)
    get_logger("a").info("hello_json")
    assert [line["event"] for line in _lines(pipe)] == ["hello_json"]


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "verbose")])
def test_unknown_format_or_level_is_refused(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(fmt=fmt, level=level, stream=io.StringIO())
