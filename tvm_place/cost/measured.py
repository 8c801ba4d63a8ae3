"""Measured cost model: compile each PrimFunc alone for its target and time it on the device.

Results are cached on disk, keyed by TVM version, target, the CPU thread count and the PrimFunc's
structural hash, so a kernel is measured once per machine and thread count. A kernel's time is the
least of its repeats: another process on the machine only ever adds time, and a cached figure
outlives the load it was measured under. Devices this machine does not have (a CUDA GPU on a CPU-only
host) fall back to another model, and the source of every number is reported.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi

from ..graph import OpNode
from .analytical import AnalyticalCostModel

#: Environment variable naming the cost cache directory.
CACHE_ENV = "TVM_PLACE_CACHE_DIR"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tvm-place"


def cpu_threads() -> int:
    """The threads TVM's CPU kernels run on in this process."""
    return int(tvm.get_global_func("runtime.NumThreads")())


class CostCacheWarning(UserWarning):
    """A cost cache file that cannot be used as it is (it is ignored, and rewritten)."""


class CostCache:
    """A JSON file of facts about kernels (by default measured seconds) per (TVM version, target,
    threads, kernel hash).

    Processes sharing the file (parallel test workers, two compiles at once) merge their entries:
    each write takes an exclusive lock beside the file, re-reads it, adds its entry and replaces
    the file whole (a reader never sees half a file)."""

    def __init__(self, directory: Path | str | None = None, filename: str = "measured-costs.json"):
        self.path = Path(directory or default_cache_dir()) / filename
        self.entries: dict = self._read(warn=True)

    def _read(self, warn: bool) -> dict:
        """The entries of the file, checked against :data:`tvm_place.schemas.COST_CACHE`: a
        missing file is empty; a corrupt one (not JSON, not an object of numbers and strings,
        a directory, unreadable) is ignored, with a warning saying so, and rewritten whole by
        the next measurement. Entries that break the format are dropped alone."""
        import warnings

        from .. import schemas
        from ..errors import TvmPlaceError

        if not self.path.exists():
            return {}
        try:
            entries = schemas.read_file(self.path, "cost cache")
            if not isinstance(entries, dict):
                schemas.validate(entries, schemas.COST_CACHE, f"cost cache file {str(self.path)!r}")
            kept = {key: value for key, value in entries.items()
                    if schemas.is_valid(value, schemas.COST_CACHE_ENTRY)}
        except TvmPlaceError as err:
            if warn:
                warnings.warn(f"{err}; ignoring the cost cache (kernels are measured again and the "
                              "file rewritten; delete it to silence this)", CostCacheWarning,
                              stacklevel=3)
            return {}
        if warn and len(kept) < len(entries):
            warnings.warn(f"cost cache file {str(self.path)!r}: ignoring {len(entries) - len(kept)} "
                          "entries that are not a number >= 0 or a string (delete the file to "
                          "measure again)", CostCacheWarning, stacklevel=3)
        return kept

    @staticmethod
    def key(prim_func, target: tvm.target.Target) -> str:
        # A CPU kernel's time depends on TVM's thread pool (TVM_NUM_THREADS, a worker's pinned
        # cores); a GPU kernel's does not.
        threads = f"threads={cpu_threads()}" if target.kind.name in ("llvm", "c") else "threads=-"
        return f"{tvm.__version__}|{target}|{threads}|{tvm_ffi.structural_hash(prim_func)}"

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, value) -> None:
        """Add an entry to the file (merged with other writers'); a file that cannot be written
        (a read-only folder, a directory in its place) keeps it for this process only, with a
        warning."""
        self.put_many({key: value})

    def put_many(self, entries: dict) -> None:
        """:meth:`put` of several entries, the file written once."""
        if not entries:
            return
        try:
            self._write(entries)
        except OSError as err:
            import warnings

            self.entries.update(entries)
            if not getattr(self, "_warned", False):
                self._warned = True
                folder = self.path.parent
                why = (f"{str(folder)!r} is not a folder" if folder.exists() and not folder.is_dir()
                       else err.strerror or str(err))
                warnings.warn(f"cannot write the cost cache file {str(self.path)!r} ({why}); "
                              "measurements are kept for this run only (give --cost-cache a "
                              "writable folder)", CostCacheWarning, stacklevel=2)

    def _write(self, entries: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self.entries = self._read(warn=False)
            self.entries.update(entries)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as out:
                json.dump(self.entries, out, indent=0, sort_keys=True)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the cache from others
            os.replace(temporary, self.path)


class MeasuredCostModel:
    """Time every operator on the real device; ``fallback`` costs devices this host lacks."""

    name = "measured"

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        fallback=None,
        number: int = 3,
        repeat: int = 3,
        min_repeat_ms: int = 20,
        seed: int = 0,
    ):
        self.cache = CostCache(cache_dir)
        self.fallback = fallback or AnalyticalCostModel()
        self.number, self.repeat, self.min_repeat_ms = number, repeat, min_repeat_ms
        self.rng = np.random.default_rng(seed)

    def can_measure(self, device) -> bool:
        runtime_device = device.runtime_device()
        return device.kind == "cpu" or bool(runtime_device.exist)

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        if not self.can_measure(device):
            seconds, _ = self.fallback.op_time(prim_func, node, device)
            return seconds, self.fallback.name
        key = CostCache.key(prim_func, device.target)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, "measured (cached)"
        seconds = self.measure(prim_func, device)
        self.cache.put(key, seconds)
        return seconds, "measured"

    def measure(self, prim_func, device) -> float:
        """Seconds one run of ``prim_func`` takes on ``device`` (:func:`time_kernel`), uncached."""
        return time_kernel(prim_func, device, self.number, self.repeat, self.min_repeat_ms, self.rng)


def kernel_argument(param, rng: np.random.Generator) -> np.ndarray:
    """Data for one kernel parameter: standard normal floats; zeros for integers and booleans,
    which index any table in bounds (random integers could be out of range, and a gather in
    TVM's "fast" mode does not check: it would crash the process)."""
    shape, dtype = [int(d) for d in param.shape], np.dtype(str(param.dtype))
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return np.zeros(shape, dtype)


def time_kernel(prim_func, device, number: int = 3, repeat: int = 3, min_repeat_ms: int = 20,
                rng: np.random.Generator | None = None) -> float:
    """Seconds one run of ``prim_func`` takes on ``device`` (a resolved target device), built
    alone for its target as a stage builds it: the least of ``repeat`` timings of ``number`` runs
    each (``number`` raised until a timing lasts ``min_repeat_ms``)."""
    from tvm_place.passes.build import build_kernel

    rng = rng or np.random.default_rng(0)
    executable = build_kernel(prim_func, device.target)
    runtime_device = device.runtime_device()
    arguments = [tvm.runtime.tensor(kernel_argument(param, rng), runtime_device)
                 for param in prim_func.params]
    timer = executable.mod.time_evaluator(
        "main", runtime_device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return float(min(timer(*arguments).results))
