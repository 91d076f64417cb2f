"""Reports of a training run: the JSONL log read back, the loss curves and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from radinfill.model import build, save_checkpoint
from radinfill.train import curves, run_metrics, runlog
from radinfill.train.train_config import PushConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def step(n: int, t: float, loss: float, lr: float = 1e-3, rate: float = 10.0) -> dict:
    return {"event": "step", "time": t, "step": n, "epoch": 0, "loss": loss, "lr": lr,
            "samples_per_s": rate}  # fmt: skip


#: An earlier run in the same log, then a run that crashed after logging step 3 (its last
#: snapshot was step 2) and was resumed 100 s later, repeating step 3.
RECORDS = [
    {"event": "start", "time": 0.0, "step": 0, "world_size": 1},
    step(1, 1.0, 9.0),
    {"event": "start", "time": 1000.0, "step": 0, "world_size": 1},
    step(1, 1001.0, 4.0, lr=2e-3),
    step(2, 1002.0, 3.0, lr=1.5e-3),
    {"event": "snapshot", "time": 1002.5, "step": 2, "path": "x", "scores": {}},
    step(3, 1004.0, 8.0, lr=1e-3),
    {"event": "resume", "time": 1104.0, "step": 2, "world_size": 1},
    step(3, 1105.0, 2.5, lr=1e-3, rate=20.0),
    {"event": "snapshot", "time": 1106.0, "step": 3, "path": "y", "scores": {}},
]


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of an exposition text."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- the log ----------------------------------------------------------------------------------


def test_read_skips_torn_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    lines = [json.dumps(r) for r in RECORDS[:3]]
    log.write_text(lines[0] + "\n" + '{"event": "st' + "\n" + "\n".join(lines[1:]) + "\n[1]\n")
    assert runlog.read(log) == RECORDS[:3]


def test_current_run_and_segments() -> None:
    run = runlog.current_run(RECORDS)
    assert run == RECORDS[2:]
    parts = runlog.segments(run)
    assert [part[0]["event"] for part in parts] == ["start", "resume"]
    assert [len(part) for part in parts] == [5, 3]
    assert runlog.segments([step(1, 0.0, 1.0)]) == [[step(1, 0.0, 1.0)]]


# --- curves -----------------------------------------------------------------------------------


def test_curves_keep_the_later_record_of_a_repeated_step() -> None:
    data = curves.curves(runlog.current_run(RECORDS))
    np.testing.assert_array_equal(data.steps, [1, 2, 3])
    np.testing.assert_array_equal(data.loss, [4.0, 3.0, 2.5])
    np.testing.assert_array_equal(data.lr, [2e-3, 1.5e-3, 1e-3])
    np.testing.assert_array_equal(data.resumed, [2])


def test_smooth_by_hand() -> None:
    # s0 = 0.5 * 1 = 0.5 -> / (1 - 0.5) = 1; s1 = 0.25 -> / (1 - 0.25) = 1/3
    np.testing.assert_allclose(curves.smooth(np.array([1.0, 0.0]), 0.5), [1.0, 1.0 / 3.0])
    np.testing.assert_allclose(curves.smooth(np.full(50, 2.5)), np.full(50, 2.5))
    np.testing.assert_array_equal(curves.smooth(np.array([3.0, 7.0]), 0.0), [3.0, 7.0])
    assert curves.smooth(np.array([])).shape == (0,)
    with pytest.raises(ValueError, match="smoothing weight"):
        curves.smooth(np.array([1.0]), 1.0)


def test_smooth_damps_noise() -> None:
    noisy = 1.0 + np.random.default_rng(0).normal(0.0, 0.2, 500)
    smoothed = curves.smooth(noisy)
    assert np.std(smoothed[50:]) < 0.4 * np.std(noisy[50:])
    assert abs(np.mean(smoothed[50:]) - 1.0) < 0.05


@pytest.mark.parametrize("records", [RECORDS, RECORDS[:1]], ids=["steps", "no-step-yet"])
def test_write_draws_a_png(tmp_path: Path, records: list[dict]) -> None:
    log = tmp_path / "run" / "train.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    png = curves.write(log, tmp_path / "run" / "loss.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    image = imread(png)
    assert image.shape[:2] == (600, 800)  # 8 x 6 inches at 100 dpi
    assert image[..., :3].std() > 0.05  # something is drawn on the white background
    assert sorted(p.name for p in png.parent.iterdir()) == ["loss.png", "train.jsonl"]


# --- metrics ----------------------------------------------------------------------------------


def test_summarize_counts_only_the_time_spent_training() -> None:
    metrics = run_metrics.summarize(
        RECORDS, {"step": 3, "finished": False}, {"mae": 0.5, "u": None}
    )
    # segments 1000..1004 and 1104..1106; the earlier run and the 100 s outage do not count
    assert metrics.duration_seconds == pytest.approx(6.0)
    assert (metrics.steps, metrics.finished) == (3, False)
    assert (metrics.loss, metrics.samples_per_second) == (2.5, 20.0)
    assert metrics.scores == {"mae": 0.5}
    empty = run_metrics.summarize(RECORDS[:1], {"step": 0, "finished": False}, {})
    assert (empty.loss, empty.samples_per_second, empty.duration_seconds) == (None, None, 0.0)


def test_registry_leaves_out_values_it_does_not_have() -> None:
    metrics = run_metrics.RunMetrics(steps=7, finished=False, duration_seconds=12.5, loss=0.25)
    values = metric_values(
        generate_latest(run_metrics.registry(metrics, success_time=None)).decode()
    )
    assert values == {
        ("radinfill_train_loss", ()): 0.25,
        ("radinfill_train_duration_seconds", ()): 12.5,
        ("radinfill_train_steps", ()): 7.0,
    }
    scored = run_metrics.RunMetrics(7, True, 1.0, scores={"mae": 0.5, "csi_1": 0.25})
    text = generate_latest(run_metrics.registry(scored, success_time=1.7e9)).decode()
    values = metric_values(text)
    assert values[("radinfill_train_last_success_timestamp_seconds", ())] == 1.7e9
    assert values[("radinfill_train_score", (("score", "mae"),))] == 0.5
    assert values[("radinfill_train_score", (("score", "csi_1"),))] == 0.25


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A snapshot directory of a finished run with one score, and the log it belongs to."""
    directory = tmp_path / "run" / "step-00000003"
    model = build("baseline", widths=[4], kernels=[3], window=2)
    save_checkpoint(
        model, directory, {"product": "RY", "interval_minutes": 5, "scores": {"mae": 0.75}}
    )
    (directory / "state.json").write_text(json.dumps({"step": 3, "finished": True}))
    log = tmp_path / "run" / "train.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return directory


def test_textfile_keeps_the_last_success_while_a_new_run_is_unfinished(snapshot: Path) -> None:
    prom = snapshot.parent / "metrics" / "train.prom"
    target = PushConfig(textfile=prom)
    log = snapshot.parent / "train.jsonl"
    reported = run_metrics.report(target, snapshot, log, clock=lambda: 1234.5)
    assert reported.finished
    values = metric_values(prom.read_text())
    assert values[("radinfill_train_last_success_timestamp_seconds", ())] == 1234.5
    assert values[("radinfill_train_score", (("score", "mae"),))] == 0.75
    assert values[("radinfill_train_steps", ())] == 3.0
    # the next run is under way: its progress replaces the old, the success time stays
    (snapshot / "state.json").write_text(json.dumps({"step": 1, "finished": False}))
    run_metrics.report(target, snapshot, log, clock=lambda: 9999.0)
    values = metric_values(prom.read_text())
    assert values[("radinfill_train_steps", ())] == 1.0
    assert values[("radinfill_train_last_success_timestamp_seconds", ())] == 1234.5
    assert sorted(p.name for p in prom.parent.iterdir()) == ["train.prom"]


class _Gateway(BaseHTTPRequestHandler):
    """Records every request like a Pushgateway would accept it."""

    received: list[tuple[str, str, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, list]]:
    received: list[tuple[str, str, str]] = []
    handler = type("Handler", (_Gateway,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_pushadd_to_a_gateway_with_a_stable_grouping_key(snapshot: Path, gateway) -> None:
    address, received = gateway
    target = PushConfig(pushgateway=address, instance="hpc")
    run_metrics.report(target, snapshot, snapshot.parent / "train.jsonl", clock=lambda: 42.0)
    [(method, path, body)] = received
    assert method == "POST"  # pushadd: replaces these metrics, keeps the group's others
    assert path == "/metrics/job/radinfill_train/instance/hpc"
    values = metric_values(body)
    assert values[("radinfill_train_last_success_timestamp_seconds", ())] == 42.0
    assert values[("radinfill_train_loss", ())] == 2.5


def test_unfinished_push_leaves_the_last_success_alone(snapshot: Path, gateway) -> None:
    address, received = gateway
    (snapshot / "state.json").write_text(json.dumps({"step": 2, "finished": False}))
    run_metrics.report(PushConfig(pushgateway=address), snapshot, snapshot.parent / "train.jsonl")
    [(_, path, body)] = received
    assert path == "/metrics/job/radinfill_train/instance/default"
    assert "last_success" not in body
    assert metric_values(body)[("radinfill_train_steps", ())] == 2.0


def test_failed_push_is_retried_logged_and_does_not_raise(
    snapshot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    prom = snapshot.parent / "train.prom"
    target = PushConfig(textfile=prom, pushgateway=f"127.0.0.1:{port}")
    with caplog.at_level(logging.INFO, logger="radinfill.train.run_metrics"):
        run_metrics.report(target, snapshot, snapshot.parent / "train.jsonl", sleep=waits.append)
    assert len(waits) == run_metrics.PUSH_ATTEMPTS - 1
    assert all(0 < w <= 5.0 for w in waits)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"127.0.0.1:{port}" in warning.getMessage()
    assert f"after {run_metrics.PUSH_ATTEMPTS} attempt(s)" in warning.getMessage()
    assert metric_values(prom.read_text())[("radinfill_train_steps", ())] == 3.0
