"""Start-up failures a restart cannot cure: one line naming what and where, exit status 2.

Real ``radinfill serve`` processes: a second instance on the same state directory, a metrics
port taken by another process, a SIGHUP before the service is ready.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.service_helpers import ServeProcess, service_document, wait_for, write_toml

EXIT_CONFIG = 2


def config_file(root: Path, **changes: object) -> Path:
    document = service_document(root)
    document["metrics"] |= changes
    return write_toml(root / "radinfill.toml", document)


def test_a_second_instance_is_refused_before_it_touches_anything(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    with ServeProcess(config, tmp_path / "first.log") as first:
        first.wait_ready()
        # What the first instance has in flight: a temporary output file.
        in_flight = tmp_path / "outgoing" / ".raa01-ry_10000-2506011200-dwd---bin.part-1234"
        in_flight.write_bytes(b"half a product")
        with ServeProcess(config, tmp_path / "second.log") as second:
            status = second.wait(60)
        assert status == EXIT_CONFIG
        message = (tmp_path / "second.log").read_text().strip().splitlines()[-1]
        assert message.startswith("radinfill serve: ")
        assert str(tmp_path / "state" / "radinfill.lock") in message
        assert f"pid {first.process.pid}" in message
        assert in_flight.exists()  # the second instance removed nothing
        assert first.process.poll() is None  # and the first one runs on
        assert first.stop() == 0

    # Once the first one has stopped, the lock is free again.
    with ServeProcess(config, tmp_path / "third.log") as third:
        third.wait_ready()
        assert third.stop() == 0


def test_a_taken_metrics_port_names_address_and_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_file(tmp_path, address="127.0.0.1", port=port)
        with ServeProcess(config, tmp_path / "serve.log") as serve:
            status = serve.wait(60)
    assert status == EXIT_CONFIG
    message = (tmp_path / "serve.log").read_text().strip().splitlines()[-1]
    assert message.startswith(f"radinfill serve: metrics endpoint 127.0.0.1:{port}: ")
    assert "[metrics] port" in message


def test_a_sighup_during_start_up_does_not_end_the_process(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    with ServeProcess(config, tmp_path / "serve.log") as serve:
        time.sleep(0.5)  # the interpreter is still importing the service
        serve.signal(signal.SIGHUP)
        serve.wait_ready()
        serve.signal(signal.SIGHUP)  # a reload once it is ready
        wait_for(lambda: serve.event("model_reloaded"), 30, "the reload after READY")
        assert serve.stop() == 0


def test_a_damaged_ledger_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """Garbage, a torn page and an empty (truncated) ledger: exit 2 naming the file, before
    any input is touched; never a traceback, never a silent fresh start."""
    config = config_file(tmp_path)
    with ServeProcess(config, tmp_path / "first.log") as first:
        first.wait_ready()
        assert first.stop() == 0
    ledger = tmp_path / "state" / "ledger.sqlite"
    intact = ledger.read_bytes()
    assert len(intact) >= 8192  # header page and the tables
    torn = bytearray(intact)
    torn[4096:8192] = b"\xa5" * 4096  # the second page overwritten
    for content, says in [
        (b"this is not a database" * 100, "cannot open the ledger: file is not a database"),
        (bytes(torn), "database disk image is malformed"),
        (b"", "the ledger file is empty"),
    ]:
        ledger.write_bytes(content)
        with ServeProcess(config, tmp_path / "damaged.log") as serve:
            assert serve.wait(60) == EXIT_CONFIG
        line = (tmp_path / "damaged.log").read_text().strip().splitlines()[-1]
        assert line.startswith(f"radinfill serve: {ledger}: "), line
        assert says in line
        assert "move it aside" in line
        assert ledger.read_bytes() == content  # left as it was found, for inspection
