"""Candidate input files and the order they are worked in.

Watch events, the startup scan and the reconcile scans all put :class:`Arrival` records on one
:class:`WorkQueue`. The queue has two lanes: **live** (file events: the real-time feed) and
**backlog** (files found by scans). The worker always takes a live file first, so a backlog after
downtime never delays the current product; within a lane the newest file (by mtime) goes first.
A path is pending at most once: seeing it again only upgrades how it was seen (a close or rename
event makes a file complete, a poll sighting does not).

:func:`settled` decides whether a file may be read now: a file that arrived by close-after-write
or rename-in is complete; one seen only by polling or a scan is complete once its size and
mtime did not change over ``settle_s`` (checked on two visits). A file not yet settled is
deferred, not dropped.

Inputs are opened with :func:`open_input` only: never through a symbolic link, never a FIFO or
device, so nothing placed in an incoming directory can make the service read a file elsewhere
with its own rights, or block its worker.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import heapq
import itertools
import os
import stat
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from radinfill.radolan import header as radolan_header

__all__ = [
    "COMPLETE",
    "Arrival",
    "NotRegularFileError",
    "WorkQueue",
    "open_input",
    "settled",
    "sniff_key",
]

#: Bytes read to find a product header (headers are a few hundred bytes).
_HEADER_BYTES = 4096

#: What :func:`open_input` calls the files it refuses.
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}

#: How a file was seen; these mean the writer is done (close-after-write, rename-in).
COMPLETE = frozenset({"closed", "moved"})


@dataclass(frozen=True)
class Arrival:
    """A candidate input file.

    Attributes
    ----------
    path
        The file.
    via
        How it was seen: ``closed``, ``moved`` (events), ``polled`` (polling observer),
        ``scan`` (startup or reconcile scan).
    seen
        Wall-clock time (Unix s) it was first seen: the start of its end-to-end latency.
    seen_monotonic
        The same on the monotonic clock (ages and deadlines).
    stat
        (size, mtime_ns) at the last settle check, None before the first.
    not_before
        Monotonic time before which it is not handed out (deferred).
    attempts
        Times it was deferred.
    """

    path: Path
    via: str
    seen: float
    seen_monotonic: float
    stat: tuple[int, int] | None = None
    not_before: float = 0.0
    attempts: int = 0

    @classmethod
    def now(cls, path: Path, via: str) -> Arrival:
        """An arrival seen now."""
        return cls(Path(path), via, time.time(), time.monotonic())

    @property
    def live(self) -> bool:
        """Seen by a watch event (the real-time lane) rather than a scan."""
        return self.via != "scan"


def settled(arrival: Arrival, settle_s: float) -> tuple[bool, Arrival]:
    """Whether ``arrival`` may be read now, and the arrival updated with what was observed.

    Raises
    ------
    FileNotFoundError
        If the file is gone (moved away or deleted before it was read).
    """
    if arrival.via in COMPLETE:
        return True, arrival
    st = os.stat(arrival.path)
    stat = (st.st_size, st.st_mtime_ns)
    quiet = time.time() - st.st_mtime >= settle_s
    return (quiet and arrival.stat == stat), replace(arrival, stat=stat)


class WorkQueue:
    """Pending arrivals in two lanes (see the module docstring); thread-safe."""

    def __init__(self) -> None:
        self._pending: dict[Path, Arrival] = {}
        self._heap: list[tuple[int, float, int, Path]] = []
        self._entry_of: dict[Path, int] = {}  # the heap entry that is current per path
        self._taken: set[Path] = set()  # handed out by get(), not yet done() or deferred
        self._again: dict[Path, Arrival] = {}  # seen complete again while taken
        self._count = itertools.count()
        self._ready = threading.Condition()

    def put(self, arrival: Arrival) -> bool:
        """Queue ``arrival``; returns False if its path was pending already (then only a
        complete sighting replaces a partial one, keeping the first-seen time). A complete
        sighting of a path being worked on (a correction renamed in meanwhile) is kept and
        queued when :meth:`done` releases the path."""
        with self._ready:
            pending = self._pending.get(arrival.path)
            if arrival.path in self._taken:
                if arrival.via in COMPLETE:
                    self._again[arrival.path] = arrival
                return False
            if pending is not None:
                if arrival.via in COMPLETE and pending.via not in COMPLETE:
                    upgraded = replace(pending, via=arrival.via, not_before=0.0)
                    self._pending[arrival.path] = upgraded
                    self._push(upgraded)
                    self._ready.notify()
                return False
            self._pending[arrival.path] = arrival
            self._push(arrival)
            self._ready.notify()
            return True

    def defer(self, arrival: Arrival, delay_s: float) -> None:
        """Put back an arrival taken by :meth:`get`, not to be handed out for ``delay_s``."""
        later = replace(
            arrival, not_before=time.monotonic() + delay_s, attempts=arrival.attempts + 1
        )
        with self._ready:
            self._taken.discard(later.path)
            self._pending[later.path] = later
            self._push(later)
            self._ready.notify()

    def done(self, arrival: Arrival) -> None:
        """Forget an arrival taken by :meth:`get` (processed, quarantined or dropped)."""
        with self._ready:
            self._taken.discard(arrival.path)
            self._entry_of.pop(arrival.path, None)
            self._pending.pop(arrival.path, None)
            again = self._again.pop(arrival.path, None)
        if again is not None:
            self.put(again)

    def get(self, timeout: float) -> Arrival | None:
        """The next arrival due (live lane first, newest first), waiting up to ``timeout``
        seconds; None if none is due. The arrival stays pending until :meth:`done` or
        :meth:`defer`, so a new sighting meanwhile does not queue it twice."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                now = time.monotonic()
                arrival, wait = self._pop_due(now)
                if arrival is not None:
                    return arrival
                left = deadline - now
                if left <= 0:
                    return None
                self._ready.wait(min(left, wait))

    def paths(self) -> list[Path]:
        """The pending paths (in no particular order)."""
        with self._ready:
            return list(self._pending)

    def __len__(self) -> int:
        with self._ready:
            return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds since the oldest pending arrival was first seen (0 when empty)."""
        with self._ready:
            if not self._pending:
                return 0.0
            first = min(a.seen_monotonic for a in self._pending.values())
        return time.monotonic() - first

    def _push(self, arrival: Arrival) -> None:
        try:
            mtime = os.stat(arrival.path).st_mtime
        except OSError:
            mtime = arrival.seen
        lane = 0 if arrival.live else 1
        seq = next(self._count)
        self._entry_of[arrival.path] = seq
        heapq.heappush(self._heap, (lane, -mtime, seq, arrival.path))

    def _pop_due(self, now: float) -> tuple[Arrival | None, float]:
        """Pop the first due entry; stale heap entries (superseded or done) are dropped.
        Returns (arrival or None, seconds until the next deferred one is due)."""
        deferred: list[tuple[int, float, int, Path]] = []
        found, wait = None, 3600.0
        while self._heap:
            entry = heapq.heappop(self._heap)
            arrival = self._pending.get(entry[3])
            if arrival is None or entry[2] != self._entry_of.get(entry[3]):
                continue  # superseded by a newer entry for the path, or done
            if arrival.not_before > now:
                deferred.append(entry)
                wait = min(wait, arrival.not_before - now)
                continue
            found = arrival
            self._taken.add(arrival.path)
            del self._entry_of[arrival.path]
            break
        for entry in deferred:
            heapq.heappush(self._heap, entry)
        return found, wait


def sniff_key(path: Path) -> tuple[str, datetime] | None:
    """(product, nominal time) from the header at the start of a plain, gzip or bzip2 product
    file; None for anything else (HDF5, tar, unreadable): those are found when decoded."""
    try:
        with open_input(path) as file:
            magic = file.read(3)
            file.seek(0)
            stream: BinaryIO = file
            if magic[:2] == b"\x1f\x8b":
                stream = gzip.GzipFile(fileobj=file)
            elif magic == b"BZh":
                stream = bz2.BZ2File(file)
            head = stream.read(_HEADER_BYTES)
        raw, _ = radolan_header.split(head, str(path))
        hdr = radolan_header.parse(raw, str(path))
    except (OSError, EOFError, ValueError):
        return None
    return hdr.product, hdr.time


class NotRegularFileError(OSError):
    """An input that is a symbolic link, FIFO, device or directory: never read."""


def open_input(path: Path) -> BinaryIO:
    """Open an input file for reading, never through a symbolic link and never blocking.

    Inputs are the entries of the incoming directories (watches and scans are not recursive).
    ``O_NOFOLLOW`` keeps a link placed there, by anyone who can write to the feed, from making
    the service read a file outside those directories with its own rights; ``O_NONBLOCK`` lets
    a FIFO be opened and refused instead of hanging the worker. Links in the configured
    directory paths themselves are followed: the operator chose those.

    Raises
    ------
    NotRegularFileError
        If ``path`` is a symbolic link (whatever it points at) or not a regular file.
    OSError
        If it cannot be opened otherwise (FileNotFoundError, PermissionError, ...).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise NotRegularFileError(
            f"{path}: a symbolic link; links in the incoming directories are never followed"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")
            raise NotRegularFileError(f"{path}: {kind}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
