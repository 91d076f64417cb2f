"""radinfill.heap: freed heap memory goes back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from radinfill import heap

#: Blocks of 64 KiB (below glibc's mmap threshold: they come from the heap) and how many.
BLOCK_BYTES, BLOCKS = 64 * 1024, 1600


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim"), reason="glibc only"
)
def test_freed_heap_blocks_leave_the_resident_set() -> None:
    """100 MB of freed heap blocks below a live one stay resident until released."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK_BYTES) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK_BYTES)  # resident
    pin = libc.malloc(BLOCK_BYTES)  # above them: the heap's top cannot shrink on free
    for block in blocks:
        libc.free(block)
    held = _rss_mb()
    assert heap.release_free_memory()
    released = held - _rss_mb()
    libc.free(pin)
    assert released > 0.8 * BLOCK_BYTES * BLOCKS / 2**20
