"""The rolling window: recent fields per product, at the product interval, for the model's context.

The model and the advection fallback see the current field and the ones before it. The window
keeps, per product, the decoded values of the latest ``max_context`` nominal times and whether
each had failure holes. Each frame is held once: a context's frames are stacked into one
read-only array, and the window keeps views of it instead of the arrays they were copied from.
The next context is written into the same array when it fits and nothing outside the window
holds it any more (the product before is done with it): a long outage's 24 frames on
1100 x 900 are 95 MB, which would otherwise be allocated afresh beside the old stack for every
product, at the peak of the service's memory.
A step that never arrived is a gap: its frame is all NaN (no data), so the model sees a zero
validity mask for it; it is never bridged by the neighbours.

Fields missing from memory (after a restart, or when a backlog is worked newest first) are
loaded through ``locate(product, time) -> path``, which the service answers from its ledger and
from the files it has seen: the window is rebuilt from disk, never persisted separately.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from radinfill import holes, radolan
from radinfill.daemon.intake import open_input
from radinfill.model import features
from radinfill.radolan import Field, RadolanError
from radinfill.radolan.io import MAX_STREAM_BYTES

__all__ = ["Context", "Locate", "Window"]

#: ``locate(product, nominal_time)`` -> the input file of that field, or None.
Locate = Callable[[str, datetime], Path | None]


@dataclass(frozen=True)
class _Frame:
    values: np.ndarray  # float32 (rows, cols), mm per interval, NaN = no data
    outage: bool  # had failure holes


@dataclass(frozen=True)
class Context:
    """The frames for one field: float32 ``(T, rows, cols)`` oldest first, the field last.

    ``present`` says which steps arrived (False: a gap, all NaN).
    """

    frames: np.ndarray
    present: tuple[bool, ...]

    @property
    def fill(self) -> float:
        """Share of the frames that arrived (the ``window_fill`` metric)."""
        return sum(self.present) / len(self.present)


class Window:
    """Recent fields per product (see the module docstring).

    Parameters
    ----------
    window
        Frames the model sees.
    max_context
        Most frames kept per product (the window plus the frames of a long outage).
    locate
        Finds the input file of a field not in memory; None disables loading.
    """

    def __init__(self, window: int, max_context: int, locate: Locate | None = None) -> None:
        if not 1 <= window <= max_context:
            raise ValueError(f"need 1 <= window <= max_context, got {window}, {max_context}")
        self.window, self.max_context, self.locate = window, max_context, locate
        #: Frames of a context without a running outage.
        self._plain = features.context_length([False] * max_context, window)
        self._frames: dict[tuple[str, tuple[int, int]], dict[datetime, _Frame]] = {}
        #: Per product, the writable array behind the last context and the times of its frames.
        self._stacks: dict[tuple[str, tuple[int, int]], tuple[np.ndarray, list[datetime]]] = {}
        self._lock = threading.Lock()

    def put(self, field: Field, outage: bool) -> None:
        """Remember ``field`` (its values and whether it had failure holes)."""
        with self._lock:
            frames = self._frames.setdefault(_key(field), {})
            frames[field.time] = _Frame(field.values, outage)
            newest = max(frames)
            oldest = newest - (self.max_context - 1) * field.interval
            for time in [t for t in frames if t < oldest]:
                del frames[time]

    def context(self, field: Field, outage: bool) -> Context:
        """The frames for ``field``: its window, extended back over a running outage to the
        frames before it began (:func:`radinfill.model.features.context_length`), at most
        ``max_context``. Remembers ``field`` itself (``outage``: it has failure holes)."""
        self.put(field, outage)
        interval = field.interval
        steps = [field.time - k * interval for k in range(self.max_context - 1, -1, -1)]
        # The field itself is always present, even when it is older than the newest field by
        # more than max_context steps and put() has just dropped it again (a late backlog).
        found = [self._get(field, t) for t in steps[:-1]] + [_Frame(field.values, outage)]
        while found[0] is None and len(found) > 1:  # nothing before the first known frame
            found.pop(0)
        outage = [f is not None and f.outage for f in found]
        keep = features.context_length(outage, self.window)
        found = found[-keep:]
        times = steps[-len(found) :]
        frames = self._stacked(field, times, found).view()
        frames.flags.writeable = False
        self._share(field, times, found, frames)
        return Context(frames, tuple(f is not None for f in found))

    def future(self, field: Field, steps: int) -> np.ndarray | None:
        """Up to ``steps`` frames after ``field`` for an offline method (an archive backfill):
        float32 ``(K, rows, cols)``, oldest first, up to the first step not found; None when
        not even the next one is there (the live service, where the future has not come)."""
        found = []
        for k in range(1, steps + 1):
            frame = self._get(field, field.time + k * field.interval)
            if frame is None:
                break
            found.append(frame.values)
        return np.stack(found).astype(np.float32, copy=False) if found else None

    def _stacked(
        self, field: Field, times: list[datetime], found: list[_Frame | None]
    ) -> np.ndarray:
        """The frames ``found`` at ``times`` in one float32 array (a gap: all NaN), the last
        slots of an array the window keeps for the next context (module notes).

        The array is the last context's, rewritten, where its frames fit and only the window
        holds it. Else a new one: as long as the context of a field without a running outage;
        for a context that reaches back over an outage, which grows by a frame with every field
        until the outage ends, twice as long as the last context, up to ``max_context``
        frames (an array allocated afresh for every field of a long outage was 95 MB on
        1100 x 900, beside the last one).
        """
        key, count = _key(field), len(times)
        stack, before = self._stacks.get(key, (None, []))
        if (
            stack is None
            or count > len(stack)
            or count <= self._plain < len(stack)
            or self._held_elsewhere(key, stack)
        ):
            size = count
            if count > self._plain and stack is not None:  # an outage's context, growing
                size = min(max(count, 2 * len(before)), self.max_context)
            stack, before = np.empty((size, *field.values.shape), dtype=np.float32), []
        else:
            with self._lock:  # frames leaving the context let go of it before it is rewritten
                self._let_go(self._frames.get(key, {}), times, stack)
        first, first_before = len(stack) - count, len(stack) - len(before)
        slot = {time: first_before + k for k, time in enumerate(before)}
        # Every frame of the last context moves by as many slots: in that direction each slot
        # is read before it is written.
        moved = (
            first - first_before - round((times[0] - before[0]) / field.interval) if before else 0
        )
        order = range(count) if moved <= 0 else range(count - 1, -1, -1)
        for k in order:
            frame = found[k]
            if frame is None:
                stack[first + k] = np.nan
            elif frame.values.base is not stack:
                stack[first + k] = frame.values
            elif slot[times[k]] != first + k:
                stack[first + k] = stack[slot[times[k]]]
        self._stacks[key] = (stack, times)
        return stack[first:]

    def _held_elsewhere(self, key: tuple[str, tuple[int, int]], stack: np.ndarray) -> bool:
        """Whether anything but the window refers to ``stack``: a context still in use (the
        product in hand, the newest complete field's frames) must not change under it."""
        with self._lock:
            views = sum(f.values.base is stack for f in self._frames.get(key, {}).values())
        # The stacks entry, the caller's name for it, this argument, getrefcount's own argument
        # and the window's views.
        return sys.getrefcount(stack) > 4 + views

    def _share(
        self,
        field: Field,
        times: list[datetime],
        found: list[_Frame | None],
        frames: np.ndarray,
    ) -> None:
        """Keep the frames just stacked as the window's own (views of the read-only stack),
        so that each frame is held once, not once here and once in the context: on 1100 x 900
        a long outage's 24 frames are 95 MB. Views outside this context let go of theirs
        (:meth:`_let_go`), so that no earlier stack stays alive for one of its frames."""
        with self._lock:
            stored = self._frames.get(_key(field), {})
            for time, frame, view in zip(times, found, frames, strict=True):
                held = stored.get(time)
                if frame is not None and held is not None and held.values is frame.values:
                    stored[time] = _Frame(view, held.outage)
            self._let_go(stored, times, None)

    def _let_go(
        self, stored: dict[datetime, _Frame], times: list[datetime], stack: np.ndarray | None
    ) -> None:
        """Frames of ``stored`` outside ``times`` that are views of ``stack`` (None: of any
        array) stop holding it: dropped where the window can load them again from their files,
        else copied.

        A live service does not read them again: the context of an outage reaches back only to
        frames of the context before it. A backlog worked newest first leaves the newer frames
        behind; copied, they were a second window beside the stack (95 MB on 1100 x 900 over a
        long outage), and they kept the window's newest time, so that every older frame fell
        out of reach and was decoded again for every field.
        """
        for time in stored.keys() - set(times):
            base = stored[time].values.base
            if base is None or (stack is not None and base is not stack):
                continue
            if self.locate is not None:
                del stored[time]
            else:
                stored[time] = _Frame(stored[time].values.copy(), stored[time].outage)

    def products(self) -> list[tuple[str, tuple[int, int]]]:
        """The (product, shape) keys held."""
        with self._lock:
            return list(self._frames)

    def _get(self, field: Field, time: datetime) -> _Frame | None:
        with self._lock:
            frame = self._frames.get(_key(field), {}).get(time)
        if frame is not None or self.locate is None or time == field.time:
            return frame
        return self._load(field, time)

    def _load(self, field: Field, time: datetime) -> _Frame | None:
        """Decode the stored input of ``field.product`` at ``time``; None if there is none or
        it no longer reads (a gap, like a step that never arrived)."""
        path = self.locate(field.product, time)
        if path is None:
            return None
        try:
            with open_input(path) as file:  # never through a link put there since
                fields = radolan.loads(file.read(MAX_STREAM_BYTES + 1), str(path))
            other = radolan.analysis(fields, str(path))
        except (RadolanError, OSError):
            return None
        if other.values.shape != field.values.shape or other.time != time:
            return None
        frame = _Frame(other.values, bool(holes.detect(other).pixels))
        with self._lock:
            frames = self._frames.setdefault(_key(field), {})
            frames.setdefault(time, frame)
        return frame


def _key(field: Field) -> tuple[str, tuple[int, int]]:
    return field.product, field.values.shape
