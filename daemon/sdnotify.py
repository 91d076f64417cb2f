"""The systemd notify protocol, written out in a few lines instead of a dependency.

systemd (``Type=notify`` / ``Type=notify-reload``) learns that the service is ready, alive,
reloading or stopping from datagrams of ``KEY=VALUE`` lines sent to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace). The systemd authors
recommend exactly this self-contained form over linking libsystemd; the maintained Python
packages either swallow errors silently or need a C extension.

Outside systemd (``$NOTIFY_SOCKET`` unset) every call is a no-op, so the service code calls the
notifier unconditionally. Notification is best effort: a failed send is logged once and reported
as ``False``, never raised, because losing a status line must not take the service down (a
missing ``WATCHDOG=1`` is then what systemd acts on).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

_log = logging.getLogger(__name__)


class Notifier:
    """Send systemd notifications to one socket.

    Parameters
    ----------
    address
        The notify socket: a filesystem path, or ``@name`` for the abstract namespace. ``None``
        reads ``$NOTIFY_SOCKET``; ``None`` there or an empty string disables the notifier, so
        every method returns ``False`` without doing anything.
    """

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET")
        self._address = address or None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured (i.e. the process runs under systemd)."""
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram with a ``KEY=VALUE`` line per field.

        Newlines inside a value are replaced by spaces: they would otherwise start a new
        assignment and let a status text inject protocol fields.

        Returns
        -------
        bool
            ``True`` when the datagram was sent; ``False`` when the notifier is disabled or the
            send failed. The first failure is logged at warning level (later ones at debug, so a
            vanished socket does not flood the log once per watchdog ping).
        """
        if self._address is None or not fields:
            return False
        message = "\n".join(
            f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()
        )
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message.encode())
        except OSError as error:
            log = _log.debug if self._warned else _log.warning
            log("systemd notification to %s failed: %s", self._address, error)
            self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd that start-up (or a reload) is complete, optionally with a status line."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Ping the service watchdog; call only while the service is making progress."""
        return self.send(WATCHDOG=1)

    def stopping(self) -> bool:
        """Tell systemd that an orderly shutdown has begun."""
        return self.send(STOPPING=1)

    def reloading(self) -> bool:
        """Tell systemd that a reload has begun (``Type=notify-reload`` requires the timestamp).

        ``MONOTONIC_USEC`` is ``CLOCK_MONOTONIC`` in microseconds, which systemd uses to match
        this message to the reload request it sent; finish the reload with :meth:`ready`.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=now_us)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd to wait ``seconds`` longer for the current start, reload or stop."""
        return self.send(EXTEND_TIMEOUT_USEC=round(seconds * 1_000_000))


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds: half of systemd's ``WatchdogSec``.

    Half the timeout is systemd's own recommendation, so that one late ping does not trigger
    the watchdog. ``WATCHDOG_PID``, when set, names the process the watchdog is meant for;
    another process (e.g. a child that inherited the environment) must not ping.

    Returns
    -------
    float or None
        ``WATCHDOG_USEC / 2`` in seconds, or ``None`` when no watchdog is configured for this
        process (unset, not a positive integer, or meant for another PID).
    """
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None
