"""Running placed modules: latency mode, pipelined throughput mode, stage workers (threads,
worker processes pinned to cores, RPC servers of other hosts), measured feedback.

The entry point is :class:`tvm_place.runtime.placed.PlacedModule` (what ``tvm_place.compile``
returns); this package also offers the worker processes on their own.
"""

from .errors import (
    DeviceUnavailableError,
    StageError,
    StageTimeoutError,
    WorkerDiedError,
    WorkerError,
    WorkerUnreachableError,
)

# Loaded on first use: `python -m tvm_place.runtime.server` must not find its own module already
# imported by this package (and must set its affinity before anything loads TVM).
_LAZY = {
    "StreamStats": "stream",
    "LocalServer": "workers",
    "LocalWorker": "workers",
    "RPCWorker": "workers",
    "Worker": "workers",
    "core_groups": "workers",
    "start_local_servers": "workers",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tvm_place.runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "DeviceUnavailableError",
    "LocalServer",
    "LocalWorker",
    "RPCWorker",
    "StageError",
    "StageTimeoutError",
    "StreamStats",
    "Worker",
    "WorkerDiedError",
    "WorkerError",
    "WorkerUnreachableError",
    "core_groups",
    "start_local_servers",
]
