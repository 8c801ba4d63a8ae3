"""The Ray engine: one Ray actor per placement device, values actor to actor.

Each device's stages load into a :class:`StageActor`, a Ray actor in its own process, pinned to
its cores on this host (``TVM_NUM_THREADS`` set to match before TVM loads) or placed on any node of
a Ray cluster; a GPU device's actor holds one GPU (Ray's ``num_gpus``). A stage's output that
another device reads is put into Ray's object store by the actor that made it, and the reading
actor gets it from there (shared memory on one node, node to node across nodes): the driver only
passes object references, and only the model's inputs and outputs pass through it. Each half of
a copy is timed inside the actors (:class:`~tvm_place.runtime.workers.StageResult`).

Ray starts on first use (``ray.init`` on this host, about 3 s here) or joins a cluster
(``address=``); a Ray already initialised in this process is shared, never shut down by
tvm-place.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..cores import all_cores, process_cores
from .errors import WorkerError
from .workers import (ShapeValues, StageCall, Worker, bind_kernel_threads, in_place_tensor,
                      run_stage, stage_functions, to_numpy)

RAY_MISSING = (
    "workers='ray' needs Ray, which is not installed: pip install 'tvm-place[ray]' "
    "(or pip install 'ray==2.60.0')"
)


def import_ray():
    try:
        import ray
    except ImportError:
        raise WorkerError(RAY_MISSING) from None
    return ray


def ensure_ray(address: str | None = None):
    """The ``ray`` module, connected: an existing connection of this process, the cluster at
    ``address`` (``"auto"``: the one ``RAY_ADDRESS`` or ``ray start`` on this machine names), or
    without an address a new local instance with this process's cores, whatever other Ray runs
    on the machine."""
    ray = import_ray()
    if address is not None and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", current):
            raise WorkerError(
                f"this process is already connected to the Ray cluster at {current}; it cannot "
                f"join {address} too (one Ray per process): leave address= out to use {current}"
            )
        return ray
    import logging

    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                   logging_level=logging.WARNING, configure_logging=True)
    try:
        # On every core of this process: Ray's threads and processes inherit the calling
        # thread's mask (started after a kernel ran, the driver's Ray threads, the raylet, its
        # object store and the GCS all ran on core 0, beside the cpu:0 device's actor).
        with all_cores():
            if address is None:
                # Ray starts its workers at nice 15 by default: a stage actor then gets a few
                # percent of a core beside any ordinary process (the driver, a compile, a test
                # runner), so a run measured nothing like the schedule it was priced by, and an
                # actor could take minutes to import TVM. Stage actors do the model's work: they
                # run at our priority. address="local": Ray's default joins the cluster a ``ray
                # start`` (or another process's ray.cluster_utils.Cluster) last recorded in
                # /tmp/ray, and then refuses num_cpus; a run without an address must not depend
                # on what else runs here.
                ray.init(address="local", num_cpus=len(process_cores()),
                         _system_config={"worker_niceness": 0}, **options)
            else:
                ray.init(address=address, **options)
    except Exception as err:  # noqa: BLE001 - Ray's own error, reported in one line
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        raise WorkerError(
            f"could not start or join {where}: {lines[-1] if lines else type(err).__name__}"
            + ("" if address is None else "; check the address (ray status on the head node shows it)")
        ) from None
    _warn_unauthenticated(address)
    return ray


def _warn_unauthenticated(address: str | None) -> None:
    """Warn when the Ray this process joined takes requests without a token (Ray 2.59+ makes
    a local instance authenticate by default; a cluster does where RAY_AUTH_MODE=token):
    anyone who reaches its ports could run code on it (README, "Threat model")."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # a Ray without token authentication at all
        enabled = False
    else:
        enabled = bool(is_token_auth_enabled())
    if not enabled:
        import warnings

        where = "the local Ray instance" if address is None else f"the Ray cluster at {address}"
        warnings.warn(
            f"{where} does not authenticate its clients (RAY_AUTH_MODE is not 'token'): anyone "
            "who can reach its ports can run code on its nodes. Set RAY_AUTH_MODE=token on every "
            "node (and here), or keep the cluster on a network only you reach",
            stacklevel=3,
        )


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, on a Ray address nobody listens at (Ray itself retries for
    a long time)."""
    import socket

    from .errors import WorkerUnreachableError

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise WorkerError(f"Ray address {address!r}: expected 'HOST:PORT' (the head node's GCS port, "
                          "6379 by default) or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise WorkerUnreachableError(
            f"no Ray cluster answers at {address} ({err.strerror or err}); start one with "
            f"`ray start --head --port {port}` there, or check the address"
        ) from None


class StageActor:
    """The process that runs one device's stages (a Ray actor; see the module docstring)."""

    def __init__(self, kind: str, cores: Sequence[int] | None, threads: int | None):
        if cores:
            os.sched_setaffinity(0, list(cores))
        if threads:
            os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM loads in this process
        import tvm

        # Before any kernel: TVM would pin this thread to the machine's first core whatever the
        # affinity above. On a cluster node (no cores given) the actor's threads share the node's
        # cores with whatever else runs there, as many as TVM would start.
        if cores:
            bind_kernel_threads(cores, threads)
        else:
            default = int(tvm.get_global_func("runtime.NumThreads")())
            bind_kernel_threads(sorted(os.sched_getaffinity(0)), threads or default, shared=True)
        self._tvm = tvm
        # A GPU actor sees only the GPU Ray gave it (CUDA_VISIBLE_DEVICES): its device 0.
        self.device = tvm.cpu(0) if kind == "cpu" else tvm.cuda(0)
        self._vms: dict[str, Any] = {}  # a VM per loaded module
        self._stages: dict[str, Any] = {}  # the function of each stage, by stage name
        self._values: dict[int, dict] = {}
        self._kept: dict[str, Any] = {}
        self._probes: dict[int, Any] = {}
        self._directory = tempfile.TemporaryDirectory(prefix="tvm-place-actor-")

    def info(self) -> dict:
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(),
                "cores": sorted(os.sched_getaffinity(0)), "device": str(self.device),
                "threads": os.environ.get("TVM_NUM_THREADS"),
                "exists": bool(self.device.exist)}

    def load(self, module: str, library: bytes | None, stages: Sequence[str]) -> None:
        """Load ``module``'s library (None: loaded before) and take ``stages`` from it."""
        from tvm import relax

        if os.path.basename(module) != module or module in ("", ".", ".."):
            raise ValueError(f"module name {module!r} is not a plain file name: refused (a library "
                             "is written only inside the worker's own folder)")
        if module not in self._vms:
            path = os.path.join(self._directory.name, f"{module}.so")
            with open(path, "wb") as file:
                file.write(library)
            self._vms[module] = relax.VirtualMachine(self._tvm.runtime.load_module(path), self.device)
        self._stages.update(stage_functions(self._vms[module], module, stages))

    def _import(self, payload, in_place: bool = True):
        """A value that crossed: a model input (an array Ray already handed over), or another
        actor's export (a reference, fetched here: on another node, over the network).

        On a CPU the stage reads the array where Ray put it (``in_place``; the object store's
        shared memory on this node), if TVM's kernels can (:func:`in_place_tensor`): no copy,
        no fresh allocation. Why: copying a 16 MB model input into a new tensor took 3-31 ms
        per input on the device's own core (a fresh allocation's page faults each time), a
        host transfer no link prices. The link probe (:meth:`relay`) imports the same way, so
        the links price what stages pay."""
        import ray

        if isinstance(payload, list):  # a boxed reference (the link probes)
            payload = payload[0]
        if isinstance(payload, ray.ObjectRef):
            payload = ray.get(payload)
        if in_place and self.device.dlpack_device_type() == 1:  # kDLCPU
            tensor = in_place_tensor(payload)
            if tensor is not None:
                return tensor
        return self._tvm.runtime.tensor(np.ascontiguousarray(payload), self.device)

    @staticmethod
    def _export(tensor):
        import ray

        # One copy: the put copies the tensor's own memory into the object store.
        return ray.put(to_numpy(tensor, copy=False))

    def call(self, call: StageCall, *arrived):
        """Run ``call``; its crossed arguments are ``arrived``, in order (Ray resolved the
        references the driver passed: model inputs to arrays, exports to references). Returns
        the :class:`StageResult` and then one reference per export."""
        arrived_values = iter(arrived)
        call.args = [(name, None if payload is None else next(arrived_values))
                     for name, payload in call.args]
        values = self._values.setdefault(call.key, {})
        # Model outputs as views: returning them copies them into the object store once.
        result = run_stage(self._stages[call.stage], values, call, self._import, self._export,
                           lambda value: to_numpy(value, copy=False), self._kept)
        exports = [result.payloads[name] for name in call.exports]
        result.payloads = {}
        return (result, *exports) if exports else result

    def drop(self, keys: Sequence[int]) -> None:
        for key in keys:
            self._values.pop(key, None)

    def keep(self, name: str, array) -> None:
        # A copy: held for the module's life, it would pin its object in Ray's store.
        self._kept[name] = self._import(array, in_place=False)

    def relay(self, size: int, *arrived):
        """The link probe (see :meth:`Worker.relay`): ``((send, receive) seconds, export)``."""
        start = time.perf_counter()
        if arrived:
            self._import(arrived[0])
        received = time.perf_counter() - start
        # One tensor per size, kept: a stage's outputs come from the VM's memory pool too.
        tensor = self._probes.get(size)
        if tensor is None:
            tensor = self._probes[size] = self._tvm.runtime.tensor(
                np.ones(max(1, size // 4), "float32"), self.device)
        start = time.perf_counter()
        payload = self._export(tensor)
        return (time.perf_counter() - start, received), payload


class RayWorker(Worker):
    """A placement device's :class:`StageActor`, driven from the executor."""

    remote = True
    eager = True

    def __init__(self, actor, label: str, info: dict):
        super().__init__(label)
        self.actor = actor
        self.actor_id = actor._actor_id.hex()  # as Ray's actor errors name it
        self.info = info
        self._sent: set[str] = set()  # modules whose library the actor has

    @classmethod
    def start(cls, kind: str, name: str, cores: Sequence[int] | None,
              threads: int | None, num_cpus: float, timeout: float) -> "RayWorker":
        ray = import_ray()
        options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": 0}
        if kind != "cpu":
            options["num_gpus"] = 1
        actor = ray.remote(StageActor).options(**options).remote(kind, cores, threads)
        reference = actor.info.remote()
        ready, _ = ray.wait([reference], timeout=timeout)
        if not ready:
            ray.kill(actor)
            free = ray.available_resources()
            raise WorkerError(
                f"Ray did not start the worker of {name} within {timeout:g} s (it asks for "
                f"{num_cpus:g} CPU{'' if kind == 'cpu' else ' and 1 GPU'}; free now: "
                f"{free.get('CPU', 0):g} CPUs, {free.get('GPU', 0):g} GPUs); add nodes or "
                "attach fewer devices"
            )
        try:
            info = ray.get(reference)
        except Exception as err:  # noqa: BLE001 - the actor failed to start
            raise WorkerError(f"the Ray worker of {name} failed to start: {_last_line(err)}") from None
        if not info["exists"]:
            ray.kill(actor)
            raise WorkerError(f"the Ray worker of {name} (on {info['host']}) has no {kind} device")
        cores_text = f", cores {info['cores']}" if cores else ""
        return cls(actor, f"ray actor pid {info['pid']} on {info['host']}{cores_text}", info)

    def load(self, module, executable, library, stages):
        ray = import_ray()
        data = None
        if module not in self._sent:  # the library crosses once; later loads add stages
            with open(library, "rb") as file:
                data = file.read()
        try:
            ray.get(self.actor.load.remote(module, data, list(stages)), timeout=120)
        except Exception as err:  # noqa: BLE001 - reported with the module's name
            raise WorkerError(f"loading module {module!r} (stages {list(stages)[:3]}) on "
                              f"{self.label} failed: {_last_line(err)}") from None
        self._sent.add(module)

    def submit(self, call):
        # Crossed values go as top-level arguments: Ray starts the call once they exist (the
        # actor runs its calls in submission order), so no stage waits for a round trip here.
        arrived = [payload for _, payload in call.args if payload is not None]
        slim = StageCall(call.key, call.stage, [(n, None if p is None else True) for n, p in call.args],
                         call.outputs, call.exports, call.fetches, call.frees)
        returned = self.actor.call.options(num_returns=1 + len(call.exports)).remote(slim, *arrived)
        if not call.exports:
            returned = [returned]
        return _Call(returned[0], dict(zip(call.exports, returned[1:])))

    def result(self, handle, timeout):
        ray = import_ray()
        ready, _ = ray.wait([handle.result], timeout=timeout)
        if not ready:
            return None
        try:
            return ray.get(handle.result)
        except ray.exceptions.RayTaskError as err:
            if self.propagated(err):
                raise
            cause = err.cause if getattr(err, "cause", None) is not None else err
            raise RuntimeError(_last_line(cause)) from None  # the stage's own error, in one line

    def propagated(self, error):
        """Whether ``error`` is another actor's, passed on to this call through an input: a
        stage's error raised in another actor's process, or the death of the actor that was to
        make an input (Ray fails the waiting call with that actor's ``ActorDiedError``, wrapped
        in a ``RayTaskError`` without a pid)."""
        ray = import_ray()
        if isinstance(error, ray.exceptions.RayActorError):
            return getattr(error, "actor_id", None) not in (None, self.actor_id)
        return (isinstance(error, ray.exceptions.RayTaskError)
                and getattr(error, "pid", None) not in (None, self.info["pid"]))

    def host_payload(self, array):
        if isinstance(array, ShapeValues):  # a few integers: inline in the call
            return array
        return import_ray().put(np.ascontiguousarray(array))

    def drop(self, keys):
        if self.broken is None and keys:
            self.actor.drop.remote(list(keys))

    def keep(self, name, array):
        ray = import_ray()
        try:
            ray.get(self.actor.keep.remote(name, np.ascontiguousarray(array)), timeout=300)
        except Exception as err:  # noqa: BLE001 - reported with the input's name
            raise WorkerError(f"sending the bound input {name!r} to {self.label} failed: "
                              f"{_last_line(err)}") from None

    def relay(self, size, payload):
        # As a stage call: the previous export as a top-level argument, so Ray starts the
        # call once it exists, and this call's export as its own return reference.
        arrived = () if payload is None else (payload,)
        times, exported = self.actor.relay.options(num_returns=2).remote(size, *arrived)
        return times, exported

    def relay_times(self, handle, timeout):
        return import_ray().get(handle, timeout=timeout)

    def died(self, error):
        ray = import_ray()
        return isinstance(error, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError,
                                  ray.exceptions.ActorUnavailableError))

    def abandon(self, reason):
        super().abandon(reason)
        self._kill()

    def _kill(self):
        if self.actor is not None:
            try:
                import_ray().kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def close(self):
        self._kill()
        self.actor = None


def start_workers(devices: Sequence[dict], address: str | None, cores: Sequence[Sequence[int]] | None,
                  threads: int | None, timeout: float) -> dict[int, RayWorker]:
    """One :class:`RayWorker` per entry of ``devices`` (``{"position", "kind", "name"}``; a GPU
    device's actor gets whichever GPU Ray gives it).

    On a local Ray (no ``address``), CPU actors are pinned to ``cores`` (default: this process's
    cores split evenly) with one TVM thread per core; on a cluster, Ray places them and they run
    with as many threads as they ask CPUs.
    """
    from .workers import core_groups

    ray = ensure_ray(address)
    local = address is None
    cpu_devices = [d for d in devices if d["kind"] == "cpu"]
    groups = list(cores) if cores is not None else (core_groups(len(cpu_devices)) if local else None)
    if groups is not None and len(groups) < len(cpu_devices):
        raise WorkerError(
            f"{len(cpu_devices)} CPU devices run on Ray but `cores` gives {len(groups)} core groups"
        )
    total = float(ray.cluster_resources().get("CPU", 0))
    wanted = sum(len(groups[i]) if groups else 1 for i in range(len(cpu_devices)))
    scale = min(1.0, total / wanted) if wanted and total else 1.0
    workers: dict[int, RayWorker] = {}
    try:
        cpu_number = 0
        for device in devices:
            group = None
            if device["kind"] == "cpu" and groups is not None:
                group = groups[cpu_number]
                cpu_number += 1
            count = len(group) if group else 1
            workers[device["position"]] = RayWorker.start(
                device["kind"], device["name"], group,
                threads or (count if group else None), count * scale, timeout,
            )
    except BaseException:
        for worker in workers.values():
            worker.close()
        raise
    return workers


@dataclass
class _Call:
    """A submitted stage call: its result and, by name, its exports (references)."""

    result: Any
    payloads: dict


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
