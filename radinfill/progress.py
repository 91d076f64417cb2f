"""Progress lines for long jobs (training, backfill): count, rate and time left on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "clock_time"]


def clock_time(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (hours unbounded)."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class Progress:
    """A rate-limited progress line: ``PREFIX done/total (pct) rate UNIT/s eta H:MM:SS NOTE``.

    One line per update at most every ``every_s`` seconds (and always for the last item), not a
    redrawn bar: the output goes to journals and batch-job logs as often as to a terminal.
    The rate is the mean since the start, steadier than the pace of the last few items.

    Parameters
    ----------
    total
        Items to do.
    prefix, unit
        Text before the counts; the rate's unit.
    every_s
        Least seconds between two lines.
    stream
        Where the lines go (stderr).
    """

    def __init__(
        self,
        total: int,
        *,
        prefix: str,
        unit: str = "items",
        every_s: float = 2.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.prefix, self.unit, self.every_s = total, prefix, unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._began = time.perf_counter()
        self._last = float("-inf")

    @property
    def rate(self) -> float:
        """Items per second since the start."""
        return self.done / max(time.perf_counter() - self._began, 1e-9)

    def advance(self, note: str = "") -> None:
        """Count one item; print a line if due."""
        self.done += 1
        now = time.perf_counter()
        if now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        share = 100.0 * self.done / max(self.total, 1)
        self.stream.write(
            f"{self.prefix} {self.done}/{self.total} ({share:.1f}%) {rate:.2f} {self.unit}/s "
            f"eta {clock_time(eta)} {note}".rstrip()
            + "\n"
        )
        self.stream.flush()
