"""PlacedModule: run the per-target artifacts of a split module.

One executor (:mod:`tvm_place.runtime.executor`) runs both modes: latency (``placed(*inputs)``:
one input, each device running its stages in the schedule's order as soon as their inputs
arrive, all devices at once) and throughput (``placed.run_stream(items)``: the same with inputs
in flight). Workers (:mod:`tvm_place.runtime.workers`): threads of this process, or Ray actors
on this host or a Ray cluster (:mod:`tvm_place.runtime.ray_engine`): ``placed.attach_workers``,
which also measures the links between them. Measured times go back into the placement through
``placed.compare()`` (:mod:`tvm_place.runtime.feedback`) and ``placed.rebalance()`` (:mod:`tvm_place.replan`).
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import tvm

from ..errors import TvmPlaceError
from ..formats import problem_from_dict, problem_to_dict
from ..graph import Placement
from ..schemas import ARTIFACTS_VERSION
from ..tvm_log import tvm_quiet
from .errors import DeviceUnavailableError, WorkerError

#: LLVM names type-based alias metadata after object addresses (``!{!"0x5635...", ...}``).
_POINTER_NAME = re.compile(r'"0x[0-9a-f]+(?=[."])')

MANIFEST = "manifest.json"

#: Seconds a stage call (or a copy) may take on one input before a run is abandoned.
DEFAULT_TIMEOUT = 120.0

__all__ = ["DeviceUnavailableError", "MANIFEST", "PlacedModule"]


def _as_tensors(value):
    """Model outputs as TVM tensors: NumPy arrays from another process become host tensors; a
    tuple (a Python tuple, or a TVM array a stage returned) is a Python tuple, nested alike."""
    if isinstance(value, np.ndarray):
        return tvm.runtime.tensor(value, tvm.cpu(0))
    if hasattr(value, "numpy"):
        return value
    return tuple(_as_tensors(item) for item in value)


@dataclass
class EntryFunction:
    """One entry function of a module placed with several (``tvm_place.compile(...,
    entries=...)``): its plan, costs, part of the joint placement, calls per round and report."""

    plan: Any
    problem: Any = None
    placement: Placement | None = None
    calls: float = 1.0
    report: str = ""
    split_module: Any = None
    #: Its weights: ``{name: (operator charged with them, bytes)}`` (see tvm_place.entries).
    weights: dict = None

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "calls": self.calls, "report": self.report,
                "weights": {k: list(v) for k, v in (self.weights or {}).items()},
                "problem": None if self.problem is None else problem_to_dict(self.problem),
                "placement": None if self.placement is None else self.placement.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "EntryFunction":
        from ..passes.build import StagePlan

        return cls(plan=StagePlan.from_dict(data["plan"]), calls=float(data.get("calls", 1.0)),
                   weights={str(k): (int(v[0]), float(v[1])) for k, v in (data.get("weights") or {}).items()},
                   report=str(data.get("report", "")),
                   problem=None if data.get("problem") is None else problem_from_dict(data["problem"]),
                   placement=None if data.get("placement") is None else Placement.from_dict(data["placement"]))


def format_entries(functions: dict[str, EntryFunction]) -> str:
    """A line per entry function: calls per round, stages, and its own predicted times."""
    from ..evaluate import evaluate

    lines = [f"  {'function':<16} {'calls':>6} {'stages':>6} {'latency':>12} {'max-stage':>12}"]
    for name, function in functions.items():
        evaluation = evaluate(function.problem, function.placement)
        stages = sum(1 for step in function.plan.steps if step["kind"] == "call")
        lines.append(f"  {name:<16} {function.calls:>6g} {stages:>6} "
                     f"{evaluation.latency * 1e3:>9.3f} ms {evaluation.max_load * 1e3:>9.3f} ms")
    return "\n".join(lines + ["  call one function with placed[name](*inputs)"])


class _Shared:
    """What a module and its entry functions' views share: the workers, the executables'
    libraries and bound inputs."""

    def __init__(self) -> None:
        self.workers: dict[int, Any] | None = None
        self.libraries: dict[str, str] = {}
        self.library_dir: tempfile.TemporaryDirectory | None = None
        #: Bound inputs (``PlacedModule.bind``) by name, as host arrays.
        self.kept: dict[str, np.ndarray] = {}


class PlacedModule:
    """A placed, compiled model: an executable per device (its stages are named functions of it;
    ``executables``: ``{module name: executable}``), the plan that joins them, and the placement.

    ``placed(*inputs)`` runs one input (latency mode); ``placed.run_stream(items)`` a stream
    (throughput mode), both on the attached workers (``attach_workers("threads" | "ray")``;
    threads when none were attached). Inputs may be NumPy arrays or TVM tensors. ``devices`` is
    a list of dicts with ``name``, ``kind`` and ``index`` per placement device. ``compare()``
    prints predicted against measured times, ``rebalance()`` re-solves the placement with them.
    ``close()`` (or ``with placed:``) ends the workers.
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
        fallbacks: Sequence[str] = (),
        functions: dict[str, EntryFunction] | None = None,
    ):
        self.plan = plan
        #: The entry functions of a module placed with several, by name (``placed[name]``).
        self.functions = dict(functions or {})
        self._parent: PlacedModule | None = None
        self._entry: str | None = None
        #: A line per operator a target could not build (so it runs elsewhere), with why.
        self.fallbacks = list(fallbacks)
        self.executables = dict(executables)
        self.devices = [dict(d) for d in devices]
        self.placement = placement
        self._report_text = report_text
        #: The PlacementProblem and the split IRModule, when built in this process (not loaded).
        self.problem = problem
        self.split_module = split_module
        #: The workers, the executables' libraries on disk (set by :meth:`load`; made on demand for
        #: Ray workers) and the bound inputs, shared with the entry functions' views.
        self._shared = _Shared()
        #: Measurements of the last :meth:`run_stream` (a StreamStats), or None; of the last
        #: latency-mode call: ``latency_stats``.
        self.last_stats = None
        self.latency_stats = None
        #: Links measured between the attached workers (:meth:`calibrate_links`), by device.
        self.links: dict = {}
        self.link_samples: list = []
        #: Seconds a worker spends starting each stage call beyond its work, by device.
        self.call_overheads: dict = {}
        self._uncalibrated_problem = None

    # The workers and libraries live in ``_shared``, one for a module and its functions.
    _workers = property(lambda self: self._shared.workers,
                        lambda self, value: setattr(self._shared, "workers", value))
    _libraries = property(lambda self: self._shared.libraries,
                          lambda self, value: setattr(self._shared, "libraries", value))
    _library_dir = property(lambda self: self._shared.library_dir,
                            lambda self, value: setattr(self._shared, "library_dir", value))

    def __getitem__(self, name: str) -> "PlacedModule":
        """Entry function ``name`` of a module placed with several: a module that runs it on
        the workers all of them share (attach and close them on either)."""
        if name not in self.functions:
            raise KeyError(
                f"no entry function {name!r}: this module has {sorted(self.functions)}"
                if self.functions else
                "this module has one entry function: call it directly, placed(*inputs)"
            )
        function = self.functions[name]
        view = copy.copy(self)
        view.functions, view._parent, view._entry = {}, self, name
        view.plan, view.placement, view._report_text = function.plan, function.placement, function.report
        view.split_module = function.split_module
        view._uncalibrated_problem = None
        view.problem = function.problem
        if self.links and function.problem is not None:
            from ..cost.links import with_links

            view.problem = with_links(function.problem, self.links, self.call_overheads)
        return view

    def bind(self, params) -> "PlacedModule":
        """Hold inputs that stay the same from call to call (weights) on the workers: each is
        sent once to every device whose stages read it and kept there; calls then take only
        the other inputs, in order. ``params``: ``{input name: array}`` (NumPy, torch or TVM
        tensors). A module of several entry functions binds by name for all of them (a weight
        they share is sent once per device). Returns ``self``."""
        from .executor import host_array

        owner = self._parent or self
        plans = [f.plan for f in owner.functions.values()] if owner.functions else [owner.plan]
        types = {name: described for plan in plans
                 for name, described in zip(plan.inputs, plan.input_types or [None] * len(plan.inputs))}
        arrays = {}
        for name, value in dict(params).items():
            if name not in types:
                import difflib

                close = difflib.get_close_matches(str(name), list(types), n=1)
                raise TvmPlaceError(
                    f"bind: the module has no input {name!r}"
                    + (f"; did you mean {close[0]!r}?" if close else f"; its inputs: {list(types)}"))
            array = host_array(value)
            described = types[name]
            if described is not None and (
                    len(array.shape) != len(described["shape"]) or str(array.dtype) != described["dtype"]
                    or any(isinstance(d, int) and d != n for d, n in zip(described["shape"], array.shape))):
                raise TvmPlaceError(
                    f"bind: input {name!r} is {described['dtype']}{list(described['shape'])}, "
                    f"got {array.dtype}{list(array.shape)}")
            arrays[name] = array
        self._shared.kept.update(arrays)
        if self._workers:
            self._send_kept(self._programs(), self._workers, set(arrays))
        return self

    def _send_kept(self, programs, workers, names=None) -> None:
        """Send each bound input (of ``names``, default all) to the workers that read it."""
        kept = self._shared.kept
        for device, worker in workers.items():
            wanted = {name for program in programs for name in program.kept_by_device().get(device, [])}
            for name in sorted(wanted if names is None else wanted & names):
                worker.keep(name, kept[name])

    def _entry_plan(self):
        """The plan this module runs; a clear error for a module of several functions."""
        if self.plan is None:
            raise TvmPlaceError(
                f"this module has several entry functions ({', '.join(self.functions)}): run "
                f"one, placed[{next(iter(self.functions))!r}](*inputs)"
            )
        return self.plan

    def __call__(self, *inputs):
        """Latency mode: one input through the stages, each device running its stages in the
        schedule's order as soon as their inputs arrive, all devices at once. Inputs: NumPy
        arrays or TVM tensors; outputs: TVM tensors (a tuple when the model returns several)."""
        names = self._program().inputs
        if len(inputs) != len(names):
            bound = f" besides its {len(self._shared.kept)} bound ones" if self._shared.kept else ""
            raise TypeError(f"the model takes {len(names)} inputs{bound} ({names}), got {len(inputs)}")
        kept = self.last_stats
        try:
            values = self._run([tuple(inputs)], depth=1, timeout=DEFAULT_TIMEOUT, as_numpy=False)[0]
        finally:
            self.latency_stats, self.last_stats = self.last_stats, kept
        return _as_tensors(values)

    def kernel_sources(self) -> dict[str, list[str]]:
        """The generated code of every executable's kernels (LLVM IR, CUDA C), by module, with the
        pointer values LLVM writes into its metadata replaced, so that two builds of the same
        kernels compare equal."""
        return {
            name: [_POINTER_NAME.sub('"0xADDRESS', module.inspect_source()) for module in executable.mod.imports]
            for name, executable in self.executables.items()
        }

    def report(self) -> str:
        """Which operator runs where, predicted time per device, copies, bound and gap (and,
        once workers measured their links, the links and the prediction priced with them)."""
        if not self.links or self.problem is None or self.placement is None:
            return self._report_text
        from ..cost.links import format_links
        from ..evaluate import evaluate

        evaluation = evaluate(self.problem, self.placement)
        names = [d["name"] for d in self.devices]
        return (f"{self._report_text}\n{format_links(self.links, names, self.call_overheads)}\n"
                f"  with these links: latency {evaluation.latency * 1e3:.3f} ms, max-stage time "
                f"{evaluation.max_load * 1e3:.3f} ms")

    # -- workers and throughput mode ----------------------------------------------------------
    @property
    def workers(self) -> dict[int, Any]:
        """The attached workers by placement device index (empty when none are attached)."""
        return dict(self._workers or {})

    def _program(self, plan=None):
        from .executor import Program

        replicas = self.placement.replicas if self.placement is not None else []
        program = Program(plan or self._entry_plan(), [d["name"] for d in self.devices], replicas,
                          self._shared.kept)
        program.step_times = self._stage_times(program)
        return program

    def _stage_times(self, program):
        """The evaluator's seconds per step of ``program`` and device (the times a stream's order
        is chosen on), where this module's problem and placement cut the plan's stages; else
        None (e.g. one function of a module of several, whose problem is their joint one)."""
        if self.problem is None or self.placement is None:
            return None
        from ..evaluate import stage_costs

        _, stage_device, busy, needs = stage_costs(self.problem, self.placement.device_of,
                                                   self.placement.order)
        same = (stage_device.tolist() == [step.device for step in program.steps]
                and [sorted(need) for need in needs] == program.needs)
        return busy if same else None

    def _programs(self) -> list:
        """A program per function this module's workers run (all of a module's functions)."""
        owner = self._parent or self
        plans = [f.plan for f in owner.functions.values()] if owner.functions else [owner.plan]
        return [owner._program(plan) for plan in plans]

    def attach_workers(
        self,
        workers: str = "threads",
        address: str | None = None,
        cores: Sequence[Sequence[int]] | None = None,
        threads: int | None = None,
        timeout: float = 120.0,
        calibrate: bool = True,
        probe_sizes: Sequence[int] | None = None,
    ) -> "PlacedModule":
        """Choose where each device's stages run, load them there, and measure the links between
        the workers. Returns ``self``.

        ``workers``: ``"threads"`` (every device in this process: a thread per device drives it)
        or ``"ray"`` (one Ray actor per device: on this host pinned to its own cores, so a
        CPU-only machine offers its cores as CPU devices; ``"processes"`` is the same on a local
        Ray); ``address``: an existing Ray cluster (``"HOST:6379"``, ``"auto"``) instead of a
        local one. ``cores``: each CPU device's cores, in device order (default: this process's
        cores split evenly between several CPU devices, for threads too; on a cluster Ray places
        the actors); ``threads``: TVM threads per CPU device (default: one per core).
        ``timeout`` bounds the start of the workers.

        ``calibrate``: copy probe tensors (``probe_sizes``, default 1 KB to 64 MB) between every
        pair of workers and write the fitted links into :attr:`problem` (see
        :mod:`tvm_place.cost.links`), so :meth:`report`, :meth:`compare`, :meth:`rebalance` and
        a re-solve price copies at what this runtime pays (:attr:`links`). Workers attached
        before are closed.
        """
        from . import workers as w

        mode = {"threads": "threads", "thread": "threads", "ray": "ray", "processes": "ray",
                "process": "ray"}.get(workers) if isinstance(workers, str) else None
        if mode is None:
            raise WorkerError(f"workers={workers!r}: use 'threads' or 'ray' ('processes': Ray on this host)")
        if address is not None and mode != "ray":
            raise WorkerError("address= names a Ray cluster: use it with workers='ray'")
        if self._parent is not None:  # the workers are the module's, for all its functions
            self._parent.attach_workers(workers, address, cores, threads, timeout, calibrate, probe_sizes)
            self.__dict__.update(self._parent[self._entry].__dict__)
            return self
        programs = self._programs()
        external = sorted({name for program in programs for name in program.plan.externals})
        if mode == "ray" and external:
            raise WorkerError(
                f"the stages call external functions {external}, which exist in this process "
                "only: Ray workers could not run them; use attach_workers('threads')"
            )
        used = sorted({device for program in programs for device in program.devices_used()})
        self.close()
        created: dict[int, Any] = {}
        try:
            if mode == "threads":
                groups = self._thread_core_groups(used, cores)
                for device in used:
                    spec = self.devices[device]
                    created[device] = w.LocalWorker(spec["kind"], int(spec["index"]), spec["name"],
                                                    groups.get(device), threads)
            else:
                from .ray_engine import start_workers

                specs = [dict(self.devices[d], position=d) for d in used]
                created = start_workers(specs, address, cores, threads, timeout)
            libraries = self._module_libraries() if mode == "ray" else {}
            for program in programs:
                for device, modules in program.modules_by_device().items():
                    for module, stages in modules.items():
                        created[device].load(module, self.executables[module], libraries.get(module),
                                             stages)
            self._send_kept(programs, created)
        except BaseException:
            for worker in created.values():
                worker.close()
            raise
        self._workers = created
        if calibrate and len(created) > 1:
            self.calibrate_links(probe_sizes)
        return self

    def _thread_core_groups(self, used: Sequence[int], cores) -> dict[int, list[int]]:
        """The cores of each CPU device the ``threads`` engine runs: ``cores`` as given, or
        with several CPU devices this process's cores split evenly, as the Ray actors get them
        (the evaluator prices each device alone on its cores); one CPU device keeps TVM's own
        threads."""
        from ..cores import process_cores
        from .workers import core_groups

        cpus = [device for device in used if self.devices[device]["kind"] == "cpu"]
        if cores is None:
            if len(cpus) < 2:
                return {}
            cores = core_groups(len(cpus))
        available = set(process_cores())
        cores = [list(group) for group in cores]
        if len(cores) < len(cpus) or any(not group for group in cores):
            raise WorkerError(f"{len(cpus)} CPU devices run here but `cores` gives {len(cores)} "
                              "core groups (a non-empty list of core numbers per CPU device, in "
                              "device order)")
        for group in cores:
            for core in group:
                if isinstance(core, bool) or not isinstance(core, int) or core not in available:
                    raise WorkerError(f"core {core!r} in `cores` is not one this process may run "
                                      f"on (it may use {sorted(available)})")
        return dict(zip(cpus, cores))

    def calibrate_links(self, sizes: Sequence[int] | None = None, repeat: int = 8,
                        warmup: int = 4) -> dict:
        """Measure copies between every pair of attached workers as the runtime pays them, fit
        each device's link (latency + bytes / bandwidth) and price this module's problem with
        them. Returns the links by device index (also in :attr:`links`).

        Per pair and size (``sizes`` bytes, default 1 KB to 64 MB) the two workers relay a
        tensor back and forth ``repeat`` times, each relay submitted as a stage call is (its
        argument the previous relay's export): the time per relay is a copy's whole price in a
        run, the sender's export and the receiver's import (timed on the workers) and the wait
        between them (the engine's dispatch of the call and its lookup of the value), which is
        charged to the receiving half. ``warmup`` relays of the largest size first, so that fresh
        memory's first-touch costs of the object store and allocators are behind, as in a
        running stream."""
        from ..cost.links import PROBE_SIZES, LinkSample, fit_device_links

        if not self._workers:
            raise TvmPlaceError("no workers attached: call attach_workers first")
        sizes = [int(size) for size in (sizes or PROBE_SIZES)]
        devices = sorted(self._workers)
        pairs = [(a, b) for a in devices for b in devices if a < b]

        def relays(pair: tuple[int, int], size: int, count: int) -> tuple[float, np.ndarray]:
            """Seconds per relay, and each relay's (send, receive) as timed on its worker."""
            payload, handles = None, []
            start = time.perf_counter()
            for hop in range(count + 1):  # the first relay only exports
                worker = self._workers[pair[hop % 2]]
                handle, payload = worker.relay(size, payload)
                handles.append((worker, handle))
            times = np.array([worker.relay_times(handle, 60.0) for worker, handle in handles])
            return (time.perf_counter() - start) / (count + 1), times[1:]

        for pair in pairs:
            relays(pair, max(sizes), warmup)
        # A worker's own calls back to back: what starting a stage costs beyond its work.
        self.call_overheads = {}
        for d in devices:
            per_relay, times = relays((d, d), min(sizes), repeat)
            self.call_overheads[d] = max(0.0, per_relay - float(np.median(times.sum(axis=1))))
        samples = []
        for a, b in pairs:
            dispatch = (self.call_overheads[a] + self.call_overheads[b]) / 2
            for size in sizes:
                per_relay, times = relays((a, b), size, repeat)
                send = float(np.median(times[:, 0]))
                # The wait the workers did not time, beyond starting a call, is the receiver's:
                # its call could not start before the value was there.
                receive = max(per_relay - send - dispatch, float(np.median(times[:, 1])))
                samples += [LinkSample(a, b, size, send, receive), LinkSample(b, a, size, send, receive)]
        self.links = fit_device_links(samples, len(self.devices))
        self.link_samples = samples
        if self._parent is not None:  # the links are the module's, for all its functions
            self._parent.links, self._parent.link_samples = self.links, samples
            self._parent.call_overheads = self.call_overheads
            self._parent._price_with_links()
            self.__dict__.update(self._parent[self._entry].__dict__)
        else:
            self._price_with_links()
        return self.links

    def _price_with_links(self) -> None:
        """:attr:`problem` priced with the measured :attr:`links` (a module of several
        functions: its joint problem, made again from theirs)."""
        from ..cost.links import with_links
        from ..entries import Entry, joint_problem

        if self.problem is None:
            return
        if self.functions:
            self.problem = joint_problem(
                [Entry(name, with_links(f.problem, self.links, self.call_overheads), f.calls,
                       f.weights or {}) for name, f in self.functions.items()],
                self.placement.objective, self.problem.name)
            return
        if self._uncalibrated_problem is None:
            self._uncalibrated_problem = self.problem
        self.problem = with_links(self._uncalibrated_problem, self.links, self.call_overheads)

    def _module_libraries(self) -> dict[str, str]:
        """A shared library per executable (exported once to a temporary directory if needed)."""
        missing = [module for module in self.executables if module not in self._libraries]
        if missing:
            if self._library_dir is None:
                self._library_dir = tempfile.TemporaryDirectory(prefix="tvm-place-modules-")
            with tvm_quiet():  # TVM logs a "Scope Saving" warning per constant here
                for module in missing:
                    path = Path(self._library_dir.name) / f"{module}.so"
                    self.executables[module].export_library(str(path))
                    self._libraries[module] = str(path)
        return self._libraries

    def close(self) -> None:
        """End the attached workers (Ray actors are killed; a Ray this module joined stays up)."""
        for worker in (self._workers or {}).values():
            worker.close()
        self._workers = None

    def __enter__(self) -> "PlacedModule":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, items: Iterable, depth: int, timeout: float, on_result=None,
             as_numpy: bool = True) -> list:
        from .executor import run
        from .stats import StreamStats

        missing = [name for name in self._entry_plan().externals
                   if tvm.get_global_func(name, allow_missing=True) is None]
        if missing:
            raise TvmPlaceError(
                f"the stages call external functions {missing}, which are not registered in this "
                "process: register them (tvm_ffi.register_global_func) before running"
            )
        if self._workers is None:
            self.attach_workers("threads", calibrate=False)
        stats = StreamStats(device_names=[d["name"] for d in self.devices])
        self.last_stats = stats
        return run(self._program(), self._workers, items, depth, timeout, stats, on_result, as_numpy)

    def run_stream(self, inputs: Iterable, depth: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                   on_result=None) -> list:
        """Throughput mode: the same executor as latency mode, with inputs in flight.

        ``inputs``: an iterable (read lazily) of items, each a tuple of arrays (one per model
        input) or one array for a one-input model. At most ``depth`` inputs are in flight
        (default: two per device). Returns the outputs in input order, as NumPy arrays (a tuple
        when the model returns several); ``on_result(index, output)`` sees each as it arrives.
        Stages run on the attached workers (:meth:`attach_workers`; in-process threads if none).
        A stage that raises, a worker that dies or a call longer than ``timeout`` seconds raises
        a :class:`~tvm_place.runtime.errors.StageError` naming the stage, device and input index;
        the outputs finished before are in its ``completed`` (Ctrl-C: a
        :class:`~tvm_place.runtime.errors.RunInterrupted` with them). Measurements:
        :attr:`last_stats`.
        """
        if depth is None:
            depth = 2 * max(1, len(self._program().members))
        return self._run(inputs, depth, timeout, on_result)

    def measure_latency(self, inputs: Sequence, repeat: int = 5, timeout: float = DEFAULT_TIMEOUT) -> float:
        """Median seconds of one input through the stages, alone (latency mode, on the attached
        workers); the first run is a warm-up."""
        item = tuple(inputs)
        kept, times = self.last_stats, []
        try:
            for run in range(repeat + 1):
                self._run([item], depth=1, timeout=timeout)
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
        :mod:`tvm_place.replan`; ``method``: ``"rebalance"`` for Tavarageri et al.'s
        runtime rebalancing, or a solver method; default ``"dp"`` for throughput). Compile it
        with ``tvm_place.compile(..., placement=new)``. ``problem``: the costs the placement was
        made with (default: this module's)."""
        from .. import replan  # planning, not the runtime's: imported on use

        stats = stats if stats is not None else self.last_stats
        if stats is None:
            raise TvmPlaceError("nothing measured yet: run a stream first (placed.run_stream)")
        problem, placement = self._problem_and_placement(problem)
        return replan.rebalance(problem, placement, stats, method, objective, time_limit)

    def example_inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Random inputs of the types the module takes (symbolic dimensions at the sizes it was
        costed at; bound inputs left out): standard normal floats, zeros for integers (valid
        indices of any table)."""
        plan = self._entry_plan()
        if len(plan.input_types) != len(plan.inputs):
            raise TvmPlaceError("this module's plan does not record its input types: compile it again")
        rng = np.random.default_rng(seed)
        arrays = []
        for name, described in zip(plan.inputs, plan.input_types):
            if name in self._shared.kept:
                continue
            shape = [plan.shape_values[d] if isinstance(d, str) else d for d in described["shape"]]
            dtype = np.dtype(described["dtype"])
            arrays.append(rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                          else np.zeros(shape, dtype))
        return arrays

    # -- artifacts ----------------------------------------------------------------------------
    def export(self, directory: str | Path) -> Path:
        """Write one shared library per executable (per device) and a manifest that :meth:`load`
        reads back."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        libraries, hashes = {}, {}
        for module, executable in self.executables.items():
            library = f"{module}.so"
            with tvm_quiet():  # a "Scope Saving" warning per constant
                executable.export_library(str(directory / library))
            libraries[module] = library
            hashes[module] = _sha256(directory / library)
        manifest = {
            "format": "tvm-place-artifacts",
            "version": ARTIFACTS_VERSION,
            "tvm_version": tvm.__version__,
            "devices": self.devices,
            "plan": None if self.plan is None else self.plan.to_dict(),
            "functions": {name: f.to_dict() for name, f in self.functions.items()},
            "libraries": libraries,
            "sha256": hashes,
            "placement": None if self.placement is None else self.placement.to_dict(),
            "problem": None if self.problem is None else problem_to_dict(self.problem),
            "report": self._report_text,
            "fallbacks": self.fallbacks,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PlacedModule":
        """Load artifacts written by :meth:`export`: the manifest checked against its schema, each
        library against the sha256 the manifest records before TVM loads it (see
        :func:`_checked_export`)."""
        from tvm_place.passes.build import StagePlan

        manifest, libraries, placement, problem = _checked_export(Path(directory))
        executables = {module: tvm.runtime.load_module(str(path)) for module, path in libraries.items()}
        loaded = cls(
            plan=None if manifest.get("plan") is None else StagePlan.from_dict(manifest["plan"]),
            executables=executables,
            devices=manifest["devices"],
            placement=placement,
            report_text=manifest.get("report", ""),
            problem=problem,
            fallbacks=manifest.get("fallbacks", []),
            functions={name: EntryFunction.from_dict(f) for name, f in (manifest.get("functions") or {}).items()},
        )
        loaded._libraries = {module: str(path) for module, path in libraries.items()}
        return loaded


def _refuse_older_format(path: Path, source: str, again: str) -> None:
    """An export of an older artifact format (version 1: a library per stage, each called as
    ``main``) is refused in words: this runtime calls stages by name in a library per device."""
    from ..errors import InvalidArtifactError

    try:
        version = json.loads(path.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return  # not readable JSON, or not an object: the schema check says what is wrong
    if version == 1:
        raise InvalidArtifactError(
            f"{source} is an export of an older tvm-place (artifact format 1: a library per "
            f"stage); this one loads format {ARTIFACTS_VERSION} (a library per device): {again}")


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as library:
        for block in iter(lambda: library.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked_export(directory: Path):
    """``(manifest, {module: library path}, placement, problem)`` of an export directory, every
    part checked before anything runs: the manifest against :data:`tvm_place.schemas.MANIFEST`,
    the placement and problem it holds against theirs; each library is a file inside the
    directory (no absolute or ``..`` path) whose sha256 is the one recorded (a truncated library
    would crash the process when TVM maps it). A TVM version other than the running one warns."""
    import warnings

    from .. import schemas
    from ..errors import ArtifactVersionWarning, InvalidArtifactError

    path = directory / MANIFEST
    source = f"manifest {str(path)!r}"
    again = "export the model again (tvm-place compile, PlacedModule.export)"
    if not directory.is_dir():
        raise InvalidArtifactError(
            f"{str(directory)!r} {'is not a directory' if directory.exists() else 'does not exist'}:"
            f" give a directory written by PlacedModule.export (tvm-place compile --output DIR), "
            f"with its {MANIFEST}")
    if not path.exists():
        raise InvalidArtifactError(
            f"{directory} has no {MANIFEST}: it is not a directory written by PlacedModule.export")
    _refuse_older_format(path, source, again)
    manifest = schemas.load(path, "manifest", schemas.MANIFEST, InvalidArtifactError)
    if manifest["tvm_version"] != tvm.__version__:
        warnings.warn(f"{source} was written with TVM {manifest['tvm_version']}, this is TVM "
                      f"{tvm.__version__}: its libraries may not load or may run differently; "
                      f"{again} with this TVM", ArtifactVersionWarning, stacklevel=3)
    hashes = manifest.get("sha256")
    if hashes is None:
        raise InvalidArtifactError(f"{source} records no sha256 of its libraries (written by an "
                                   f"older tvm-place), so they cannot be checked; {again}")
    plans = [manifest["plan"]] if manifest["plan"] is not None else []
    plans += [function["plan"] for function in (manifest.get("functions") or {}).values()]
    if not plans:
        raise schemas.field_error(source, ("plan",), "there is no stage plan (plan is null and no "
                                  "functions are given)", again, InvalidArtifactError)
    called = {step.get("module") for plan in plans for step in plan["steps"] if step["kind"] == "call"}
    without = sorted(map(str, called - set(manifest["libraries"])))
    if without:
        raise schemas.field_error(source, ("libraries",), f"the plan calls stages of modules "
                                  f"{without}, which have no library", again, InvalidArtifactError)
    root = directory.resolve()
    libraries = {}
    for module, name in manifest["libraries"].items():
        where = ("libraries", module)
        library = (root / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or not library.is_relative_to(root):
            raise schemas.field_error(source, where, f"library {name!r} is outside the export "
                                      "directory", "libraries are file names inside it; " + again,
                                      InvalidArtifactError)
        if not library.is_file():
            raise schemas.field_error(source, where, f"library {name!r} is missing from {directory}",
                                      "copy the whole export directory, or " + again,
                                      InvalidArtifactError)
        if module not in hashes:
            raise schemas.field_error(source, ("sha256",), f"no sha256 for module {module!r}", again,
                                      InvalidArtifactError)
        if _sha256(library) != hashes[module]:
            raise schemas.field_error(source, where, f"library {name!r} is not the one exported (its "
                                      "sha256 differs: truncated, edited or replaced)", again,
                                      InvalidArtifactError)
        libraries[module] = library
    placement = manifest.get("placement")
    if placement is not None:
        placement = Placement.from_dict(placement, f"{source}, placement")
    problem = manifest.get("problem")
    if problem is not None:
        problem = problem_from_dict(problem, f"{source}, problem")
    return manifest, libraries, placement, problem
