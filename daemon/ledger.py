"""The service's memory: which inputs were processed, in which version, and which files were seen.

The ledger is what makes the service idempotent and restart-safe. File events are only hints;
the ledger decides whether an input is new, a re-delivery of content already processed, a
correction of it, or too late to act on, and it lets the reconcile scan skip files it has
already handled without re-reading them.

Keys and versions
    An input is keyed on ``(product, nominal time)`` and identified by the sha256 of its file
    bytes. The first processed content of a key is version 1; each correction (new content for
    the key) processed later gets the next version. All versions are kept, so an operator can
    see what was replaced and when.

Storage
    SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when :meth:`Ledger.record`
    returns, a killed process loses at most the transaction it was in, and readers (an
    operator's ``sqlite3`` shell, a reconcile scan) never block the writer. Times are stored as
    fixed-width ISO 8601 UTC text, which sorts chronologically and stays readable in a shell.

Threads
    One connection (``check_same_thread=False``) guarded by a lock. The service writes from
    one worker thread and the reconcile scan reads from another, a few statements a minute, so
    serialising them costs nothing and avoids per-thread connections that could not be closed
    from :meth:`Ledger.close`. "database is locked" can then only come from another process
    (e.g. an operator's shell holding a write lock); SQLite's busy handler waits
    ``BUSY_TIMEOUT_S`` and tenacity retries the whole operation a bounded number of times.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from radinfill.names import printable

__all__ = ["Entry", "Ledger", "LedgerError", "Verdict", "is_damage"]

#: Layout version of the database; a newer one on disk is refused (an older radinfill must not
#: write into a ledger whose meaning it does not know).
SCHEMA_VERSION = 1
#: Seconds SQLite itself waits for another process's lock before reporting "locked".
BUSY_TIMEOUT_S = 1.0
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inputs (
    id INTEGER PRIMARY KEY,
    product TEXT NOT NULL,
    nominal TEXT NOT NULL,
    UNIQUE (product, nominal)
);
CREATE TABLE IF NOT EXISTS versions (
    input_id INTEGER NOT NULL REFERENCES inputs (id) ON DELETE CASCADE,
    version INTEGER NOT NULL CHECK (version >= 1),
    sha256 TEXT NOT NULL,
    input_path TEXT NOT NULL,
    outputs TEXT NOT NULL,
    method TEXT NOT NULL,
    hole_pixels INTEGER NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (input_id, version)
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    noted_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    noted_at TEXT NOT NULL,
    PRIMARY KEY (path, sha256)
);
CREATE TABLE IF NOT EXISTS grids (
    product TEXT PRIMARY KEY,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_noted_at ON files (noted_at);
CREATE INDEX IF NOT EXISTS quarantine_noted_at ON quarantine (noted_at);
"""

#: Current version of every input: the row with the highest version number of its key.
_CURRENT = """
SELECT i.product, i.nominal, v.sha256, v.version, v.input_path, v.outputs, v.method,
       v.hole_pixels, v.processed_at
FROM inputs AS i JOIN versions AS v ON v.input_id = i.id
WHERE v.version = (SELECT MAX(version) FROM versions WHERE input_id = i.id)
"""

_T = TypeVar("_T")


class LedgerError(RuntimeError):
    """The ledger file cannot be used (not a database, or written by a newer radinfill)."""


class Verdict(enum.Enum):
    """What to do with an input, given what the ledger knows about its key."""

    #: Key never processed: process it (also when old: first sight of an old file is backlog).
    NEW = "new"
    #: Content already processed for this key (any version): skip.
    DUPLICATE = "duplicate"
    #: New content for a processed key, within the reprocessing horizon: process as next version.
    CORRECTION = "correction"
    #: New content for a processed key older than the horizon: count, do not process.
    LATE = "late"


@dataclass(frozen=True)
class Entry:
    """One processed version of an input.

    Attributes
    ----------
    product
        RADOLAN product code (e.g. ``RY``).
    nominal
        Nominal time of the product, UTC-aware.
    sha256
        Hex sha256 of the product as encoded (decompressed): the key of the content, the same
        for a gzipped copy of the same product.
    version
        1 for the first processed content of the key, +1 per correction.
    input_path
        Where the input was read from.
    outputs
        Paths of the outputs written for this version.
    method
        Infill method used (the model, or the fallback that replaced it).
    hole_pixels
        Number of pixels infilled.
    processed_at
        When the version was recorded, UTC-aware (the ledger's clock).
    """

    product: str
    nominal: datetime
    sha256: str
    version: int
    input_path: str
    outputs: tuple[str, ...]
    method: str
    hole_pixels: int
    processed_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _to_text(moment: datetime) -> str:
    """Fixed-width UTC text, so that string order is time order; naive times are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"ledger times must be timezone-aware (UTC), got naive {moment}")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _from_text(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        product=row["product"],
        nominal=_from_text(row["nominal"]),
        sha256=row["sha256"],
        version=row["version"],
        input_path=row["input_path"],
        outputs=tuple(json.loads(row["outputs"])),
        method=row["method"],
        hole_pixels=row["hole_pixels"],
        processed_at=_from_text(row["processed_at"]),
    )


def is_damage(error: BaseException) -> bool:
    """Whether an error from the ledger means its file is damaged (not a lock, a full disk or
    a constraint): only a restart, which checks the file, can decide what to do then."""
    return type(error) is sqlite3.DatabaseError


def _is_locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


class Ledger:
    """Restart-safe record of processed inputs, seen files and quarantined files.

    Parameters
    ----------
    path
        The SQLite file (normally in the service's state directory); parent directories are
        created.
    horizon
        How far behind the clock a corrected input may be and still be reprocessed. Older
        corrections are :attr:`Verdict.LATE`: downstream users have moved on, and reprocessing
        a day-old product would only churn outputs.
    clock
        Returns the current time, UTC-aware; injected so that tests control "now".

    Raises
    ------
    LedgerError
        If ``path`` is not a SQLite database or holds a newer schema.
    """

    def __init__(
        self,
        path: Path,
        *,
        horizon: timedelta = timedelta(hours=2),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self.horizon = horizon
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take an empty file for a new ledger and every input would be done
            # again under version 1: a truncated ledger is damage, not a fresh start.
            raise LedgerError(f"{self.path}: the ledger file is empty (truncated?)")
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._retry(self._open)
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise LedgerError(f"{self.path}: cannot open the ledger: {error}") from error
        except LedgerError:
            self._db.close()
            raise

    def _open(self) -> None:
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise LedgerError(f"{self.path}: the ledger is damaged ({check})")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as db:
            # statement by statement: executescript() would commit the open transaction
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: ledger schema version {row[0]} is newer than this radinfill "
                    f"understands ({SCHEMA_VERSION}); upgrade radinfill or use another state "
                    "directory"
                )

    # --- plumbing ---------------------------------------------------------------------------

    def _retry(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation`` (one whole transaction), retrying while another process holds a lock.

        Each attempt takes the thread lock afresh, so a backoff never blocks the other thread.
        """
        retrying = Retrying(
            retry=retry_if_exception(_is_locked),
            stop=stop_after_attempt(5),
            wait=wait_exponential_jitter(multiplier=0.05, max=1),
            reraise=True,
        )
        for attempt in retrying:
            with attempt, self._lock:
                return operation()
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

        IMMEDIATE takes the write lock up front, so a read-then-write transaction cannot fail
        half-way on a lock upgrade (which SQLite's busy handler does not wait for).
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _query(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        return self._retry(lambda: self._db.execute(sql, parameters).fetchall())

    # --- inputs and versions ----------------------------------------------------------------

    def classify(self, product: str, nominal: datetime, sha256: str) -> Verdict:
        """Decide what to do with an input of ``product`` at ``nominal`` with content ``sha256``.

        A content hash seen in *any* version of the key is a duplicate, so that a re-delivered
        old file cannot roll a corrected product back. A key never processed is
        :attr:`Verdict.NEW` however old it is: the horizon only limits corrections.
        """
        rows = self._query(
            "SELECT v.sha256 FROM inputs AS i JOIN versions AS v ON v.input_id = i.id "
            "WHERE i.product = ? AND i.nominal = ?",
            (product, _to_text(nominal)),
        )
        if not rows:
            return Verdict.NEW
        if any(row["sha256"] == sha256 for row in rows):
            return Verdict.DUPLICATE
        if nominal < self._clock() - self.horizon:
            return Verdict.LATE
        return Verdict.CORRECTION

    def record(
        self,
        product: str,
        nominal: datetime,
        sha256: str,
        input_path: str,
        outputs: Sequence[str],
        *,
        method: str,
        hole_pixels: int,
    ) -> Entry:
        """Record a processed input as the key's next version (1 if the key is new).

        One transaction: after a crash the version is either fully recorded or absent, so a
        restarted service either skips the input as a duplicate or processes it again (the
        outputs are replaced atomically, so redoing the work is harmless).

        Returns
        -------
        Entry
            The recorded version.
        """
        nominal_text = _to_text(nominal)
        processed_at = self._clock()
        processed_text = _to_text(processed_at)
        input_path, outputs = printable(input_path), [printable(p) for p in outputs]

        def insert() -> int:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO inputs (product, nominal) VALUES (?, ?) "
                    "ON CONFLICT (product, nominal) DO NOTHING",
                    (product, nominal_text),
                )
                (input_id,) = db.execute(
                    "SELECT id FROM inputs WHERE product = ? AND nominal = ?",
                    (product, nominal_text),
                ).fetchone()
                (latest,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM versions WHERE input_id = ?",
                    (input_id,),
                ).fetchone()
                db.execute(
                    "INSERT INTO versions (input_id, version, sha256, input_path, outputs, "
                    "method, hole_pixels, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        input_id,
                        latest + 1,
                        sha256,
                        input_path,
                        json.dumps(list(outputs)),
                        method,
                        hole_pixels,
                        processed_text,
                    ),
                )
                return int(latest) + 1

        version = self._retry(insert)
        return Entry(
            product=product,
            nominal=nominal.astimezone(UTC),
            sha256=sha256,
            version=version,
            input_path=input_path,
            outputs=tuple(outputs),
            method=method,
            hole_pixels=hole_pixels,
            processed_at=_from_text(processed_text),
        )

    def current(self, product: str, nominal: datetime) -> Entry | None:
        """The latest version of the key, or ``None`` if it was never processed."""
        rows = self._query(
            f"{_CURRENT} AND i.product = ? AND i.nominal = ?", (product, _to_text(nominal))
        )
        return _entry(rows[0]) if rows else None

    def history(self, product: str, nominal: datetime) -> list[Entry]:
        """Every recorded version of the key, oldest first."""
        rows = self._query(
            "SELECT i.product, i.nominal, v.* FROM inputs AS i "
            "JOIN versions AS v ON v.input_id = i.id "
            "WHERE i.product = ? AND i.nominal = ? ORDER BY v.version",
            (product, _to_text(nominal)),
        )
        return [_entry(row) for row in rows]

    def recent(self, product: str, limit: int) -> list[Entry]:
        """The current versions of the ``limit`` newest keys of ``product``, newest first.

        The service rebuilds its rolling input window from these on start.
        """
        rows = self._query(
            f"{_CURRENT} AND i.product = ? ORDER BY i.nominal DESC LIMIT ?", (product, limit)
        )
        return [_entry(row) for row in rows]

    def products(self) -> list[str]:
        """Products with at least one recorded input, sorted."""
        rows = self._query("SELECT DISTINCT product FROM inputs ORDER BY product")
        return [row["product"] for row in rows]

    # --- file index and quarantine ----------------------------------------------------------

    def note_file(self, path: str, size: int, mtime_ns: int, outcome: str) -> None:
        """Remember that ``path`` (as it was: ``size`` bytes, ``mtime_ns``) was handled.

        ``outcome`` is free text such as ``done``, ``duplicate``, ``late`` or ``quarantined``.
        A rewritten file changes size or mtime, so it is not mistaken for the handled one.
        """
        path = printable(path)
        noted_at = _to_text(self._clock())

        def upsert() -> None:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO files (path, size, mtime_ns, outcome, noted_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns, "
                    "outcome = excluded.outcome, noted_at = excluded.noted_at",
                    (path, size, mtime_ns, outcome, noted_at),
                )

        self._retry(upsert)

    def forget_files(self, outcome: str) -> int:
        """Forget the files noted with ``outcome`` (e.g. ``wrong_grid``), so that the next scan
        takes them again; returns how many."""

        def delete() -> int:
            with self._transaction() as db:
                return db.execute("DELETE FROM files WHERE outcome = ?", (outcome,)).rowcount

        return self._retry(delete)

    def grid(self, product: str) -> tuple[int, int] | None:
        """The grid (rows, cols) the product's outputs have been on, if any was recorded."""
        rows = self._query("SELECT rows, cols FROM grids WHERE product = ?", (product,))
        return (rows[0]["rows"], rows[0]["cols"]) if rows else None

    def remember_grid(self, product: str, shape: tuple[int, int]) -> None:
        """Record the product's grid, unless one is recorded already (the first one stays)."""

        def insert() -> None:
            with self._transaction() as db:
                db.execute(
                    "INSERT OR IGNORE INTO grids (product, rows, cols) VALUES (?, ?, ?)",
                    (product, *shape),
                )

        self._retry(insert)

    def known_file(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The outcome noted for ``path`` if its size and mtime still match, else ``None``.

        Lets the reconcile scan skip handled files with one ``stat`` instead of hashing them.
        """
        path = printable(path)
        rows = self._query(
            "SELECT outcome FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
            (path, size, mtime_ns),
        )
        return rows[0]["outcome"] if rows else None

    def quarantine(self, path: str, sha256: str, reason: str) -> None:
        """Remember that the file at ``path`` with content ``sha256`` was quarantined, and why."""
        path = printable(path)
        noted_at = _to_text(self._clock())

        def upsert() -> None:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO quarantine (path, sha256, reason, noted_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (path, sha256) DO UPDATE SET "
                    "reason = excluded.reason, noted_at = excluded.noted_at",
                    (path, sha256, reason, noted_at),
                )

        self._retry(upsert)

    def quarantined(self) -> list[tuple[str, str, str]]:
        """Quarantined files as ``(path, sha256, reason)``, oldest first."""
        rows = self._query("SELECT path, sha256, reason FROM quarantine ORDER BY noted_at, path")
        return [(row["path"], row["sha256"], row["reason"]) for row in rows]

    # --- retention --------------------------------------------------------------------------

    def prune(self, older_than: datetime) -> int:
        """Forget inputs with a nominal time, and files noted, before ``older_than``.

        Deletes every version of those inputs, their keys, file-index rows and quarantine rows
        in one transaction. A pruned file that reappears is treated as new, so prune only what
        retention has also removed from disk.

        Returns
        -------
        int
            Number of rows removed (versions, keys, files and quarantine rows together).
        """
        cutoff = _to_text(older_than)

        def delete() -> int:
            with self._transaction() as db:
                removed = db.execute(
                    "DELETE FROM versions WHERE input_id IN "
                    "(SELECT id FROM inputs WHERE nominal < ?)",
                    (cutoff,),
                ).rowcount
                removed += db.execute("DELETE FROM inputs WHERE nominal < ?", (cutoff,)).rowcount
                removed += db.execute("DELETE FROM files WHERE noted_at < ?", (cutoff,)).rowcount
                removed += db.execute(
                    "DELETE FROM quarantine WHERE noted_at < ?", (cutoff,)
                ).rowcount
                return removed

        return self._retry(delete)

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the WAL is checkpointed into the main file by SQLite."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
