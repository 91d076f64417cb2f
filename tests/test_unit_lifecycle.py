"""The service driven by its own unit file, the way systemd drives it.

There is no systemd manager in the test environment (no PID 1 systemd), so this test plays the
manager's part with what the unit says: it runs ``ExecStartPre=`` and ``ExecStart=`` exactly
as written (only the installed CLI and configuration paths point at this environment), sets
``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` like systemd does, checks with
``SO_PASSCRED`` that every notification comes from the main process (``NotifyAccess=main``
drops all others), runs ``ExecReload=`` through a shell with ``$MAINPID`` set, and stops with
``KillSignal=`` within ``TimeoutStopSec=``.
"""

from __future__ import annotations

import configparser
import itertools
import os
import shlex
import signal
import socket
import struct
import subprocess
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.service_helpers import service_document, wait_for, write_toml

UNIT = REPO / "systemd" / "radinfill.service"
INSTALLED_CLI = "/opt/radinfill/venv/bin/radinfill"
INSTALLED_CONFIG = "/etc/radinfill/radinfill.toml"
#: The watchdog period of the test (systemd's is WatchdogSec=, minutes): short, to see pings.
WATCHDOG_S = 2.0


def unit_service_section() -> dict[str, str]:
    """The ``[Service]`` keys of the unit (a key given twice: the last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return dict(parser["Service"])


@pytest.fixture
def manager_socket(tmp_path: Path) -> Iterator[tuple[str, list[tuple[float, int, list[str]]]]]:
    """A notify socket that records (arrival, sender pid, lines) of every datagram, the sender
    taken from the kernel's credentials as systemd does."""
    path = tmp_path / "notify.sock"
    address = str(path) if len(os.fsencode(path)) < 100 else "\0radinfill-unit-test"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(address)
    sock.settimeout(0.2)
    received: list[tuple[float, int, list[str]]] = []
    done = threading.Event()
    creds = struct.calcsize("3i")

    def listen() -> None:
        while not done.is_set():
            try:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:creds])[0]
            received.append((time.monotonic(), pid, data.decode().split("\n")))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield (address if not address.startswith("\0") else "@" + address[1:]), received
    done.set()
    thread.join()
    sock.close()


def command(line: str, config: Path) -> list[str]:
    """An ``Exec*=`` line as argv, with the installed paths pointing at this environment."""
    cli = str(Path(sysconfig.get_path("scripts")) / "radinfill")
    return shlex.split(line.replace(INSTALLED_CLI, cli).replace(INSTALLED_CONFIG, str(config)))


def test_the_units_commands_start_notify_reload_and_stop_the_service(
    manager_socket: tuple[str, list[tuple[float, int, list[str]]]], tmp_path: Path
) -> None:
    address, received = manager_socket
    unit = unit_service_section()
    assert unit["Type"] == "notify"
    assert unit["NotifyAccess"] == "main"
    config = write_toml(tmp_path / "radinfill.toml", service_document(tmp_path))
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "PYTHONDONTWRITEBYTECODE": "1"}

    pre = subprocess.run(command(unit["ExecStartPre"], config), env=env, capture_output=True)
    assert pre.returncode == 0, pre.stderr.decode()

    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    main = subprocess.Popen(
        command(unit["ExecStart"], config),
        env=env | {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def lines(text: str) -> list[int]:
        return [i for i, (_, _, m) in enumerate(list(received)) if text in m]

    try:
        wait_for(lambda: lines("READY=1"), float(unit["TimeoutStartSec"]), "READY=1")
        wait_for(lambda: len(lines("WATCHDOG=1")) >= 4, 8 * WATCHDOG_S, "four WATCHDOG=1")

        reload = unit["ExecReload"].replace("$MAINPID", str(main.pid))
        subprocess.run(["/bin/sh", "-c", reload], check=True, timeout=10)
        wait_for(lambda: len(lines("READY=1")) >= 2, 120, "READY=1 after the reload")

        stop_signal = getattr(signal, unit.get("KillSignal", "SIGTERM"))
        main.send_signal(stop_signal)
        status = main.wait(timeout=float(unit["TimeoutStopSec"]))
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
        log.close()
    assert status == 0, (tmp_path / "serve.log").read_text()[-3000:]
    wait_for(lambda: lines("STOPPING=1"), 5, "STOPPING=1")

    senders = {pid for _, pid, _ in received}
    assert senders == {main.pid}  # NotifyAccess=main would drop anything else
    ready, reloading = lines("READY=1"), lines("RELOADING=1")
    assert len(reloading) == 1
    assert ready[0] < reloading[0] < ready[1]
    assert any(x.startswith("MONOTONIC_USEC=") for x in received[reloading[0]][2])
    assert lines("STOPPING=1") == [len(received) - 1]
    pings = [received[i][0] for i in lines("WATCHDOG=1")]
    assert min(lines("WATCHDOG=1")) > ready[0]  # alive only once ready
    before_reload = [b - a for a, b in itertools.pairwise(pings)][:3]
    assert max(before_reload) < WATCHDOG_S  # every period has a ping: systemd never aborts
    statuses = [x for _, _, m in received for x in m if x.startswith("STATUS=")]
    assert any("processed=" in x for x in statuses)
