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
heap, and keeps freed memory there until the free top exceeds :data:`TRIM_BYTES`. RSS rises to
the largest product's working set and stays there: bounded by the working set, not by uptime
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
from collections.abc import Callable
from functools import cache

__all__ = ["HEAP_BLOCK_BYTES", "TRIM_BYTES", "keep_freed_memory", "release_free_memory"]

#: Blocks up to this size come from the heap: the largest array of a product, the context of a
#: long outage on 1100 x 900 (24 frames, 95 MB), with room for larger grids.
HEAP_BLOCK_BYTES = 256 * 2**20
#: Free memory at the top of the heap beyond this goes back to the system on a free.
TRIM_BYTES = 512 * 2**20
#: ``mallopt`` parameters of glibc's ``malloc.h``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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


@cache
def _libc_function(name: str, argtypes: tuple[type, ...]) -> Callable[..., int] | None:
    """The C library's function ``name`` returning an int, or None where there is none."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    function = getattr(ctypes.CDLL(library), name, None)
    if function is not None:
        function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function
