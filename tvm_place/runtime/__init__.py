"""Running placed modules: one dataflow executor for latency and pipelined throughput, stage
workers (threads of this process, or Ray actors on this host or a Ray cluster), links measured
between them, measured feedback.

The entry point is :class:`tvm_place.runtime.placed.PlacedModule` (what ``tvm_place.compile``
returns).
"""

from .errors import (
    DeviceUnavailableError,
    RunInterrupted,
    StageError,
    StageTimeoutError,
    WorkerDiedError,
    WorkerError,
    WorkerUnreachableError,
)

from ..lazy import lazy_getattr

# Loaded on first use (tvm_place.lazy): a Ray actor imports this package and must set its
# affinity and thread count before anything loads TVM.
_LAZY = {
    "StreamStats": "stats",
    "LocalWorker": "workers",
    "RayWorker": "ray_engine",
    "Worker": "workers",
    "core_groups": "workers",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "DeviceUnavailableError",
    "LocalWorker",
    "RayWorker",
    "RunInterrupted",
    "StageError",
    "StageTimeoutError",
    "StreamStats",
    "Worker",
    "WorkerDiedError",
    "WorkerError",
    "WorkerUnreachableError",
    "core_groups",
]
