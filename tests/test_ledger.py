"""The service ledger: verdicts, versions, restart safety, file index, retention, threads."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from radinfill.daemon import ledger as ledger_module
from radinfill.daemon.ledger import Entry, Ledger, LedgerError, Verdict

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HASH_A, HASH_B, HASH_C = "a" * 64, "b" * 64, "c" * 64


class Clock:
    """A settable clock, so that "now" (and hence the horizon) is under the test's control."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "state" / "ledger.sqlite", clock=clock) as opened:
        yield opened


def _record(ledger: Ledger, nominal: datetime, sha: str, product: str = "RY") -> Entry:
    stamp = nominal.strftime("%y%m%d%H%M")
    return ledger.record(
        product,
        nominal,
        sha,
        f"/in/raa01-{product.lower()}_10000-{stamp}-dwd---bin",
        [f"/out/{product}-{stamp}.nc", f"/out/{product}-{stamp}.bin"],
        method="model",
        hole_pixels=1234,
    )


# --- verdicts and versions -----------------------------------------------------------------------


def test_verdicts_follow_key_hash_and_horizon(ledger: Ledger, clock: Clock) -> None:
    nominal = NOW - timedelta(minutes=10)
    assert ledger.classify("RY", nominal, HASH_A) is Verdict.NEW
    _record(ledger, nominal, HASH_A)
    assert ledger.classify("RY", nominal, HASH_A) is Verdict.DUPLICATE
    assert ledger.classify("RY", nominal, HASH_B) is Verdict.CORRECTION
    # the key is per product: the same time of another product is still new
    assert ledger.classify("RW", nominal, HASH_A) is Verdict.NEW
    # once the product has fallen behind the 2 h horizon, new content is late; a re-delivery
    # is still recognised as a duplicate
    clock.now = nominal + timedelta(hours=2, seconds=1)
    assert ledger.classify("RY", nominal, HASH_B) is Verdict.LATE
    assert ledger.classify("RY", nominal, HASH_A) is Verdict.DUPLICATE
    clock.now = nominal + timedelta(hours=1, minutes=59)
    assert ledger.classify("RY", nominal, HASH_B) is Verdict.CORRECTION


def test_first_sight_of_an_old_key_is_new_not_late(ledger: Ledger) -> None:
    assert ledger.classify("RY", NOW - timedelta(days=30), HASH_A) is Verdict.NEW


def test_horizon_is_configurable(tmp_path: Path, clock: Clock) -> None:
    nominal = NOW - timedelta(minutes=30)
    with Ledger(tmp_path / "l.sqlite", horizon=timedelta(minutes=15), clock=clock) as short:
        _record(short, nominal, HASH_A)
        assert short.classify("RY", nominal, HASH_B) is Verdict.LATE


def test_corrections_get_new_versions_and_history_is_kept(ledger: Ledger, clock: Clock) -> None:
    nominal = NOW - timedelta(minutes=5)
    first = _record(ledger, nominal, HASH_A)
    clock.now = NOW + timedelta(minutes=3)
    second = _record(ledger, nominal, HASH_B)
    clock.now = NOW + timedelta(minutes=7)
    third = _record(ledger, nominal, HASH_C)
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert ledger.current("RY", nominal) == third
    assert ledger.history("RY", nominal) == [first, second, third]
    assert [e.processed_at for e in ledger.history("RY", nominal)] == [
        NOW,
        NOW + timedelta(minutes=3),
        NOW + timedelta(minutes=7),
    ]
    # an old content re-delivered after a correction must not roll the product back
    assert ledger.classify("RY", nominal, HASH_A) is Verdict.DUPLICATE


def test_entry_round_trips_every_field(ledger: Ledger) -> None:
    nominal = datetime(2025, 6, 1, 11, 50, tzinfo=UTC)
    entry = ledger.record(
        "RW",
        nominal,
        HASH_A,
        "/in/x",
        ("/out/a.nc",),
        method="advection",
        hole_pixels=0,
    )
    assert entry == Entry("RW", nominal, HASH_A, 1, "/in/x", ("/out/a.nc",), "advection", 0, NOW)
    assert ledger.current("RW", nominal) == entry
    assert ledger.current("RW", nominal + timedelta(minutes=5)) is None
    assert ledger.history("RW", nominal + timedelta(minutes=5)) == []


def test_times_in_other_zones_name_the_same_key(ledger: Ledger) -> None:
    cest = datetime(2025, 6, 1, 14, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
    _record(ledger, cest, HASH_A)
    assert ledger.classify("RY", datetime(2025, 6, 1, 12, 0, tzinfo=UTC), HASH_A) is (
        Verdict.DUPLICATE
    )
    (entry,) = ledger.recent("RY", 1)
    assert entry.nominal == NOW
    assert entry.nominal.tzinfo is UTC


def test_naive_times_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.classify("RY", datetime(2025, 6, 1, 12, 0), HASH_A)


def test_recent_and_products(ledger: Ledger) -> None:
    times = [NOW - timedelta(minutes=5 * k) for k in range(6)]
    for nominal in reversed(times):
        _record(ledger, nominal, HASH_A)
    _record(ledger, times[1], HASH_B)  # correction of the second newest
    _record(ledger, NOW, HASH_C, product="RW")
    recent = ledger.recent("RY", 3)
    assert [e.nominal for e in recent] == times[:3]
    assert [e.version for e in recent] == [1, 2, 1]
    assert recent[1].sha256 == HASH_B
    assert len(ledger.recent("RY", 100)) == 6
    assert ledger.products() == ["RW", "RY"]


# --- storage -------------------------------------------------------------------------------------


def test_state_survives_close_and_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "deep" / "state" / "ledger.sqlite"
    with Ledger(path, clock=clock) as first:
        entry = _record(first, NOW, HASH_A)
        first.note_file("/in/f", 100, 123, "done")
        first.quarantine("/in/bad", HASH_C, "truncated")
    with Ledger(path, clock=clock) as again:
        assert again.current("RY", NOW) == entry
        assert again.classify("RY", NOW, HASH_A) is Verdict.DUPLICATE
        assert again.record("RY", NOW, HASH_B, "/in/g", [], method="m", hole_pixels=1).version == 2
        assert again.known_file("/in/f", 100, 123) == "done"
        assert again.quarantined() == [("/in/bad", HASH_C, "truncated")]


def test_database_is_in_wal_mode(ledger: Ledger) -> None:
    with sqlite3.connect(ledger.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(LedgerError, match=r"ledger\.sqlite.*schema version 99 is newer"):
        Ledger(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(LedgerError, match=r"ledger\.sqlite: cannot open"):
        Ledger(path)


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from radinfill.daemon.ledger import Ledger

    ledger = Ledger(Path(sys.argv[1]))
    start = datetime(2025, 6, 1, tzinfo=UTC)
    for i in range(1_000_000):
        nominal = start + timedelta(minutes=5 * (i // 2))  # every key gets a correction
        ledger.record("RY", nominal, f"{i:064x}", f"/in/{i}", [f"/out/{i}.nc"],
                      method="model", hole_pixels=i)
        print(i, flush=True)
    """
)


def test_sigkill_mid_writes_keeps_every_committed_entry(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        committed = -1
        deadline = time.monotonic() + 60
        while committed < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            committed = int(line)
        os.kill(child.pid, signal.SIGKILL)
        # lines already in the pipe were committed before the kill, too
        committed = max([committed, *(int(line) for line in child.stdout.read().split())])
    assert child.returncode == -signal.SIGKILL
    assert committed >= 150, "writer did not get going"

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    start = datetime(2025, 6, 1, tzinfo=UTC)
    with Ledger(path) as reopened:
        rows = [
            entry
            for k in range(committed // 2 + 2)
            for entry in reopened.history("RY", start + timedelta(minutes=5 * k))
        ]
        # everything acknowledged is there, plus at most the one in flight at the kill
        assert committed + 1 <= len(rows) <= committed + 2
        for i, entry in enumerate(rows):
            assert entry.sha256 == f"{i:064x}"
            assert entry.version == i % 2 + 1
            assert entry.outputs == (f"/out/{i}.nc",)
            assert entry.hole_pixels == i
        # the restarted service carries on with the next version
        last = rows[-1]
        assert reopened.classify("RY", last.nominal, last.sha256) is Verdict.DUPLICATE


def test_retries_while_another_process_holds_the_write_lock(ledger: Ledger) -> None:
    blocker = sqlite3.connect(ledger.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    # held longer than SQLite's own busy wait, so only the retry gets the write through
    release = threading.Timer(ledger_module.BUSY_TIMEOUT_S * 1.5, blocker.execute, ("COMMIT",))
    release.start()
    try:
        assert _record(ledger, NOW, HASH_A).version == 1
    finally:
        release.join()
        blocker.close()
    assert ledger.current("RY", NOW) is not None


def test_a_lock_that_never_goes_away_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "BUSY_TIMEOUT_S", 0.01)
    with Ledger(tmp_path / "l.sqlite") as ledger:
        blocker = sqlite3.connect(ledger.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                _record(ledger, NOW, HASH_A)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert ledger.current("RY", NOW) is None


# --- file index, quarantine, retention -----------------------------------------------------------


def test_file_index_matches_path_size_and_mtime(ledger: Ledger) -> None:
    assert ledger.known_file("/in/a", 10, 1_000) is None
    ledger.note_file("/in/a", 10, 1_000, "done")
    assert ledger.known_file("/in/a", 10, 1_000) == "done"
    assert ledger.known_file("/in/a", 11, 1_000) is None  # rewritten: other size
    assert ledger.known_file("/in/a", 10, 1_001) is None  # rewritten: other mtime
    assert ledger.known_file("/in/b", 10, 1_000) is None
    ledger.note_file("/in/a", 12, 2_000, "quarantined")
    assert ledger.known_file("/in/a", 10, 1_000) is None
    assert ledger.known_file("/in/a", 12, 2_000) == "quarantined"


def test_quarantine_list(ledger: Ledger, clock: Clock) -> None:
    ledger.quarantine("/in/short", HASH_A, "truncated")
    clock.now = NOW + timedelta(minutes=1)
    ledger.quarantine("/in/odd", HASH_B, "wrong_grid")
    ledger.quarantine("/in/short", HASH_A, "truncated")  # seen again: one row
    assert ledger.quarantined() == [
        ("/in/odd", HASH_B, "wrong_grid"),
        ("/in/short", HASH_A, "truncated"),
    ]


def test_prune_removes_old_rows_only(ledger: Ledger, clock: Clock) -> None:
    old, young = NOW - timedelta(days=3), NOW - timedelta(hours=1)
    clock.now = old
    _record(ledger, old, HASH_A)
    _record(ledger, old, HASH_B)  # 2 versions + 1 key
    ledger.note_file("/in/old", 1, 1, "done")
    ledger.quarantine("/in/old-bad", HASH_C, "corrupt")
    clock.now = NOW
    _record(ledger, young, HASH_A)
    ledger.note_file("/in/young", 1, 1, "done")

    assert ledger.prune(NOW - timedelta(days=1)) == 2 + 1 + 1 + 1
    assert ledger.history("RY", old) == []
    assert ledger.classify("RY", old, HASH_A) is Verdict.NEW
    assert ledger.known_file("/in/old", 1, 1) is None
    assert ledger.quarantined() == []
    assert ledger.current("RY", young) is not None
    assert ledger.known_file("/in/young", 1, 1) == "done"
    assert ledger.prune(NOW - timedelta(days=1)) == 0


def test_reconcile_thread_reads_while_the_worker_writes(ledger: Ledger) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    lookups = 0

    def reconcile() -> None:
        nonlocal lookups
        try:
            while not stop.is_set():
                ledger.known_file(f"/in/{lookups % 50}", 1, 1)
                lookups += 1
        except BaseException as error:
            errors.append(error)

    reader = threading.Thread(target=reconcile)
    reader.start()
    try:
        for i in range(100):
            _record(ledger, NOW + timedelta(minutes=5 * i), HASH_A)
            ledger.note_file(f"/in/{i % 50}", 1, 1, "done")
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert lookups > 0
    assert len(ledger.recent("RY", 1000)) == 100
    assert ledger.known_file("/in/7", 1, 1) == "done"
