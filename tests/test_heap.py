"""radinfill.heap: the service keeps freed memory for reuse; a stopped one returns it."""

from __future__ import annotations

import ctypes
import ctypes.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from radinfill import heap

#: Blocks of 64 KiB (below glibc's mmap threshold: they come from the heap) and how many.
BLOCK_BYTES, BLOCKS = 64 * 1024, 1600


def _rss_mb() -> float:
    """This process's resident set (MB), counted page by page: ``VmRSS`` and ``statm`` read
    the kernel's per-CPU counters, which lag by up to tens of MB on a machine with many CPUs."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Rss in /proc/self/smaps_rollup")


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


#: A child process that frees a 64 MB block and prints how far RSS fell (MB), then allocates
#: and fills another and prints how far RSS rose; with ``keep`` after keep_freed_memory().
_REUSE = f"""
import sys
from pathlib import Path
import numpy as np
from radinfill import heap

{inspect.getsource(_rss_mb)}
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
block = np.ones(64 * 2**20 // 8)
held = _rss_mb()
del block
fell = held - _rss_mb()
again = _rss_mb()
block = np.ones(64 * 2**20 // 8)
print(fell, _rss_mb() - again)
"""


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt"), reason="glibc only"
)
def test_kept_memory_stays_for_the_next_block_where_the_defaults_unmap_it() -> None:
    """In child processes (the setting is process-wide): with glibc's defaults a freed 64 MB
    block leaves the resident set and the next one is faulted in afresh; after
    keep_freed_memory() it stays and the next block reuses it."""
    moves = {}
    for mode in ("defaults", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, check=True
        )
        moves[mode] = [float(mb) for mb in done.stdout.split()]
    assert [mb > 56 for mb in moves["defaults"]] == [True, True]
    assert [mb < 8 for mb in moves["keep"]] == [True, True]


#: A child process that keeps freed memory, frees a 32 MB block, then a 160 MB one, and after
#: each asks a FreeMemoryBound of 64 MB; prints whether it released and how far RSS fell (MB).
_BOUND = f"""
import numpy as np
from pathlib import Path
from radinfill import heap

{inspect.getsource(_rss_mb)}
assert heap.keep_freed_memory()
bound = heap.FreeMemoryBound(keep_bytes=64 * 2**20)
bound.check()
for mb in (32, 160):
    block = np.ones(mb * 2**20 // 8)
    del block
    held = _rss_mb()
    released = bound.check()
    print(released, held - _rss_mb())
"""


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"), reason="glibc 2.33+"
)
def test_free_memory_beyond_the_bound_leaves_the_resident_set() -> None:
    """A freed 32 MB block stays for reuse under a 64 MB bound; a freed 160 MB one goes."""
    done = subprocess.run(
        [sys.executable, "-c", _BOUND], capture_output=True, text=True, check=True
    )
    (small, small_fell), (large, large_fell) = [line.split() for line in done.stdout.splitlines()]
    assert (small, large) == ("False", "True")
    assert float(small_fell) < 8
    assert float(large_fell) > 140
