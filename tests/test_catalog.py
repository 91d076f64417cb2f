"""The catalog of input files: one rule (the file noted last wins), bounded state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from radinfill import stream
from radinfill.daemon import catalog as catalog_module
from radinfill.daemon.catalog import Catalog

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_the_file_noted_last_wins() -> None:
    catalog = Catalog()
    catalog.note("RY", T0, Path("first"))
    catalog.note("RY", T0, Path("correction"))
    assert catalog.get("RY", T0) == Path("correction")
    assert catalog.get("RW", T0) is None


def test_a_live_catalog_keeps_only_what_a_window_can_reach() -> None:
    catalog = Catalog(keep=timedelta(hours=2))
    for minute in range(0, 24 * 60, 5):  # a day of 5-minute products
        catalog.note("RY", T0 + timedelta(minutes=minute), Path(f"f{minute}"))
    newest = T0 + timedelta(minutes=24 * 60 - 5)
    assert len(catalog) == 2 * 12 + 1  # the newest and two hours before it
    assert catalog.get("RY", newest - timedelta(hours=2)) is not None
    assert catalog.get("RY", newest - timedelta(hours=2, minutes=5)) is None
    assert catalog.prune(newest) == 24  # retention drops what the ledger forgot
    assert len(catalog) == 1


def test_an_archive_catalog_keeps_everything() -> None:
    catalog = Catalog(keep=None)
    for day in range(30):
        catalog.note("RW", T0 + timedelta(days=day), Path(f"d{day}"))
    assert len(catalog) == 30


def test_headers_are_read_once_and_the_sniff_cache_is_bounded(tmp_path: Path, monkeypatch) -> None:
    manifest = stream.write_stream(tmp_path, grid=(64, 64), steps=3, start=T0, seed=1)
    reads: list[Path] = []
    real = catalog_module.sniff_key
    monkeypatch.setattr(catalog_module, "sniff_key", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(catalog_module, "SNIFF_CACHE", 2)
    catalog = Catalog()
    paths = [step.path for step in manifest.steps]
    for _ in range(3):
        catalog.note_file(paths[-1])
    assert reads == [paths[-1]]  # read once
    assert catalog.get("RY", manifest.steps[-1].time) == paths[-1]
    for path in paths:
        catalog.note_file(path)
    assert len(catalog._sniffed) == 2  # the oldest forgotten
    catalog.note_file(tmp_path / "garbage.bin")  # no header: remembered as such, no error
    assert catalog.get("RY", manifest.steps[0].time) == paths[0]
