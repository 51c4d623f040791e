"""Keep freed host memory in the process for reuse (glibc's allocator), so CPU forwards stop page-faulting.

Why: a sweep on the CPU allocates the same activation buffers (megabytes each) for every forward.
glibc's ``malloc`` serves blocks above its mmap threshold with fresh ``mmap`` pages and hands the
top of its heap back to the OS once more than the trim threshold is free, so many of those buffers
go back to the OS after each forward and the next forward page-faults them in again (the kernel
zeroes every 4 KiB page). Measured on the embedded benchmark (500-image batches, 2 cores): a
ceiling forward that took 30-45 thousand minor page faults ran 235-265 ms, one with none 195 ms;
the sweep's ceiling phase went from 0.94 s to 0.81 s per 2000 images with the settings below.

What it does: ``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` (glibc's largest; blocks below it come from the
heap, whose freed memory is reused) and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` (the heap is not
shrunk while less than that is free). The cost is that the process keeps its peak heap instead
of returning it between forwards -- the working set it needs again a moment later. Blocks over
32 MiB (large models at large batches) still come from ``mmap``; their fault cost is small next
to the compute that fills them. Process-wide and not undone: it is a property of the process,
like PyTorch's thread count. Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30

_state: str | None = None


def keep_freed_memory() -> str:
    """Tune glibc's ``malloc`` as described above, once per process.

    Returns ``"applied"``, or ``"unavailable"`` where the C library is not glibc or refuses the
    settings; the outcome is reported in ``results.json`` (``timing.host_memory``).
    """
    global _state
    if _state is not None:
        return _state
    _state = "unavailable"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _state
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; both must take, or the allocator is left half-tuned but harmless
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        _state = "applied"
    return _state


def host_memory_state() -> str:
    """``"applied"``, ``"unavailable"``, or ``"default"`` when :func:`keep_freed_memory` was not called."""
    return _state or "default"
