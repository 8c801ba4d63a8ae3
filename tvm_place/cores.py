"""The CPU cores this process may run on, as they were when tvm-place was imported.

TVM's thread pool pins a thread that launches a parallel kernel to the machine's first cores
(unless ``TVM_BIND_THREADS=0``), and threads started afterwards inherit that mask: after the first
folded constant or measured kernel, ``os.sched_getaffinity(0)`` in the main thread reads ``{0}``
on any machine. So the mask is read once, when tvm-place is imported (before it launches any
kernel); a mask widened since counts too.
"""

from __future__ import annotations

import contextlib
import os

_AT_IMPORT = frozenset(os.sched_getaffinity(0))


def process_cores() -> list[int]:
    """The cores this process may run on (at tvm-place's import, or now if more), sorted."""
    return sorted(_AT_IMPORT | os.sched_getaffinity(0))


def threads(most: int) -> int:
    """How many threads a solver may run at once: the cores the calling thread may run on, at
    most ``most`` (and at least one)."""
    return max(1, min(most, len(os.sched_getaffinity(0))))


@contextlib.contextmanager
def all_cores():
    """The calling thread on every core of this process for the block, its mask put back after.
    Threads and processes started in the block inherit the wide mask, not the one core TVM
    narrowed the thread to (Ray started after a kernel ran ran its driver threads, raylet,
    object store and GCS all on core 0, where the cpu:0 device computes)."""
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, process_cores())
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)
