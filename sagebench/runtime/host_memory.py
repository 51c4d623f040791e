"""Keep freed host memory in the process for reuse (glibc's allocator), so CPU forwards stop page-faulting.

Why: a sweep on the CPU allocates the same activation buffers (megabytes to hundreds of megabytes)
for every forward. glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at start,
raised on the fly to at most 32 MiB) with fresh ``mmap`` pages, unmapped again on ``free``, and
hands the top of its heap back to the OS once more than twice that is free there. So a forward's
buffers often go back to the OS and the next forward page-faults them in again (the kernel
zeroes every 4 KiB page). A sweep keeps more tensors alive between forwards than a bare loop
(evidence, Gram matrices, records), which pins the heap's top and makes this more frequent.
Measured (2 cores, docs/performance.md): an embedded 500-image ceiling forward with 30-45
thousand minor faults took 235-265 ms, one with none 195 ms; with DeiT-Tiny at batch 64 (MLP
activations of 39 MB, above glibc's largest dynamic threshold) the sweep's ceiling forwards took
57-228 thousand faults each.

What it does: ``mallopt(M_MMAP_THRESHOLD, 256 MiB)`` (blocks below it come from the heap, whose
freed memory is reused; it also stops the threshold from moving) and
``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` (the heap is not shrunk while less than that is free at its
top). The cost: the process keeps its peak heap instead of returning it between forwards --
the working set it needs again a moment later (measured +30-80 MB peak RSS; flat in the number of
images). Blocks over 256 MiB still come from ``mmap``. Process-wide and not undone, like PyTorch's
thread count; DataLoader worker processes inherit it. Other C libraries (musl, macOS, Windows) are
left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 2**20  # above every activation buffer of DeiT-Base at batch 64 (155 MB)
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
