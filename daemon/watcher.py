"""Watching the incoming directories: watchdog observers whose handlers only enqueue, and scans.

Events are hints; the scans are the truth (DESIGN §7). With inotify, a file counts as arrived on
close-after-write or rename-in (``generate_full_events`` turns a move in from another directory
into a moved event too), so a file still being written is never picked up by its creation.
Network file systems deliver no inotify events for writes made by other hosts, so there the
polling observer is used and every sighting has to settle (:func:`radinfill.daemon.intake.settled`).
``auto`` picks polling for the file system types that need it.

Handlers never raise (an exception would silently kill watchdog's dispatcher thread) and never
do work: they put an :class:`~radinfill.daemon.intake.Arrival` on the queue. :meth:`Watcher.alive`
lets the service stop its systemd watchdog pings (and so get restarted) if an observer died.

Symbolic links are never inputs: scans skip them, and one that arrives by an event (renamed in,
or seen by polling) is refused unread by :func:`~radinfill.daemon.intake.open_input`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from radinfill import permissions
from radinfill.daemon.intake import Arrival

__all__ = ["Watcher", "choose_mode", "matches", "scan"]

_log = logging.getLogger(__name__)
#: File system types without inotify events for remote writes.
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse", "fuseblk", "lustre", "gpfs", "9p", "ceph"}
)
#: Names writers use while a file is incomplete.
_TEMPORARY = ("*.tmp", "*.part", "*.partial", "*~", "*.swp")


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a file name is an input: matches a pattern, and is neither hidden nor one of the
    usual temporary names (atomic writers, ours included, write ``.name.tmp`` first)."""
    if name.startswith(".") or any(fnmatch.fnmatch(name, t) for t in _TEMPORARY):
        return False
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def scan(directories: Iterable[Path], patterns: Iterable[str]) -> list[Path]:
    """The input files in the directories (not recursive), newest mtime first."""
    patterns = list(patterns)
    found: list[tuple[float, Path]] = []
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and matches(entry.name, patterns):
                    found.append((entry.stat().st_mtime, Path(entry.path)))
            except FileNotFoundError:
                continue  # removed between listing and stat
    return [path for _, path in sorted(found, key=lambda item: -item[0])]


def choose_mode(directory: Path, mode: str, mounts: Path = Path("/proc/mounts")) -> str:
    """``inotify`` or ``polling`` for a directory: ``mode`` unless it is ``auto``, then polling
    on network file systems (:data:`NETWORK_FS`, from the longest matching mount point)."""
    if mode != "auto":
        return mode
    target = os.path.realpath(directory)
    best, fstype = "", ""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return "inotify"
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, parts[2]
    base = fstype.split(".")[0]
    return "polling" if base in NETWORK_FS else "inotify"


class _Handler(FileSystemEventHandler):
    """Turns file events into arrivals; only enqueues, never raises."""

    def __init__(
        self, patterns: tuple[str, ...], polling: bool, enqueue: Callable[[Arrival], None]
    ) -> None:
        self.patterns, self.polling, self.enqueue = patterns, polling, enqueue

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # a raising handler kills the observer thread
            _log.exception("watch event handler failed for %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            path, via = os.fsdecode(event.dest_path), "moved"
        elif isinstance(event, FileClosedEvent):
            path, via = os.fsdecode(event.src_path), "closed"
        elif self.polling and isinstance(event, FileCreatedEvent | FileModifiedEvent):
            path, via = os.fsdecode(event.src_path), "polled"
        else:
            return
        if path and matches(os.path.basename(path), self.patterns):
            self.enqueue(Arrival.now(Path(path), via))


class Watcher:
    """One observer per incoming directory (non-recursive), started and stopped together.

    Parameters
    ----------
    directories
        The incoming directories (created 0755 if missing, so the watch can start).
    patterns
        File-name globs of inputs.
    mode
        ``auto``, ``inotify`` or ``polling``.
    poll_interval_s
        Polling period (polling mode).
    enqueue
        Receives every arrival (the work queue's ``put``).
    """

    def __init__(
        self,
        directories: Iterable[Path],
        patterns: Iterable[str],
        *,
        mode: str,
        poll_interval_s: float,
        enqueue: Callable[[Arrival], None],
    ) -> None:
        self.patterns = tuple(patterns)
        self.observers: list[BaseObserver] = []
        self.modes: dict[Path, str] = {}
        for directory in directories:
            permissions.make_dirs(directory)
            chosen = choose_mode(directory, mode)
            self.modes[directory] = chosen
            if chosen == "polling":
                observer: BaseObserver = PollingObserver(timeout=poll_interval_s)
            else:
                observer = InotifyObserver(generate_full_events=True)
            handler = _Handler(self.patterns, chosen == "polling", enqueue)
            events = [FileClosedEvent, FileMovedEvent, FileCreatedEvent, FileModifiedEvent]
            observer.schedule(handler, str(directory), recursive=False, event_filter=events)
            self.observers.append(observer)

    def start(self) -> None:
        """Start every observer (before the startup scan, so nothing falls in between)."""
        for observer in self.observers:
            observer.start()

    def alive(self) -> bool:
        """Whether every observer thread still runs."""
        return all(observer.is_alive() for observer in self.observers)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the observers."""
        for observer in self.observers:
            observer.stop()
        for observer in self.observers:
            if observer.is_alive():
                observer.join(timeout)
