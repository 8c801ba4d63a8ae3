"""The one executor: a dataflow run of the stage plan, for one input (latency) or a stream.

Every device has a thread here that drives its worker (:mod:`tvm_place.runtime.workers`): it runs
the device's stages in plan order, which is the schedule's order (:mod:`tvm_place.schedule`: the
order the evaluator prices), each as soon as the values it reads have arrived; all devices at
once. A value that crosses devices is exported by the stage that made it, right after it
computes, and imported by the stage that reads it (Ray: actor to actor through the object store;
threads: ``copyto``), both halves timed on the workers. A Ray actor gets each call as soon as the
calls making its inputs are submitted (it runs its calls in order, each once its inputs exist),
so no stage waits for a round trip through this process; a thread worker runs a call once its
inputs are there.

With several inputs in flight (throughput mode, at most ``depth`` at once), each device runs its
calls in the order of the stream rule (:class:`tvm_place.schedule.Stream`, simulated on the
evaluator's stage times: the schedule ``stream_interval`` prices), never an input's stage before
the previous input's same stage on that device, so results leave in input order and every stage
works on the next input while the later stages work on the earlier ones. One input alone is
exactly the latency schedule.

Replica groups (DiviML's data parallelism; ``Placement.replicas``): a group's stages run on its
members in turn, input ``k`` on member ``k mod len(group)``.

Faults: a stage that raises stops new inputs; the inputs before it finish and are returned in the
error's ``completed``. A call that outlasts ``timeout`` (a frozen worker), a worker that dies, or
Ctrl-C stop at once, keeping what had finished; the main thread checks every ``POLL`` seconds, so
nothing waits forever.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .. import schedule
from ..cores import all_cores
from .errors import RunInterrupted, StageError, StageTimeoutError, WorkerDiedError
from .stats import StreamStats
from .workers import Kept, ShapeValues, StageCall, Worker, nbytes, to_numpy

#: Seconds between the checks of every blocking wait (abort, watchdog, worker liveness).
POLL = 0.05
#: Stage calls a device may have submitted and not finished (workers that queue them in order).
MAX_AHEAD = 64


@dataclass
class _Arg:
    name: str  # the name the stage reads
    kind: str  # "local" (made on this device), "input" (a model input), "kept" (a bound input,
    # held by the worker), "copy" (from another device)
    source: str  # the value copied (for "input"/"copy"), else ``name``


@dataclass
class _Step:
    position: int
    stage: str
    module: str  # the executable whose function ``stage`` is
    device: int
    args: list[_Arg]
    outputs: list[str]
    exports: list[str]  # outputs other devices read: exported right after the stage
    fetches: list[str]  # outputs of the model: handed to the driver
    frees: list[str] = field(default_factory=list)  # local values no later stage here reads


class Program:
    """A :class:`~tvm_place.passes.build.StagePlan` as steps per device, in the schedule's order.

    ``replicas``: replica groups of placement device indices (each group's first device holds the
    stages). ``kept``: the bound inputs (``PlacedModule.bind``) by name, as host arrays: the
    workers hold them, so a call carries only the other inputs (:attr:`inputs`).
    """

    def __init__(self, plan, device_names: Sequence[str], replicas: Sequence[Sequence[int]] = (),
                 kept: dict | None = None):
        self.plan = plan
        self.device_names = list(device_names)
        self.kept = {name: array for name, array in (kept or {}).items() if name in plan.inputs}
        #: The inputs each call takes, in order (the plan's, less the bound ones).
        self.inputs = [name for name in plan.inputs if name not in self.kept]
        copies = {s["result"]: s for s in plan.steps if s["kind"] == "copy"}
        # A stage's shape argument is an input too: the executor makes it from the model's.
        inputs = set(plan.inputs) | set(plan.shape_args)
        copied_sources = {s["source"] for s in copies.values()}
        self.copies = copies
        self.steps: list[_Step] = []
        for step in plan.steps:
            if step["kind"] != "call":
                continue
            args = []
            for name in step["args"]:
                if name in copies:
                    source = copies[name]["source"]
                    kind = "copy" if source not in inputs else "kept" if source in self.kept else "input"
                    args.append(_Arg(name, kind, source))
                elif name in inputs:
                    args.append(_Arg(name, "kept" if name in self.kept else "input", name))
                else:
                    args.append(_Arg(name, "local", name))
            outputs = list(step["outputs"])
            self.steps.append(_Step(
                position=len(self.steps), stage=step["stage"], module=step["module"],
                device=int(step["device"]),
                args=args, outputs=outputs,
                exports=[n for n in outputs if n in copied_sources],
                fetches=[n for n in outputs if n in plan.outputs],
            ))
        made_on = {name: step.device for step in self.steps for name in step.outputs}
        made_by = {name: step.position for step in self.steps for name in step.outputs}
        #: Per step: the steps whose values it reads.
        self.needs = [sorted({made_by[a.source] for a in step.args if a.source in made_by})
                      for step in self.steps]
        #: Per step and physical device: the seconds the evaluator predicts it takes there
        #: (:func:`tvm_place.evaluate.stage_costs`), which order a stream's calls; None: unknown,
        #: every step counts alike.
        self.step_times = None
        #: Per plan copy (by result name): the device of the value it copies (None: the host).
        self.copy_source_device = {name: made_on.get(c["source"]) for name, c in copies.items()}
        #: Per device: its steps' positions in the order it runs them.
        self.replicas = [tuple(int(d) for d in group) for group in replicas]
        self.sequence: dict[int, list[int]] = {}
        for step in self.steps:
            self.sequence.setdefault(step.device, []).append(step.position)
        for positions in self.sequence.values():
            last_use: dict[str, int] = {}
            for position in positions:
                step = self.steps[position]
                for name in [a.name for a in step.args] + step.outputs:
                    last_use[name] = position
            for name, position in last_use.items():
                self.steps[position].frees.append(name)
        #: Per physical device: ``(logical device, member position, group size)``.
        self.members = schedule.stream_members(self.replicas, self.sequence)

    def stream(self, depth: int) -> schedule.Stream:
        """The order of an endless stream's calls on each physical device (the one stream rule,
        which the evaluator's :func:`~tvm_place.evaluate.stream_interval` prices)."""
        times = self.step_times
        if times is None:
            times = np.ones((len(self.steps), max(self.members, default=0) + 1))
        return schedule.Stream([step.device for step in self.steps], times, self.needs, depth,
                               members=self.members)

    def shape_inputs(self, host: dict) -> dict[str, ShapeValues]:
        """The stages' shape arguments for one input (``host``: the model's inputs by name)."""
        if not self.plan.shape_args:
            return {}
        sizes = self.plan.symbol_sizes({**self.kept, **host})
        return {name: ShapeValues(sizes[d] for d in dims) for name, dims in self.plan.shape_args.items()}

    def kept_by_device(self) -> dict[int, list[str]]:
        """The bound inputs each physical device's stages read (its worker holds them)."""
        return {device: sorted({arg.source for position in self.sequence[logical]
                                for arg in self.steps[position].args if arg.kind == "kept"})
                for device, (logical, _, _) in self.members.items()}

    def modules_by_device(self) -> dict[int, dict[str, list[str]]]:
        """Per physical device, the executables its worker loads: ``{module: [stage, ...]}``
        (a replica member loads its group's first device's)."""
        loads: dict[int, dict[str, list[str]]] = {}
        for device, (logical, _, _) in self.members.items():
            for position in self.sequence[logical]:
                step = self.steps[position]
                loads.setdefault(device, {}).setdefault(step.module, []).append(step.stage)
        return loads

    def devices_used(self) -> list[int]:
        """The physical devices that run stages (replica members included)."""
        return sorted(self.members)


class _Context:
    """One input's state in the run."""

    __slots__ = ("index", "host", "host_payloads", "host_lock", "payloads", "outputs", "steps_done",
                 "received")

    def __init__(self, index: int, host: dict):
        self.index = index
        self.host = host  # model inputs (NumPy)
        self.host_payloads: dict[tuple[str, bool], Any] = {}
        self.host_lock = threading.Lock()  # one payload per model input and engine
        self.payloads: dict[str, Any] = {}  # exported values, by the name of the value
        self.outputs: dict[str, Any] = {}
        self.steps_done = 0
        #: ``(device, name)`` of every value that crossed to a device: later stages there read
        #: the received copy.
        self.received: set[tuple[int, str]] = set()


class _Run:
    def __init__(self, program: Program, workers: dict[int, Worker], items: Iterable,
                 depth: int, timeout: float, stats: StreamStats):
        self.program = program
        self.workers = workers
        self.items = iter(items)
        self.depth = max(1, int(depth))
        self.timeout = float(timeout)
        self.stats = stats
        self.cond = threading.Condition()
        self.hard = threading.Event()
        self.finished_run = threading.Event()
        self.failure: StageError | None = None
        #: Inputs from this index on are not run (a stage failed on it).
        self.stop_index: float = float("inf")
        self.contexts: dict[int, _Context] = {}
        #: The stream's order of every device's calls, and how many of them each has taken.
        self.stream = program.stream(self.depth)
        self.taken: dict[int, int] = {d: 0 for d in program.members}
        #: Per device: how many calls of each input in flight it has taken.
        self.progress: dict[int, dict[int, int]] = {d: {} for d in program.members}
        self.busy: dict[int, tuple[int, float, str] | None] = {d: None for d in program.members}
        self.submitted = 0
        self.exhausted = False
        #: ``(model input, worker)`` for every worker whose stages read that input.
        self.input_readers = sorted({
            (arg.source, device)
            for device, (logical, _, _) in program.members.items()
            for position in program.sequence[logical]
            for arg in program.steps[position].args if arg.kind == "input"
        })
        self.input_readers = [(name, workers[device]) for name, device in self.input_readers]

    # -- failures --
    def fail(self, error: StageError, hard: bool) -> None:
        with self.cond:
            if self.failure is None:
                self.failure = error
            if hard:
                self.hard.set()
            elif error.input_index is not None:
                self.stop_index = min(self.stop_index, error.input_index)
            self.cond.notify_all()

    def _stage_error(self, step: _Step, device: int, index: int, error: BaseException) -> StageError:
        worker = self.workers[device]
        name = self.program.device_names[device]
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        detail = " / ".join(lines[-3:]) if lines else type(error).__name__
        where = f"stage {step.stage!r} on {name} ({worker.label})"
        if worker.died(error):
            worker.broken = f"it died while running {step.stage!r} on input {index}"
            return WorkerDiedError(
                f"the worker of {where} died while processing input {index}: {detail}; attach "
                "workers again to go on",
                stage=step.stage, device=name, worker=worker.label, input_index=index,
            )
        return StageError(f"{where} failed on input {index}: {detail}",
                          stage=step.stage, device=name, worker=worker.label, input_index=index)

    # -- one device --
    def _next_task(self, device: int):
        """``device``'s next call in the stream's order (:class:`~tvm_place.schedule.Stream`, on
        the evaluator's stage times), once its input is in and the values it reads are made, or
        on a worker that runs its calls in submission order (``eager``: a Ray actor) once the
        calls making them are submitted (under ``cond``). None while it waits.

        Why a fixed order: an actor runs its queued calls in turn, so the order is chosen when
        the calls are submitted, before their inputs exist; the stream rule chooses it as the
        evaluator prices it (a device running stages on both sides of another's takes the next
        input's first stage before the earlier input's later stage, which would wait)."""
        logical, member, size = self.program.members[device]
        while True:
            k, position = self.stream.call(device, self.taken[device])
            # Inputs from ``last`` on never run (the stream ended, or a stage failed, before):
            # their calls are skipped, up to this device's last call of an input before it.
            last = min(self.stop_index, self.submitted if self.exhausted else float("inf"))
            if k < last:
                break
            per_input, progress = len(self.program.sequence[logical]), self.progress[device]
            if all(progress.get(i, 0) >= per_input for i in self.contexts
                   if i < last and i % size == member):
                return None  # this device is done with every input that runs
            self.taken[device] += 1
        context = self.contexts.get(k)
        if context is None:
            return None  # not read yet
        step = self.program.steps[position]
        if all(a.kind != "copy" or a.source in context.payloads for a in step.args):
            self.taken[device] += 1
            self.progress[device][k] = self.progress[device].get(k, 0) + 1
            return context, step
        return None

    def _call(self, context: _Context, step: _Step, device: int, worker: Worker) -> StageCall:
        """The call of ``step`` (outside ``cond``: making a model input's payload copies it)."""
        args = []
        for arg in step.args:
            if arg.kind == "local" or (device, arg.name) in context.received:
                args.append((arg.name, None))
            elif arg.kind == "kept":
                args.append((arg.name, Kept(arg.source)))
            elif arg.kind == "copy":
                args.append((arg.name, context.payloads[arg.source]))
            else:
                key = (arg.source, worker.remote)
                with context.host_lock:
                    if key not in context.host_payloads:
                        context.host_payloads[key] = worker.host_payload(context.host[arg.source])
                args.append((arg.name, context.host_payloads[key]))
        return StageCall(context.index, step.stage, args, step.outputs, step.exports,
                         step.fetches, step.frees)

    def _device_loop(self, device: int) -> None:
        try:
            self._drive(device)
        except BaseException as err:  # noqa: BLE001 - a bug here must end the run, not hang it
            name = self.program.device_names[device]
            self.fail(StageError(f"the executor's thread for {name} failed: {err!r}", device=name),
                      hard=True)

    def _drive(self, device: int) -> None:
        """Submit ``device``'s stage calls in the schedule's order and collect their results.

        A worker that runs its calls in submission order (``worker.eager``: a Ray actor) gets
        each call as soon as the calls making its inputs have been submitted, with references
        to their outputs: the actor starts it the moment they exist, without a round trip
        through this process per stage. Other workers get a call once its inputs are there.
        """
        worker = self.workers[device]
        ahead = MAX_AHEAD if worker.eager else 1
        pending: collections.deque = collections.deque()  # (context, step, handle, submitted)
        free_since = time.perf_counter()  # when the head of ``pending`` could start at the latest
        while True:
            task = None
            with self.cond:
                while True:
                    if self.hard.is_set() or self.finished_run.is_set():
                        return
                    if len(pending) < ahead:
                        task = self._next_task(device)
                    if task is not None or pending:
                        break
                    self.cond.wait(POLL)
                if task is not None:
                    context, step = task
            if task is not None:
                try:
                    call = self._call(context, step, device, worker)
                    submitted = time.perf_counter()
                    handle = worker.submit(call)
                except BaseException as err:  # noqa: BLE001 - reported to the caller, with context
                    self._failed(step, device, context, err)
                    continue
                with self.cond:
                    context.received.update((device, name) for name, payload in call.args
                                            if payload is not None)
                    if worker.eager:
                        context.payloads.update(handle.payloads)
                        self.cond.notify_all()
                    if not pending:
                        self.busy[device] = (context.index, time.monotonic(), step.stage)
                        free_since = submitted
                pending.append((context, step, handle, submitted))
                continue  # submit what else can go before waiting
            context, step, handle, submitted = pending[0]
            try:
                result = worker.result(handle, POLL)
            except BaseException as err:  # noqa: BLE001 - reported to the caller, with context
                pending.popleft()
                self._failed(step, device, context, err)
                continue
            if result is None:
                continue
            pending.popleft()
            ended = time.perf_counter()
            started = max(submitted, free_since)
            with self.cond:
                if pending:
                    head = pending[0]
                    self.busy[device] = (head[0].index, time.monotonic(), head[1].stage)
                else:
                    self.busy[device] = None
                # The Gantt from the worker's own clock: a queued call (Ray) starts when its
                # inputs exist, which the driver cannot see.
                offset = self.stats.start - self.stats.epoch
                self.stats.runs.append((device, context.index, step.stage,
                                        result.span[0] + offset, result.span[1] + offset))
                if all(arg.kind != "copy" for arg in step.args):  # no wait for another device
                    own = result.compute + sum(result.imports.values()) \
                        + sum(result.exports.values()) + sum(result.fetches.values())
                    self.stats.call_overheads.append(max(0.0, ended - started - own))
                self._record(step, device, context, result)
                if not worker.eager:
                    context.payloads.update(result.payloads)
                context.outputs.update(result.outputs)
                context.steps_done += 1
                self.cond.notify_all()
            free_since = ended

    def _failed(self, step: _Step, device: int, context: _Context, err: BaseException) -> None:
        worker = self.workers[device]
        if worker.propagated(err):
            return  # a stage this call waited for failed: that stage's own device reports it
        error = self._stage_error(step, device, context.index, err)
        self.fail(error, hard=isinstance(error, WorkerDiedError))

    def _record(self, step: _Step, device: int, context: _Context, result) -> None:
        stats, program = self.stats, self.program
        stats.compute.setdefault(step.stage, []).append(result.compute)
        logical = program.members[device][0]
        for arg in step.args:
            if arg.name not in result.imports:
                continue
            size = result.sizes.get(arg.name, 0)
            if arg.kind == "input":
                stats._record(stats.inputs, arg.name, None, logical, size, import_=result.imports[arg.name])
            else:
                stats._record(stats.copies, arg.name, program.copy_source_device[arg.name], logical,
                              size, import_=result.imports[arg.name])
        for name, seconds in result.exports.items():
            # The sender pays once per value, however many devices receive it.
            for copy_name, copy in program.copies.items():
                if copy["source"] == name:
                    stats._record(stats.copies, copy_name, logical, int(copy["device"]),
                                  result.sizes.get(name, 0), export=seconds)
                    seconds = 0.0
        for name, seconds in result.fetches.items():
            stats._record(stats.outputs, name, logical, None, nbytes(result.outputs[name]),
                          export=seconds)

    # -- the driver --
    def _admit(self) -> None:
        """Read inputs while fewer than ``depth`` are in flight, and hand each to the workers
        that read it (outside ``cond``: the devices keep working on earlier inputs meanwhile)."""
        names = self.program.inputs
        while True:
            with self.cond:
                if (self.exhausted or len(self.contexts) >= self.depth
                        or self.submitted >= self.stop_index or self.hard.is_set()):
                    return
                index = self.submitted
            try:
                item = next(self.items)
            except StopIteration:
                self.exhausted = True
                return
            except Exception as err:  # noqa: BLE001 - the caller's iterable failed
                self.exhausted = True
                self.fail(StageError(f"reading input {index} of the stream failed: {err!r}",
                                     input_index=index), hard=False)
                return
            submitted = time.perf_counter()
            try:
                context = _Context(index, dict(zip(names, _as_arrays(item, len(names), index))))
                context.host.update(self.program.shape_inputs(context.host))
            except StageError as err:
                self.exhausted = True
                self.fail(err, hard=False)
                return
            for name, worker in self.input_readers:
                key = (name, worker.remote)
                if key not in context.host_payloads:
                    context.host_payloads[key] = worker.host_payload(context.host[name])
            with self.cond:
                self.stats.submitted.append(submitted)
                self.contexts[index] = context
                self.submitted = index + 1
                self.cond.notify_all()

    def _watch(self) -> None:
        """Fail the run on a call that outlasts the timeout or a worker known dead."""
        now = time.monotonic()
        # Oldest first: a call waiting for a frozen worker's output times out after that worker's.
        for device, busy in sorted(((d, b) for d, b in self.busy.items() if b is not None),
                                   key=lambda item: item[1][1]):
            index, since, stage = busy
            worker = self.workers[device]
            name = self.program.device_names[device]
            timed_out = now - since > self.timeout
            if not timed_out and worker.alive() is not False:
                continue
            where = f"stage {stage!r} on {name} ({worker.label})"
            if timed_out:
                worker.abandon(f"a call on it did not return within {self.timeout:g} s")
                error = StageTimeoutError(
                    f"{where} did not finish input {index} within the timeout of "
                    f"{self.timeout:g} s (is the worker stopped or frozen?); the worker was "
                    "abandoned: attach workers again to go on",
                    stage=stage, device=name, worker=worker.label, input_index=index)
            else:
                error = WorkerDiedError(
                    f"the worker of {where} died while processing input {index} "
                    f"({worker.broken}); attach workers again to go on",
                    stage=stage, device=name, worker=worker.label, input_index=index)
            self.fail(error, hard=True)
            return

    def results(self):
        """Yield ``(index, context)`` in input order; raise the run's failure at the end."""
        threads = [threading.Thread(target=self._device_loop, args=(device,), daemon=True,
                                    name=f"tvm-place device {self.program.device_names[device]}")
                   for device in self.program.members]
        self.stats.start, self.stats.epoch = time.perf_counter(), time.time()
        # The device threads on every core of this process, not the one TVM narrowed this thread
        # to once it ran a kernel: driving Ray actors, they took that core from the device that
        # computes on it (a worker of this process pins its thread to its device's cores).
        with all_cores():
            for thread in threads:
                thread.start()
        next_index = 0
        total_steps = len(self.program.steps)
        try:
            while True:
                self._admit()
                with self.cond:
                    context = self.contexts.get(next_index)
                    ready = context is not None and context.steps_done == total_steps
                    if not ready:
                        if self.hard.is_set() or (self.failure is not None and next_index >= self.stop_index):
                            raise self.failure
                        if self.exhausted and next_index >= self.submitted:
                            if self.failure is not None:
                                raise self.failure
                            return
                        self.cond.wait(POLL)
                        self._watch()
                        continue
                    del self.contexts[next_index]
                    for progress in self.progress.values():
                        progress.pop(next_index, None)
                self.stats.finished.append(time.perf_counter())
                yield next_index, context  # its values on the workers were freed stage by stage
                next_index += 1
        except KeyboardInterrupt:
            self.hard.set()
            raise RunInterrupted(
                f"interrupted: {next_index} of {self.submitted} submitted inputs completed; their "
                "outputs are in this exception's .completed"
            ) from None
        finally:
            self.stats.end = time.perf_counter()
            self.finished_run.set()
            self.hard.set()
            with self.cond:
                self.cond.notify_all()
                left = list(self.contexts)
            if left:  # inputs a failure left half done
                for worker in self.workers.values():
                    if worker.broken is None:
                        worker.drop(left)
            deadline = time.monotonic() + 1.0
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))


def _as_arrays(item, count: int, index: int) -> list[np.ndarray]:
    if count == 1 and not isinstance(item, (tuple, list)):
        item = (item,)
    if not isinstance(item, (tuple, list)) or len(item) != count:
        got = len(item) if isinstance(item, (tuple, list)) else 1
        raise StageError(
            f"input {index} of the stream has {got} arrays; the model takes {count} "
            "(give each item as a tuple of arrays, or one array when the model has one input)",
            input_index=index,
        )
    return [host_array(value) for value in item]


def host_array(value) -> np.ndarray:
    """A model input as a NumPy array on the host: NumPy as is; torch tensors, TVM tensors and
    other DLPack producers in host memory without a copy (``np.from_dlpack``); anything else
    through ``.numpy()`` or ``np.asarray``."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch: the gradient graph does not cross into TVM
        value = value.detach()
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass  # not in host memory (a GPU tensor): copied below
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


def run(program: Program, workers: dict[int, Worker], items: Iterable, depth: int,
        timeout: float, stats: StreamStats, on_result=None, as_numpy: bool = True) -> list:
    """Run ``items`` through the program; outputs (a tuple when the model returns several) in
    input order, as NumPy (``as_numpy``) or as the workers gave them. On a failure the error's
    ``completed`` holds what finished."""
    plan = program.plan
    stats.depth = depth
    stats.stage_device = {step.stage: step.device for step in program.steps}
    stats.worker_labels = {d: w.label for d, w in workers.items()}
    stats.replicas = program.replicas
    results: list = []
    active = _Run(program, workers, items, depth, timeout, stats)
    finished = active.results()
    try:
        for _, context in finished:
            values = []
            for name in plan.outputs:
                value = context.outputs[name] if name in context.outputs else context.host[name]
                if as_numpy:
                    value = to_numpy(value)
                values.append(value)
            output = tuple(values) if plan.output_is_tuple else values[0]
            results.append(output)
            if on_result is not None:
                on_result(len(results) - 1, output)
    except StageError as err:
        err.completed = results
        err.num_inputs = active.submitted
        if err.input_index is not None:
            err.args = (f"{err.args[0]} ({len(results)} of {active.submitted} submitted inputs "
                        "completed before it; their outputs are in this error's .completed)",)
        raise
    except KeyboardInterrupt as err:  # wherever Ctrl-C lands: in the run or in on_result
        interrupted = err if isinstance(err, RunInterrupted) else RunInterrupted(
            f"interrupted: {len(results)} of {active.submitted} submitted inputs completed; their "
            "outputs are in this exception's .completed")
        interrupted.completed = results
        interrupted.num_inputs = active.submitted
        raise interrupted from None
    finally:
        finished.close()  # stops the device threads if the loop above left early
    return results
