"""systemd notify protocol: real AF_UNIX datagram sockets receive exactly the expected messages."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from radinfill.daemon.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound to a file, as systemd creates it; yields (address, socket)."""
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) >= 100:  # AF_UNIX paths are limited to ~108 bytes
        pytest.skip(f"tmp path too long for an AF_UNIX socket: {path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        yield str(path), sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in the Linux abstract namespace; the address starts with ``@``."""
    name = f"radinfill-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield "@" + name, sock


def _receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def _nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_messages_arrive_one_datagram_each(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = Notifier(address)
    assert notifier.enabled
    assert notifier.ready("warming done")
    assert _receive(sock) == ["READY=1", "STATUS=warming done"]
    assert notifier.ready()
    assert _receive(sock) == ["READY=1"]
    assert notifier.status("last=2026-11-24T12:35Z lag=95s queue=0")
    assert _receive(sock) == ["STATUS=last=2026-11-24T12:35Z lag=95s queue=0"]
    assert notifier.watchdog()
    assert _receive(sock) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert _receive(sock) == ["STOPPING=1"]
    assert notifier.extend_timeout(90.5)
    assert _receive(sock) == ["EXTEND_TIMEOUT_USEC=90500000"]
    assert _nothing_waiting(sock)


def test_reloading_carries_the_monotonic_clock(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier(address).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, stamp = _receive(sock)
    assert reloading == "RELOADING=1"
    key, value = stamp.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_newlines_cannot_inject_fields(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    assert Notifier(address).status("two\nlines READY=1")
    assert _receive(sock) == ["STATUS=two lines READY=1"]


def test_abstract_namespace(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    assert Notifier(address).send(READY=1, STATUS="abstract")
    assert _receive(sock) == ["READY=1", "STATUS=abstract"]


def test_address_defaults_to_notify_socket(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert Notifier().watchdog()
    assert _receive(sock) == ["WATCHDOG=1"]


@pytest.mark.parametrize("address", [None, ""])
def test_disabled_notifier_is_a_no_op(
    address: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier(address)
    assert not notifier.enabled
    sent = [
        notifier.ready("x"),
        notifier.status("x"),
        notifier.watchdog(),
        notifier.stopping(),
        notifier.reloading(),
        notifier.extend_timeout(1),
    ]
    assert sent == [False] * len(sent)
    assert caplog.records == []


def test_missing_socket_returns_false_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.DEBUG, logger="radinfill.daemon.sdnotify"):
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]
    assert "gone.sock" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ) == expected


def test_watchdog_interval_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 5.0
