"""The live service keeps the memory a product frees for the next product (glibc malloc).

A product's work allocates and frees arrays of several MB: frames of 4 MB on 1100 x 900, the
window's stack of up to 95 MB, crops, the network's activations. glibc's defaults map every
block above 128 kB (a threshold that rises to at most 32 MB) on its own and unmap it when it
is freed, and they return the free top of the heap to the system. Every product then faults
its working set in again, and on the 2-core machine of the README's benchmarks fresh pages cost
far more after the few seconds a live service waits between products: stacking 12 frames of
1100 x 900 took 51-70 ms after 3 s idle and 4 ms in memory the process kept (the network's
p95 latency fell from 0.60-0.65 to 0.46-0.48 s with it).

:func:`keep_freed_memory` therefore has blocks up to :data:`HEAP_BLOCK_BYTES` served from the
heap, and keeps freed memory there until the free top exceeds :data:`TRIM_BYTES`; a
:class:`FreeMemoryBound` the service checks after each product returns it once more than
:data:`KEEP_FREE_BYTES` of it is resident. Blocks above 64 MB that a thread other than the
main one allocates are mapped on their own whatever the settings (glibc's thread arenas grow in
heaps of 64 MB) and cannot reuse the kept memory. RSS rises to the largest product's working
set plus the bound and stays there: bounded by the working set, not by uptime
(``bench/soak.py`` checks it). The network's peak RSS in ``bench/service.py`` on 1100 x 900
(live run / with the backlog; its exported graph under onnxruntime) is 463 / 566 MB kept this
way at p50 0.35 s, 484 / 578 MB with the defaults at 0.40 s, and 457 / 513 MB trimming the
heap after every product at 0.51 s; one arena for all threads instead of glibc's several made
it 60 MB higher (measured with torch). :func:`release_free_memory`
returns what is free when a service stops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = [
    "HEAP_BLOCK_BYTES",
    "KEEP_FREE_BYTES",
    "TRIM_BYTES",
    "FreeMemoryBound",
    "keep_freed_memory",
    "release_free_memory",
]

#: Blocks up to this size come from the heap: the largest array of a product, the context of a
#: long outage on 1100 x 900 (24 frames, 95 MB), with room for larger grids.
HEAP_BLOCK_BYTES = 256 * 2**20
#: Free memory at the top of the heap beyond this goes back to the system on a free.
TRIM_BYTES = 512 * 2**20
#: Free memory kept for the next product: beyond it a finished product's free pages go back to
#: the system (:class:`FreeMemoryBound`). About the free memory of a product on 1100 x 900 with
#: the shipped network; a long outage frees more, and kept, it would sit beside the next
#: window stack, which the worker thread cannot take from it (see the module notes).
KEEP_FREE_BYTES = 128 * 2**20
#: ``mallopt`` parameters of glibc's ``malloc.h``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and later): byte counts of all arenas."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def keep_freed_memory() -> bool:
    """Set this process's malloc to serve large blocks from the heap and keep them there when
    freed (module notes).

    Returns
    -------
    bool
        Whether the C library took every setting; False where it has no ``mallopt`` (musl,
        macOS), where nothing is changed.
    """
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES), (_M_TRIM_THRESHOLD, TRIM_BYTES))
    return all([mallopt(parameter, value) == 1 for parameter, value in settings])


def release_free_memory() -> bool:
    """Return the free heap pages of every malloc arena to the system (glibc's
    ``malloc_trim(0)``).

    Returns
    -------
    bool
        Whether any memory was released; False also where the C library has no
        ``malloc_trim`` (musl, macOS), where nothing is done.
    """
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,))
    return bool(trim(0)) if trim is not None else False


class FreeMemoryBound:
    """Keeps the free memory that malloc holds resident within ``keep_bytes`` of the least
    seen: call :meth:`check` after each product.

    malloc's own count of free bytes (``mallinfo2().fordblks``) keeps pages that a release
    returned to the system, so it cannot say what is resident. The resident free memory is
    measured instead as the slack: the resident set less what malloc hands out (arenas and
    mmapped blocks). The rest of the slack (libraries, the interpreter's own small-object
    arenas) stays about constant while the service works, so its growth over its least value
    is free memory kept resident.
    """

    def __init__(self, keep_bytes: int = KEEP_FREE_BYTES) -> None:
        self.keep_bytes = keep_bytes
        self._least: int | None = None

    def check(self) -> bool:
        """Release the free memory (:func:`release_free_memory`) if the slack grew by more than
        ``keep_bytes`` over its least value; False where glibc's counts are missing.

        Returns
        -------
        bool
            Whether memory was released.
        """
        slack = _slack()
        if slack is None:
            return False
        if self._least is None or slack < self._least:
            self._least = slack
        if slack - self._least <= self.keep_bytes:
            return False
        released = release_free_memory()
        self._least = min(self._least, _slack() or self._least)
        return released


def _slack() -> int | None:
    """Resident bytes that malloc does not hand out (see :class:`FreeMemoryBound`), or None
    where the C library has no ``mallinfo2`` or there is no ``/proc``."""
    info = _libc_function("mallinfo2", (), _MallInfo2)
    if info is None:
        return None
    try:
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
    counts = info()
    return resident - int(counts.uordblks) - int(counts.hblkhd)


@cache
def _libc_function(
    name: str, argtypes: tuple[type, ...], restype: type = ctypes.c_int
) -> Callable[..., Any] | None:
    """The C library's function ``name``, or None where there is none."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    function = getattr(ctypes.CDLL(library), name, None)
    if function is not None:
        function.argtypes, function.restype = list(argtypes), restype
    return function
