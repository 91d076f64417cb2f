"""Where each field's input file is: the window's context among inputs not processed yet.

A backlog is worked newest first and a burst arrives out of order, so the window often needs a
field before the pipeline has handled it. The :class:`Catalog` maps (product, nominal time) to
the input file of that field, with one rule: the file noted last for a key wins (a correction
replaces what it corrects). Fields the catalog no longer holds are found through the ledger.

Bounded: a live service notes every file it sees for as long as it runs, so the catalog keeps
only the keys within ``keep`` of the newest nominal time it was told of, and remembers the
headers of at most :data:`SNIFF_CACHE` files; ``prune`` also drops what the ledger's retention
removed. An archive backfill (``keep=None``) holds its whole plan, which it needs.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path

from radinfill.daemon.intake import sniff_key

__all__ = ["KEEP", "SNIFF_CACHE", "Catalog"]

#: How far back (nominal time) a live catalog reaches: the longest window context, 24 frames
#: of an hourly product, with a day to spare for a backlog.
KEEP = timedelta(days=2)
#: Files whose header (or its absence) is remembered, so a queue scanned on every product is
#: not read again; the oldest are forgotten first.
SNIFF_CACHE = 4096


class Catalog:
    """(product, nominal time) -> input path; see the module docstring.

    Parameters
    ----------
    keep
        How far before the newest nominal time keys are kept; None keeps everything.
    """

    def __init__(self, keep: timedelta | None = KEEP) -> None:
        self.keep = keep
        self._paths: dict[tuple[str, datetime], Path] = {}
        self._sniffed: OrderedDict[Path, tuple[str, datetime] | None] = OrderedDict()
        self._newest: datetime | None = None

    def __len__(self) -> int:
        return len(self._paths)

    def note(self, product: str, nominal: datetime, path: Path) -> None:
        """``path`` holds the field of ``product`` at ``nominal`` (replacing an earlier file)."""
        self._paths[(product, nominal)] = path
        if self._newest is None or nominal > self._newest:
            self._newest = nominal
            if self.keep is not None:
                self.prune(nominal - self.keep)

    def note_file(self, path: Path) -> None:
        """Note ``path`` by its header (plain, gzip or bzip2 products; others are noted when
        decoded). Each file's header is read once while it stays in the sniff cache."""
        if path in self._sniffed:
            self._sniffed.move_to_end(path)
            return
        key = self._sniffed[path] = sniff_key(path)
        if len(self._sniffed) > SNIFF_CACHE:
            self._sniffed.popitem(last=False)
        if key is not None:
            self.note(*key, path)

    def get(self, product: str, nominal: datetime) -> Path | None:
        """The file of that field, or None."""
        return self._paths.get((product, nominal))

    def prune(self, older_than: datetime) -> int:
        """Forget keys before ``older_than``; returns how many."""
        stale = [key for key in self._paths if key[1] < older_than]
        for key in stale:
            del self._paths[key]
        return len(stale)
