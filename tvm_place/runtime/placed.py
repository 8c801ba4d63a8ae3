"""PlacedModule: run the per-target artifacts of a split module.

Latency mode (``placed(*inputs)``): one input through the stages in plan order. Throughput mode
(``placed.run_stream(items)``): a stream of inputs, every stage busy at once on its own worker
(:mod:`tvm_place.runtime.stream`). Workers (:mod:`tvm_place.runtime.workers`) are threads of this
process, worker processes this machine starts (pinned to their own cores), or RPC servers of other
hosts: ``placed.attach_workers(...)``. Measured stage times go back into the placement through
``placed.compare()`` and ``placed.rebalance()`` (:mod:`tvm_place.runtime.feedback`).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from ..errors import TvmPlaceError
from ..graph import FORMAT_VERSION, Placement
from .errors import DeviceUnavailableError, WorkerError

#: LLVM names type-based alias metadata after object addresses (``!{!"0x5635...", ...}``).
_POINTER_NAME = re.compile(r'"0x[0-9a-f]+(?=[."])')

MANIFEST = "manifest.json"

#: Seconds a stage call (or a copy) may take on one input before a run is abandoned.
DEFAULT_TIMEOUT = 120.0

__all__ = ["DeviceUnavailableError", "MANIFEST", "PlacedModule", "runtime_device"]


def runtime_device(kind: str, index: int):
    return tvm.cpu(index) if kind == "cpu" else tvm.cuda(index)


class _quiet_stderr:
    """Send file descriptor 2 to a temporary file for a while; replay it if an error escapes."""

    def __enter__(self):
        import os
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, kind, error, trace):
        import os

        os.dup2(self._saved, 2)
        os.close(self._saved)
        if kind is not None:
            self._file.seek(0)
            os.write(2, self._file.read()[-4000:])
        self._file.close()


class PlacedModule:
    """A placed, compiled model: stage executables, the plan that joins them, and the placement.

    ``placed(*inputs)`` runs one input through the stages in plan order, copying values between
    devices exactly where the plan says; inputs may be NumPy arrays or TVM tensors, outputs are TVM
    tensors (a tuple when the model returns several). ``devices`` is a list of dicts with ``name``,
    ``kind`` and ``index`` per placement device.

    ``placed.run_stream(items)`` is throughput mode: every stage busy at once on its device's
    worker, bounded queues between stages, results in input order. ``attach_workers`` chooses the
    workers: threads of this process (the default), worker processes started here and pinned to
    their own cores (``"processes"``: a CPU-only machine offers its cores as CPU devices), or TVM
    RPC servers by address or through a tracker; with workers in other processes ``placed(x)``
    runs through them too. ``compare()`` prints predicted against measured times, ``rebalance()``
    re-solves the placement with them. ``close()`` (or ``with placed:``) ends the workers.
    """

    def __init__(
        self,
        plan,
        executables: dict[str, Any],
        devices: Sequence[dict],
        placement: Placement | None = None,
        report_text: str = "",
        problem=None,
        split_module=None,
    ):
        self.plan = plan
        self.executables = dict(executables)
        self.devices = [dict(d) for d in devices]
        self.placement = placement
        self._report_text = report_text
        #: The PlacementProblem and the split IRModule, when built in this process (not loaded).
        self.problem = problem
        self.split_module = split_module
        self._vms: dict[str, relax.VirtualMachine] = {}
        #: Stage libraries on disk (set by :meth:`load`; made on demand for RPC workers).
        self._libraries: dict[str, str] = {}
        self._library_dir: tempfile.TemporaryDirectory | None = None
        self._workers: dict[int, Any] | None = None
        self._owned_servers: list = []
        #: Measurements of the last :meth:`run_stream` (a StreamStats), or None.
        self.last_stats = None

    def _device(self, index: int):
        spec = self.devices[index]
        device = runtime_device(spec["kind"], spec["index"])
        if not device.exist:
            raise DeviceUnavailableError(
                f"the placement runs a stage on {spec['name']}, which this machine does not have; "
                "the artifacts can be built and exported here, but run them where that device "
                "exists (or place on the devices you have, e.g. ['llvm', 'llvm'])"
            )
        return device

    def _vm(self, stage: str, device_index: int) -> relax.VirtualMachine:
        if stage not in self._vms:
            self._vms[stage] = relax.VirtualMachine(self.executables[stage], self._device(device_index))
        return self._vms[stage]

    def __call__(self, *inputs):
        if len(inputs) != len(self.plan.inputs):
            raise TypeError(
                f"the model takes {len(self.plan.inputs)} inputs ({self.plan.inputs}), "
                f"got {len(inputs)}"
            )
        if self._workers is not None and any(w.remote for w in self._workers.values()):
            # Stages in other processes: one input through the same engine as a stream.
            kept = self.last_stats
            try:
                result = self._stream([tuple(inputs)], depth=1, timeout=DEFAULT_TIMEOUT)[0]
            finally:
                self.last_stats = kept
            host_device = tvm.cpu(0)
            if self.plan.output_is_tuple:
                return tuple(tvm.runtime.tensor(v, host_device) for v in result)
            return tvm.runtime.tensor(result, host_device)
        host = self._device(0)
        values: dict[str, Any] = {}
        for name, value in zip(self.plan.inputs, inputs):
            values[name] = tvm.runtime.tensor(np.asarray(value), host) if isinstance(value, np.ndarray) else value
        for step in self.plan.steps:
            if step["kind"] == "copy":
                values[step["result"]] = values[step["source"]].copyto(self._device(step["device"]))
            else:
                results = self._vm(step["stage"], step["device"])["main"](
                    *[values[name] for name in step["args"]]
                )
                for name, result in zip(step["outputs"], results):
                    values[name] = result
        outputs = tuple(values[name] for name in self.plan.outputs)
        return outputs if self.plan.output_is_tuple else outputs[0]

    def kernel_sources(self) -> dict[str, list[str]]:
        """The generated code of every stage's kernels (LLVM IR, CUDA C), by stage, with the
        pointer values LLVM writes into its metadata replaced, so that two builds of the same
        kernels compare equal."""
        return {
            stage: [_POINTER_NAME.sub('"0xADDRESS', module.inspect_source()) for module in executable.mod.imports]
            for stage, executable in self.executables.items()
        }

    def report(self) -> str:
        """Which operator runs where, predicted time per device, copies, bound and gap."""
        return self._report_text

    # -- workers and throughput mode ----------------------------------------------------------
    @property
    def workers(self) -> dict[int, Any]:
        """The attached workers by placement device index (empty when none are attached)."""
        return dict(self._workers or {})

    @property
    def worker_processes(self) -> list:
        """The worker processes this module started (``LocalServer``), for ``"process"`` workers."""
        return list(self._owned_servers)

    def attach_workers(
        self,
        workers: str | Sequence[Any] | Mapping[Any, Any] = "threads",
        cores: Sequence[Sequence[int]] | None = None,
        threads: int | None = None,
        timeout: float = 20.0,
        start_timeout: float = 120.0,
    ) -> "PlacedModule":
        """Choose where each device's stages run; load the stages there. Returns ``self``.

        ``workers``: ``"threads"`` (all in this process), ``"processes"`` (one worker process
        per device, started here, each pinned to its share of this process's cores), or one
        entry per placement device (a list, or a dict by device name or index; devices left out
        run in threads): ``"thread"``, ``"process"``, ``"host:port"`` (a running
        ``python -m tvm_place.runtime.server``, or any TVM RPC server), ``"tracker://host:port/key"``,
        a :class:`~tvm_place.runtime.workers.LocalServer`, a ``tvm.rpc.RPCSession`` or a
        :class:`~tvm_place.runtime.workers.Worker`. ``cores``: the core group of each started
        process, in device order (default: the cores split evenly); ``threads``: their
        ``TVM_NUM_THREADS`` (default: one per core). ``timeout`` bounds each connection,
        ``start_timeout`` the start of the processes. Workers attached before are closed.
        """
        from . import workers as w

        entries = self._worker_entries(workers)
        self.close()
        created: dict[int, Any] = {}
        try:
            process_devices = [d for d, entry in entries.items() if entry == "process"]
            groups = list(cores) if cores is not None else w.core_groups(len(process_devices))
            if len(groups) < len(process_devices):
                raise WorkerError(
                    f"{len(process_devices)} devices run in worker processes but `cores` gives "
                    f"{len(groups)} core groups"
                )
            started = []
            for device, group in zip(process_devices, groups):
                spec = self.devices[device]
                env = None
                if spec["kind"] != "cpu":
                    import os

                    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(spec["index"]))
                server = w.LocalServer(cores=group, threads=threads, env=env)
                self._owned_servers.append(server)
                started.append((device, server))
            for device, server in started:
                server.wait_ready(start_timeout)
                entries[device] = server
            for device, entry in entries.items():
                created[device] = self._open_worker(device, entry, timeout)
            for device, worker in created.items():
                for step in self.plan.steps:
                    if step["kind"] == "call" and step["device"] == device:
                        library = self._stage_libraries()[step["stage"]] if worker.remote else None
                        worker.load(step["stage"], self.executables[step["stage"]], library)
        except BaseException:
            for worker in created.values():
                worker.close()
            self.close()
            raise
        self._workers = created
        return self

    def _worker_entries(self, workers) -> dict[int, Any]:
        used = sorted({int(s["device"]) for s in self.plan.steps if s["kind"] == "call"})
        names = {spec["name"]: d for d, spec in enumerate(self.devices)}
        if isinstance(workers, str):
            mode = {"threads": "thread", "thread": "thread", "processes": "process",
                    "process": "process"}.get(workers)
            if mode is None:
                raise WorkerError(
                    f"workers={workers!r}: use 'threads', 'processes', or one entry per device "
                    f"({[d['name'] for d in self.devices]})"
                )
            return {d: mode for d in used}
        if isinstance(workers, Mapping):
            given = {}
            for key, entry in workers.items():
                device = names.get(key, key)
                if not isinstance(device, int) or not 0 <= device < len(self.devices):
                    raise WorkerError(f"workers names device {key!r}; the devices are {list(names)}")
                given[device] = entry
            return {d: given.get(d, "thread") for d in used}
        workers = list(workers)
        if len(workers) != len(self.devices):
            raise WorkerError(
                f"{len(workers)} workers for {len(self.devices)} placement devices "
                f"({[d['name'] for d in self.devices]}); give one per device"
            )
        return {d: workers[d] for d in used}

    def _open_worker(self, device: int, entry, timeout: float):
        from . import workers as w

        spec = self.devices[device]
        kind, index, name = spec["kind"], int(spec["index"]), spec["name"]
        if isinstance(entry, w.Worker):
            return entry
        if entry == "thread":
            return w.LocalWorker(kind, index, name)
        remote_index = 0 if kind == "cpu" else index
        if isinstance(entry, w.LocalServer):
            if entry.port is None:
                entry.wait_ready()
            # A process started here for a GPU sees only that GPU (CUDA_VISIBLE_DEVICES): index 0.
            started_here = any(entry is server for server in self._owned_servers)
            return w.connect(entry.address, kind, 0 if started_here else remote_index, timeout,
                             server=entry, what=f"the worker of {name}")
        if isinstance(entry, str):
            return w.connect(entry, kind, remote_index, timeout, what=f"the worker of {name}")
        if hasattr(entry, "get_function") and hasattr(entry, "upload"):
            return w.session_worker(entry, kind, remote_index)
        raise WorkerError(
            f"worker {entry!r} for {name}: give 'thread', 'process', 'host:port', "
            "'tracker://host:port/key', a LocalServer, an RPCSession or a Worker"
        )

    def _stage_libraries(self) -> dict[str, str]:
        """A shared library per stage (exported once to a temporary directory if needed)."""
        missing = [stage for stage in self.executables if stage not in self._libraries]
        if missing:
            if self._library_dir is None:
                self._library_dir = tempfile.TemporaryDirectory(prefix="tvm-place-stages-")
            with _quiet_stderr():  # TVM logs a "Scope Saving" warning per constant here
                for stage in missing:
                    path = Path(self._library_dir.name) / f"{stage}.so"
                    self.executables[stage].export_library(str(path))
                    self._libraries[stage] = str(path)
        return self._libraries

    def close(self) -> None:
        """Close the attached workers and end the worker processes this module started."""
        remote = False
        for worker in (self._workers or {}).values():
            remote = remote or worker.remote
            worker.close()
        self._workers = None
        if remote:
            # Remote objects sit in reference cycles; a TVM RPC server serves one session at a
            # time, so the session must really end here for the server to take the next one.
            import gc

            gc.collect()
        for server in self._owned_servers:
            server.close()
        self._owned_servers = []

    def __enter__(self) -> "PlacedModule":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stream(self, items: Iterable, depth: int, timeout: float, on_result=None) -> list:
        from .stream import Program, StreamStats, run_stream

        if self._workers is None:
            self.attach_workers("threads")
        names = [d["name"] for d in self.devices]
        stats = StreamStats(device_names=names)
        self.last_stats = stats
        return run_stream(Program(self.plan, names), self._workers, items, depth, timeout, stats,
                          on_result)

    def run_stream(self, inputs: Iterable, depth: int = 2, timeout: float = DEFAULT_TIMEOUT,
                   on_result=None) -> list:
        """Throughput mode: run a stream of inputs with every stage busy at once.

        ``inputs``: an iterable (read lazily) of items, each a tuple of arrays (one per model
        input) or one array for a one-input model. Between two stages a queue holds at most
        ``depth`` inputs. Returns the outputs in input order, as NumPy arrays (a tuple when the
        model returns several); ``on_result(index, output)`` sees each as it arrives. Stages run
        on the attached workers (:meth:`attach_workers`; in-process threads if none). A stage
        that raises, a worker that dies or a call longer than ``timeout`` seconds raises a
        :class:`~tvm_place.runtime.errors.StageError` naming the stage and the input index; the
        outputs finished before are in its ``completed``. Measurements: :attr:`last_stats`.
        """
        return self._stream(inputs, depth, timeout, on_result)

    def measure_latency(self, inputs: Sequence, repeat: int = 5, timeout: float = DEFAULT_TIMEOUT) -> float:
        """Median seconds of one input through the stages, alone (latency mode, on the attached
        workers); the first run is a warm-up."""
        item = tuple(inputs)
        kept, times = self.last_stats, []
        try:
            for run in range(repeat + 1):
                self._stream([item], depth=1, timeout=timeout)
                if run:
                    times.append(float(self.last_stats.latencies[0]))
        finally:
            self.last_stats = kept  # the stream measured before stays the one compare() reads
        return float(np.median(times))

    def _problem_and_placement(self, problem=None):
        problem = problem if problem is not None else self.problem
        if problem is None or self.placement is None:
            raise TvmPlaceError(
                "this module has no placement problem (loaded from artifacts exported before "
                "problems were saved?): compile it with tvm_place.compile, or pass problem="
            )
        return problem, self.placement

    def compare(self, stats=None, latency: float | None = None, problem=None) -> str:
        """Predicted (evaluator) against measured times per device, throughput and latency."""
        from . import feedback

        stats = stats if stats is not None else self.last_stats
        if stats is None:
            raise TvmPlaceError("nothing measured yet: run a stream first (placed.run_stream)")
        problem, placement = self._problem_and_placement(problem)
        return feedback.compare(problem, placement, stats, latency)

    def rebalance(self, stats=None, method: str | None = None, objective: str = "throughput",
                  time_limit: float = 10.0, problem=None) -> Placement:
        """A placement re-solved with the measured stage and copy times (see
        :mod:`tvm_place.runtime.feedback`; ``method``: ``"rebalance"`` for Tavarageri et al.'s
        runtime rebalancing, or a solver method; default ``"dp"`` for throughput). Compile it
        with ``tvm_place.compile(..., placement=new)``. ``problem``: the costs the placement was
        made with (default: this module's)."""
        from . import feedback

        stats = stats if stats is not None else self.last_stats
        if stats is None:
            raise TvmPlaceError("nothing measured yet: run a stream first (placed.run_stream)")
        problem, placement = self._problem_and_placement(problem)
        return feedback.rebalance(problem, placement, stats, method, objective, time_limit)

    # -- artifacts ----------------------------------------------------------------------------
    def export(self, directory: str | Path) -> Path:
        """Write one shared library per stage and a manifest that :meth:`load` reads back."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        libraries = {}
        for stage, executable in self.executables.items():
            library = f"{stage}.so"
            executable.export_library(str(directory / library))
            libraries[stage] = library
        manifest = {
            "format": "tvm-place-artifacts",
            "version": FORMAT_VERSION,
            "tvm_version": tvm.__version__,
            "devices": self.devices,
            "plan": self.plan.to_dict(),
            "libraries": libraries,
            "placement": None if self.placement is None else self.placement.to_dict(),
            "problem": None if self.problem is None else self.problem.to_dict(),
            "report": self._report_text,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PlacedModule":
        """Load artifacts written by :meth:`export`."""
        from tvm_place.passes.build import StagePlan

        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except FileNotFoundError:
            raise TvmPlaceError(
                f"{directory} has no {MANIFEST}: it is not a directory written by PlacedModule.export"
            ) from None
        except json.JSONDecodeError as err:
            raise TvmPlaceError(f"{directory / MANIFEST} is not valid JSON ({err.msg})") from None
        if manifest.get("format") != "tvm-place-artifacts" or manifest.get("version") != FORMAT_VERSION:
            raise TvmPlaceError(
                f"{directory / MANIFEST} is not a tvm-place artifact manifest of version "
                f"{FORMAT_VERSION}; re-export it with this tvm-place"
            )
        executables = {
            stage: tvm.runtime.load_module(str(directory / library))
            for stage, library in manifest["libraries"].items()
        }
        placement = manifest.get("placement")
        problem = manifest.get("problem")
        if problem is not None:
            from ..formats import problem_from_dict

            problem = problem_from_dict(problem)
        loaded = cls(
            plan=StagePlan.from_dict(manifest["plan"]),
            executables=executables,
            devices=manifest["devices"],
            placement=None if placement is None else Placement.from_dict(placement),
            report_text=manifest.get("report", ""),
            problem=problem,
        )
        loaded._libraries = {
            stage: str((directory / library).resolve()) for stage, library in manifest["libraries"].items()
        }
        return loaded
