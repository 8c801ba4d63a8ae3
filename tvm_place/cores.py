"""The CPU cores this process may run on, as they were when tvm-place was imported.

TVM's thread pool pins a thread that launches a parallel kernel to the machine's first cores
(unless ``TVM_BIND_THREADS=0``), and threads started afterwards inherit that mask: after the first
folded constant or measured kernel, ``os.sched_getaffinity(0)`` in the main thread reads ``{0}``
on any machine. So the mask is read once, when tvm-place is imported (before it launches any
kernel); a mask widened since counts too.
"""

from __future__ import annotations

import os

_AT_IMPORT = frozenset(os.sched_getaffinity(0))


def process_cores() -> list[int]:
    """The cores this process may run on (at tvm-place's import, or now if more), sorted."""
    return sorted(_AT_IMPORT | os.sched_getaffinity(0))
