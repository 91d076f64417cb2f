"""Small content-keyed caches: work done once for inputs already seen.

While the service's window slides and an outage persists, consecutive fields share most of their
expensive intermediate results: the optical flow of every frame pair but the newest
(:mod:`radinfill.model.motion`), and the factorised Laplace matrix of a hole that has not
changed (:mod:`radinfill.model.baselines`). A :class:`ContentCache` keeps the last few such
results keyed by a digest of the inputs' bytes (:func:`radinfill.fingerprint.digest`), so a
corrected or re-delivered frame, or a hole that changed shape, is a new key and is computed
afresh: a cached result is a function of its inputs alone, like everything else the engine
returns.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["ContentCache", "release"]

T = TypeVar("T")


class ContentCache(Generic[T]):
    """The last ``size`` results, least recently used evicted first; thread-safe.

    With ``max_bytes`` the results' sizes (``sizeof(result)``, bytes) are bounded too: older
    entries go until the rest fit, and a result larger than the whole budget is returned
    without being kept. What a hole's factorisation costs grows faster than the hole, so a
    count alone would not bound the memory.

    Results are shared between callers: treat them as read-only.
    """

    def __init__(
        self,
        size: int,
        *,
        max_bytes: int | None = None,
        sizeof: Callable[[T], int] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cache needs room for at least one entry, got {size}")
        if (max_bytes is None) != (sizeof is None):
            raise ValueError("max_bytes and sizeof go together")
        self.size, self.max_bytes, self._sizeof = size, max_bytes, sizeof
        self._entries: OrderedDict[bytes, tuple[T, int]] = OrderedDict()
        self._lock = threading.Lock()
        _CACHES.add(self)

    def get(self, key: bytes, compute: Callable[[], T]) -> T:
        """The result stored under ``key``, or ``compute()`` stored there now.

        The computation runs outside the lock, so a slow one does not block other keys.
        """
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        result = compute()
        nbytes = self._sizeof(result) if self._sizeof is not None else 0
        budget = self.max_bytes if self.max_bytes is not None else math.inf
        if nbytes > budget:
            return result
        with self._lock:
            self._entries[key] = (result, nbytes)
            while len(self._entries) > self.size or self.nbytes > budget:
                self._entries.popitem(last=False)
        return result

    @property
    def nbytes(self) -> int:
        """Bytes the kept results hold (by ``sizeof``; 0 without one)."""
        return sum(nbytes for _, nbytes in self._entries.values())

    def clear(self) -> None:
        """Forget every result."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: Every content cache of the process, for :func:`release`.
_CACHES: weakref.WeakSet[ContentCache[Any]] = weakref.WeakSet()


def release() -> None:
    """Forget the results of every content cache: for a process that stops serving but goes on
    (``radinfill demo`` scores its outputs after its service stopped)."""
    for cache in list(_CACHES):
        cache.clear()
