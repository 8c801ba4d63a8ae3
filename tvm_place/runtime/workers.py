"""Stage workers: where a placement device's stages run, and how values reach them.

Two engines, one interface (:class:`Worker`), driven alike by the executor
(:mod:`tvm_place.runtime.executor`):

- :class:`LocalWorker` (``"threads"``): the device's stages run in this process, called from the
  executor's thread for that device (TVM releases the GIL while a stage computes, so devices
  overlap). A copy is ``Tensor.copyto`` onto the receiver's device.
- :class:`tvm_place.runtime.ray_engine.RayWorker` (``"ray"``): one Ray actor per device, in its
  own process on this host (pinned to its cores) or on another node of a Ray cluster. A copy goes
  actor to actor through Ray's object store; only the model's inputs and outputs touch the driver.

A worker keeps the values each input made on its device (``values[input index][name]``), so a
stage's call names local values and carries only the payloads that crossed from elsewhere.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..cores import process_cores
from .errors import DeviceUnavailableError

__all__ = ["Kept", "LocalWorker", "bind_kernel_threads", "in_place_tensor", "ShapeValues", "StageCall", "StageResult", "Worker", "core_groups", "nbytes", "runtime_device", "stage_functions",
           "to_numpy"]


def runtime_device(kind: str, index: int):
    import tvm

    return tvm.cpu(index) if kind == "cpu" else tvm.cuda(index)


def nbytes(value) -> int:
    """Bytes of a NumPy array or a TVM tensor, or of every one in a (nested) tuple of them."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "shape"):
        return int(np.prod([int(d) for d in value.shape], dtype=np.int64)) * np.dtype(str(value.dtype)).itemsize
    return sum(nbytes(item) for item in value)


def to_numpy(value, copy: bool = True):
    """A tensor as a NumPy array; a (nested) tuple of them, a tuple of arrays. ``copy=False``:
    a view of a host tensor's memory (DLPack) where it has one, for a caller that copies it
    anyway (serialisation)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):
        if not copy and value.device.dlpack_device_type() == 1:  # kDLCPU
            return np.from_dlpack(value)
        return value.numpy()
    return tuple(to_numpy(item, copy) for item in value)


#: The alignment TVM's kernels assume of every buffer they are given (``kAllocAlignment``).
TVM_ALIGNMENT = 64


def in_place_tensor(array):
    """A host array as a CPU tensor over the same memory (no copy), or None where TVM's kernels
    cannot read it in place (not C-contiguous, or not aligned to :data:`TVM_ALIGNMENT` bytes).
    Read-only arrays too (Ray hands over the object store's memory read-only; DLPack 1.0
    carries the flag): a stage reads its parameters, it does not write them (a module that
    updated a parameter in place, ``R.call_tir_inplace``, would write Ray's copy of the value).
    The tensor keeps the array alive."""
    import tvm_ffi

    if (not isinstance(array, np.ndarray) or not array.flags.c_contiguous
            or array.ctypes.data % TVM_ALIGNMENT or array.dtype.hasobject):
        return None
    try:
        return tvm_ffi.from_dlpack(array.__dlpack__(max_version=(1, 0)),
                                   require_alignment=TVM_ALIGNMENT, require_contiguous=True)
    except (BufferError, TypeError, ValueError, RuntimeError):
        return None  # a dtype DLPack does not carry: copied instead


class Kept(str):
    """A stage argument the worker keeps: a bound model input (``PlacedModule.bind``), sent to
    the worker once and held on its device; the string is the input's name."""


class ShapeValues(tuple):
    """A stage's shape argument: the sizes of the symbolic dimensions it lists, in this run
    (read off the model's inputs by the executor; a ``ShapeTuple`` on the worker)."""


@dataclass
class StageCall:
    """One stage on one input, as the executor asks a worker to run it.

    ``args``: per stage parameter ``(name, payload)``: ``payload`` None for a value this worker
    made for the same input, else what crossed (a model input, or another worker's export);
    ``outputs``: the names of the stage's results, in order; ``exports``: outputs other devices read (return a payload for each); ``fetches``: model
    outputs (return them as NumPy); ``frees``: values of this input no later stage here reads.
    """

    key: int
    stage: str
    args: list[tuple[str, Any]]
    outputs: list[str]
    exports: list[str] = field(default_factory=list)
    fetches: list[str] = field(default_factory=list)
    frees: list[str] = field(default_factory=list)


@dataclass
class StageResult:
    """What a stage call returns: payloads and model outputs (NumPy from another process, tensors
    from this one), and the seconds each part took on the worker (``imports``: receiving each crossed argument; ``exports``: sending each export)."""

    payloads: dict[str, Any]
    outputs: dict[str, np.ndarray]
    compute: float
    imports: dict[str, float]
    exports: dict[str, float]
    fetches: dict[str, float]
    sizes: dict[str, int] = field(default_factory=dict)
    #: When the call began and ended on the worker (``time.time()``: one clock for every process
    #: of a host, so the driver places the call on its own timeline; NTP-close across hosts).
    span: tuple[float, float] = (0.0, 0.0)


def run_stage(function, values: dict, call: StageCall, import_value, export_value, fetch_value,
              kept: dict | None = None) -> StageResult:
    """The body of a stage call, the same on every worker: receive, compute, send, fetch, free.

    ``function``: the stage, a function of its device's loaded executable;
    ``values``: this input's values on the worker (read and updated); ``kept``: the bound inputs
    the worker holds, by name (a :class:`Kept` argument reads one); ``import_value(payload)``
    turns a payload into a tensor on the worker's device; ``export_value(tensor)`` makes a payload;
    ``fetch_value(tensor)`` hands a model output to the driver.
    """
    clock = time.perf_counter
    began = time.time()
    args, imports, sizes = [], {}, {}
    for name, payload in call.args:
        if payload is None:
            args.append(values[name])
            continue
        if isinstance(payload, Kept):
            args.append(kept[str(payload)])
            continue
        if isinstance(payload, ShapeValues):
            import tvm

            args.append(tvm.runtime.ShapeTuple(list(payload)))
            continue
        start = clock()
        tensor = import_value(payload)
        imports[name] = clock() - start
        sizes[name] = nbytes(tensor)
        values[name] = tensor
        args.append(tensor)
    start = clock()
    result = function(*args)
    compute = clock() - start
    results = [result] if hasattr(result, "numpy") else list(result)
    if len(results) != len(call.outputs):
        raise RuntimeError(
            f"stage {call.stage!r} returned {len(results)} values, the plan expects {len(call.outputs)}"
        )
    values.update(zip(call.outputs, results))
    payloads, exports, outputs, fetches = {}, {}, {}, {}
    for name in call.exports:
        start = clock()
        payloads[name] = export_value(values[name])
        exports[name] = clock() - start
        sizes[name] = nbytes(values[name])
    for name in call.fetches:
        start = clock()
        outputs[name] = fetch_value(values[name])
        fetches[name] = clock() - start
    for name in call.frees:
        values.pop(name, None)
    return StageResult(payloads, outputs, compute, imports, exports, fetches, sizes,
                       (began, time.time()))


class Worker:
    """What the executor needs from a worker.

    ``submit(call)`` starts a stage call and returns a handle; ``result(handle, timeout)`` is its
    :class:`StageResult` once done (None while it runs; raises what the stage raised).
    """

    #: True when the worker runs in another process (values cross by serialisation).
    remote = False
    #: True when the worker queues calls and runs them in submission order, each once its
    #: inputs exist: ``submit`` then returns at once, and ``handle.payloads`` already names the
    #: call's exports (references to values still to be made).
    eager = False

    def __init__(self, label: str):
        self.label = label
        #: Why the worker can no longer be used (it died or was abandoned), or None.
        self.broken: str | None = None

    def load(self, module: str, executable, library: str | None, stages: Sequence[str]) -> None:
        """Load ``executable`` (named ``module``; ``library``: its shared library on disk, for
        workers in other processes) and take ``stages``, its functions, as the stages this worker
        runs. Loading a module already loaded only adds the stages."""
        raise NotImplementedError

    def submit(self, call: StageCall):
        raise NotImplementedError

    def result(self, handle, timeout: float) -> StageResult | None:
        raise NotImplementedError

    def host_payload(self, array: np.ndarray):
        """A model input as this engine carries it to a stage (made once per input)."""
        return array

    def keep(self, name: str, array: np.ndarray) -> None:
        """Hold the bound input ``name`` on this worker's device, for every later call."""
        raise NotImplementedError

    def drop(self, keys: Sequence[int]) -> None:
        """Forget every value of these inputs."""

    def relay(self, size: int, payload):
        """Receive ``payload`` (another worker's relay export, or None) as a stage's argument
        would, then export a tensor of ``size`` bytes as a stage's export would: the link probe.
        Returns ``(handle, exported payload)``; :meth:`relay_times` gives the handle's
        ``(send seconds, receive seconds)`` as timed on the worker."""
        raise NotImplementedError

    def relay_times(self, handle, timeout: float) -> tuple[float, float]:
        raise NotImplementedError

    def alive(self) -> bool | None:
        """False when the worker is known dead, True when known alive, None when unknown."""
        return None if self.broken is None else False

    def died(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by a call on this worker) means the worker is gone."""
        return False

    def propagated(self, error: BaseException) -> bool:
        """Whether ``error`` is another call's failure that this call only inherited (it waited
        for that call's output); the failing call's own worker reports it."""
        return False

    def abandon(self, reason: str) -> None:
        """Give up on the worker (a call on it hangs): never use it again."""
        self.broken = reason

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


#: TVM's ``AffinityMode`` values kSpecifyOneCorePerThread and kSpecifyThreadShareAllCore
#: (src/runtime/threading_backend.h).
_ONE_CORE_PER_THREAD, _SHARE_ALL_CORES = -2, -3
_binding = threading.Lock()


def bind_kernel_threads(cores: Sequence[int], threads: int | None = None, shared: bool = False) -> None:
    """Run the TVM kernels the calling thread launches on ``cores``: its TVM thread pool gets
    ``threads`` threads (default and at most: one per core), each pinned to one of them
    (``shared``: all of them free to run on any of ``cores``, for cores other processes use too).
    Call it before the thread launches its first kernel (a pool cannot grow afterwards).

    Why: TVM's thread pool (one per thread that launches kernels) pins that thread to the
    machine's first cores unless ``TVM_BIND_THREADS=0``, whatever affinity it had. Every device
    thread of the ``threads`` runtime, and every Ray actor, ran on core 0: two CPU devices shared
    one core (a BERT layer on two CPUs ran its stages 1.9-2.0x the evaluator's times; bound to
    their own cores, 0.97-1.07x). TVM's call for several instances on one machine
    (``runtime.config_threadpool``) also sets the thread count of every pool created later in
    the process; that default is put back, from a throwaway thread (the call configures its
    caller's pool too). The lock keeps two devices' calls from mixing.
    """
    import tvm

    configure = tvm.get_global_func("runtime.config_threadpool")
    with _binding:
        configure(_SHARE_ALL_CORES if shared else _ONE_CORE_PER_THREAD, threads or len(cores),
                  [str(core) for core in cores])
        restore = threading.Thread(target=configure, args=(1, 0, []), name="tvm-place thread reset")
        restore.start()
        restore.join()


class LocalWorker(Worker):
    """Runs stages in this process on ``tvm.cpu(index)`` or ``tvm.cuda(index)``; a CPU device
    given ``cores`` runs its kernels there (:func:`bind_kernel_threads`, in each thread that
    calls its stages)."""

    def __init__(self, kind: str, index: int, name: str | None = None,
                 cores: Sequence[int] | None = None, threads: int | None = None):
        super().__init__(f"thread {name or f'{kind}:{index}'}")
        self.cores = list(cores) if cores else None
        self.threads = threads
        self._bound = threading.local()  # whether the calling thread's kernels run on ``cores``
        self.device = runtime_device(kind, index)
        if not self.device.exist:
            raise DeviceUnavailableError(
                f"the placement runs a stage on {name or f'{kind}:{index}'}, which this machine "
                "does not have; run those stages where that device exists (a Ray worker on a "
                "node that has it: attach_workers('ray', address=...)) or place on the devices "
                "you have"
            )
        self._vms: dict[str, Any] = {}  # a VM per loaded module
        self._stages: dict[str, Any] = {}  # the function of each stage, by stage name
        self._values: dict[int, dict] = {}
        self._kept: dict[str, Any] = {}
        self._lock = threading.Lock()

    def load(self, module, executable, library, stages):
        from tvm import relax

        if module not in self._vms:
            self._vms[module] = relax.VirtualMachine(executable, self.device)
        self._stages.update(stage_functions(self._vms[module], module, stages))

    def _import(self, payload):
        import tvm

        if isinstance(payload, np.ndarray):
            return tvm.runtime.tensor(payload, self.device)
        return payload.copyto(self.device)

    def submit(self, call):
        with self._lock:
            values = self._values.setdefault(call.key, {})
        if self.cores and not getattr(self._bound, "done", False):
            bind_kernel_threads(self.cores, self.threads)
            self._bound.done = True
        # Runs here, in the executor's thread for this device: the call is done when it returns.
        return run_stage(self._stages[call.stage], values, call, self._import, _same, _same, self._kept)

    def keep(self, name, array):
        self._kept[name] = self._import(array)

    def result(self, handle, timeout):
        return handle

    def drop(self, keys):
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def relay(self, size, payload):
        import tvm

        start = time.perf_counter()
        if payload is not None:
            self._import(payload)
        received = time.perf_counter() - start
        # In one process the sender pays nothing: the receiver's copyto is the whole copy.
        return (0.0, received), tvm.runtime.tensor(np.zeros(max(1, size // 4), "float32"), self.device)

    def relay_times(self, handle, timeout):
        return handle

    def close(self):
        self._stages.clear()
        self._vms.clear()
        self._values.clear()
        self._kept.clear()


def stage_functions(vm, module: str, stages: Sequence[str]) -> dict[str, Any]:
    """``{stage: function}`` of a VM loaded with ``module``'s executable; a stage it lacks is an
    error naming it (an executable built for another plan)."""
    functions = {}
    for stage in stages:
        try:
            functions[stage] = vm[stage]
        except AttributeError:  # TVM's error for a function the executable lacks
            raise RuntimeError(f"module {module!r} has no function for stage {stage!r}: the "
                               "executable was built for another plan") from None
    return functions


def _same(tensor):
    return tensor  # in this process: a copy is the receiver's copyto, an output the tensor itself


def physical_core(cpu: int) -> tuple:
    """The physical core a logical CPU belongs to (Linux sysfs topology: package and core id);
    hyper-threads of one core share it. Unknown topology: the CPU itself."""
    topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
    try:
        with open(f"{topology}/physical_package_id") as package, open(f"{topology}/core_id") as core:
            return int(package.read()), int(core.read())
    except (OSError, ValueError):
        return (-1, cpu)


def core_groups(count: int, cores: Sequence[int] | None = None,
                physical: Callable[[int], Any] = physical_core) -> list[list[int]]:
    """Split this process's CPU cores (or ``cores``) into ``count`` groups, as evenly as possible,
    keeping the hyper-threads of a physical core (``physical(cpu)``: its key) in one group.

    Why: Linux numbers a core's two hyper-threads far apart (cpu i and i + n/2): split in number
    order, each device would get one thread of every core, and the devices would compete for
    every core while the evaluator prices each alone. With fewer physical cores than groups the
    logical CPUs are split; with fewer CPUs than groups, groups share them (round robin).
    """
    available = sorted(cores if cores is not None else process_cores())
    if count <= 0:
        return []
    if len(available) < count:
        return [[available[i % len(available)]] for i in range(count)]
    siblings: dict[Any, list[int]] = {}
    for cpu in available:
        siblings.setdefault(physical(cpu), []).append(cpu)
    units = sorted(siblings.values()) if len(siblings) >= count else [[cpu] for cpu in available]
    size, extra = divmod(len(units), count)
    groups, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        groups.append(sorted(cpu for unit in units[start:end] for cpu in unit))
        start = end
    return groups
