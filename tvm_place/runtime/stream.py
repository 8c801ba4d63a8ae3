"""Throughput mode: a stream of inputs through the stages, every stage busy at once.

The plan's stage calls form a linear pipeline in plan order (a topological order, so every value
a stage reads was made by an earlier one). One thread per stage takes an input's values from the
bounded queue before it, runs the stage on its device's worker, and passes them on; queues are
FIFO, so results leave in input order. A value that crosses devices is copied explicitly: the
producing stage's thread exports it (for a worker in another process: downloads it to this host)
right after computing it, the consuming stage's thread uploads it to its own worker; both halves
are timed and counted per plan copy. Model inputs are uploaded by the first stage that reads them,
model outputs downloaded by the stage that makes them.

Faults: a stage that raises, a worker that dies, or a call that outlasts ``timeout`` ends the run
with a :class:`~tvm_place.runtime.errors.StageError` naming the stage, its device and worker, and
the input index; the main thread checks every ``POLL`` seconds, so nothing waits forever. Every
input before the failing one is finished and returned (``error.completed``) when the stages after
the failure can still run; a timeout or dead worker stops at once, keeping what had finished.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import StageError, StageTimeoutError, WorkerDiedError
from .workers import Worker, nbytes

#: Seconds between the checks of every blocking wait (abort, watchdog, worker liveness).
POLL = 0.05

_END = object()


@dataclass
class _Arg:
    name: str  # the name the stage reads
    kind: str  # "local" (made on this device), "input" (a model input), "copy" (from another device)
    source: str  # the value copied (for "input"/"copy"), else ``name``


@dataclass
class _Step:
    position: int
    stage: str
    device: int
    args: list[_Arg]
    outputs: list[str]
    exports: list[str]  # outputs other devices read: exported right after the stage
    fetches: list[str]  # outputs of the model: downloaded to the host


class Program:
    """A :class:`~tvm_place.passes.build.StagePlan` as pipeline steps."""

    def __init__(self, plan, device_names: Sequence[str]):
        self.plan = plan
        self.device_names = list(device_names)
        copies = {s["result"]: s for s in plan.steps if s["kind"] == "copy"}
        inputs = set(plan.inputs)
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
                    args.append(_Arg(name, "input" if source in inputs else "copy", source))
                elif name in inputs:
                    args.append(_Arg(name, "input", name))
                else:
                    args.append(_Arg(name, "local", name))
            outputs = list(step["outputs"])
            self.steps.append(
                _Step(
                    position=len(self.steps),
                    stage=step["stage"],
                    device=int(step["device"]),
                    args=args,
                    outputs=outputs,
                    exports=[n for n in outputs if n in copied_sources],
                    fetches=[n for n in outputs if n in plan.outputs],
                )
            )

        made_on = {name: step.device for step in self.steps for name in step.outputs}
        #: Per plan copy (by result name): the device of the value it copies (None: the host).
        self.copy_source_device = {name: made_on.get(c["source"]) for name, c in copies.items()}

    def devices_used(self) -> list[int]:
        return sorted({step.device for step in self.steps})


# -- statistics -----------------------------------------------------------------------------


@dataclass
class CopyRecord:
    """One value crossing devices (or the host boundary), for every input of a run."""

    name: str
    source_device: int | None  # None: the host (a model input)
    device: int | None  # destination; None: the host (a model output)
    bytes: int = 0
    export_seconds: list[float] = field(default_factory=list)  # on the sender's worker
    import_seconds: list[float] = field(default_factory=list)  # on the receiver's worker

    @property
    def count(self) -> int:
        return max(len(self.export_seconds), len(self.import_seconds))

    @property
    def seconds(self) -> float:
        """Median seconds per input, both halves together."""
        def median(xs):
            return float(np.median(xs)) if xs else 0.0

        return median(self.export_seconds) + median(self.import_seconds)


@dataclass
class StreamStats:
    """Measurements of one run: per stage, per copy, per input; read by ``PlacedModule.compare``.

    ``compute[stage]``: seconds of each call of that stage (the worker's call as this process
    sees it, RPC round trips included); ``copies``: plan copies between devices; ``inputs`` /
    ``outputs``: uploads of model inputs and downloads of model outputs; ``submitted`` /
    ``finished``: per input, when it entered the first queue and when its outputs were ready.
    """

    device_names: list[str]
    stage_device: dict[str, int] = field(default_factory=dict)
    worker_labels: dict[int, str] = field(default_factory=dict)
    compute: dict[str, list[float]] = field(default_factory=dict)
    copies: dict[str, CopyRecord] = field(default_factory=dict)
    inputs: dict[str, CopyRecord] = field(default_factory=dict)
    outputs: dict[str, CopyRecord] = field(default_factory=dict)
    submitted: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    depth: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_inputs(self) -> int:
        return len(self.finished)

    @property
    def wall_seconds(self) -> float:
        return self.end - self.start

    @property
    def throughput(self) -> float:
        """Inputs per second over the whole run (fill and drain of the pipeline included)."""
        return self.num_inputs / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def interval(self) -> float:
        """Median time between two consecutive results: the steady-state time per input."""
        if len(self.finished) < 2:
            return self.wall_seconds
        return float(np.median(np.diff(self.finished)))

    @property
    def latencies(self) -> np.ndarray:
        """Per input: from entering the pipeline to its outputs on the host (queueing included)."""
        n = len(self.finished)
        return np.array(self.finished[:n]) - np.array(self.submitted[:n])

    def stage_seconds(self, stage: str) -> float:
        times = self.compute.get(stage, [])
        return float(np.median(times)) if times else 0.0

    def device_times(self) -> dict[str, np.ndarray]:
        """Median seconds per input on each device: compute, copies in, copies out, and load
        (their sum, the evaluator's per-device load); model inputs/outputs counted apart."""
        num_devices = len(self.device_names)
        compute, transfer_in, transfer_out = (np.zeros(num_devices) for _ in range(3))
        host_in, host_out = np.zeros(num_devices), np.zeros(num_devices)
        for stage, device in self.stage_device.items():
            compute[device] += self.stage_seconds(stage)
        for record in self.copies.values():
            if record.import_seconds and record.device is not None:
                transfer_in[record.device] += float(np.median(record.import_seconds))
            if record.export_seconds and record.source_device is not None:
                transfer_out[record.source_device] += float(np.median(record.export_seconds))
        # One export serves every destination: counted once on the sender (the records share it).
        for record in self.inputs.values():
            if record.import_seconds and record.device is not None:
                host_in[record.device] += float(np.median(record.import_seconds))
        for record in self.outputs.values():
            if record.export_seconds and record.source_device is not None:
                host_out[record.source_device] += float(np.median(record.export_seconds))
        return {
            "compute": compute,
            "transfer_in": transfer_in,
            "transfer_out": transfer_out,
            "load": compute + transfer_in + transfer_out,
            "host_in": host_in,
            "host_out": host_out,
        }

    @property
    def max_stage_seconds(self) -> float:
        """The measured max-stage time: the largest per-device load (compute and copies)."""
        return float(self.device_times()["load"].max())

    def format(self) -> str:
        """A plain-text table of what was measured."""
        lines = [
            f"stream of {self.num_inputs} inputs (queue depth {self.depth}): "
            f"{self.wall_seconds:.3f} s, {self.throughput:.2f} inputs/s overall, steady-state "
            f"{1.0 / self.interval if self.interval > 0 else 0.0:.2f} inputs/s "
            f"({self.interval * 1e3:.1f} ms per input); latency median "
            f"{float(np.median(self.latencies)) * 1e3 if self.num_inputs else 0.0:.1f} ms",
            f"  {'stage':<16} {'device':<7} {'calls':>5} {'median':>10} {'total':>9}  worker",
        ]
        for stage, device in self.stage_device.items():
            times = self.compute.get(stage, [])
            lines.append(
                f"  {stage:<16} {self.device_names[device]:<7} {len(times):>5} "
                f"{self.stage_seconds(stage) * 1e3:>7.2f} ms {sum(times):>7.3f} s  "
                f"{self.worker_labels.get(device, '-')}"
            )
        if self.copies or self.inputs or self.outputs:
            lines.append(
                f"  {'copy':<24} {'from':>6} {'to':>6} {'count':>5} {'bytes':>10} "
                f"{'send':>9} {'receive':>9}"
            )

        def name(device):
            return "host" if device is None else self.device_names[device]

        for title, records in (("", self.copies), ("input ", self.inputs), ("output ", self.outputs)):
            for record in records.values():
                send = float(np.median(record.export_seconds)) if record.export_seconds else 0.0
                receive = float(np.median(record.import_seconds)) if record.import_seconds else 0.0
                lines.append(
                    f"  {title + record.name:<24} {name(record.source_device):>6} "
                    f"{name(record.device):>6} {record.count:>5} {record.bytes:>10} "
                    f"{send * 1e3:>6.2f} ms {receive * 1e3:>6.2f} ms"
                )
        return "\n".join(lines)

    # -- recording (called from the stage threads) --
    def _record(self, table: dict, name: str, source, device, size: int, export=None, import_=None):
        with self._lock:
            record = table.get(name)
            if record is None:
                record = table[name] = CopyRecord(name, source, device, size)
            if export is not None:
                record.export_seconds.append(export)
            if import_ is not None:
                record.import_seconds.append(import_)


# -- the run --------------------------------------------------------------------------------


class _Context:
    """One input's values as it moves down the pipeline."""

    __slots__ = ("index", "host", "values", "payload", "outputs")

    def __init__(self, index: int, host: dict):
        self.index = index
        self.host = host  # model inputs (NumPy)
        self.values: dict[str, Any] = {}  # tensors on the worker of the device that made them
        self.payload: dict[str, Any] = {}  # exported values, ready for another worker
        self.outputs: dict[str, np.ndarray] = {}


class _Run:
    """One run. Threads: a feeder (position -1), one per stage (0..S-1); the caller collects.

    A stage that fails on input ``k`` stops itself, the stages before it and the feeder, and
    sends the end marker on: the stages after it finish every input before ``k``, so the
    caller receives all of them (in order) before the error. A timeout or a dead worker seen by
    the watchdog stops everything at once (``hard``), keeping what already finished.
    """

    def __init__(self, program: Program, workers: dict[int, Worker], items: Iterable,
                 depth: int, timeout: float, stats: StreamStats):
        self.program = program
        self.workers = workers
        self.items = items
        self.depth = max(1, int(depth))
        self.timeout = float(timeout)
        self.stats = stats
        self.hard = threading.Event()
        #: Threads at positions up to this one take no more inputs (-2: none stopped).
        self.stop_at = -2
        self.failure: StageError | None = None
        self._failure_lock = threading.Lock()
        num_steps = len(program.steps)
        self.queues = [queue.Queue(maxsize=self.depth) for _ in range(num_steps + 1)]
        #: Per step: ``(input index, since, what)`` while it works on an input, else None.
        self.busy: list[tuple[int, float, str] | None] = [None] * num_steps
        self.submitted = 0
        self._dead_since: dict[int, float] = {}

    # -- helpers used by the threads --
    def _stopped(self, position: int) -> bool:
        return self.hard.is_set() or position <= self.stop_at

    def _put(self, q: queue.Queue, item, position: int, forced: bool = False) -> bool:
        while not (self.hard.is_set() if forced else self._stopped(position)):
            try:
                q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue, position: int):
        while not self._stopped(position):
            try:
                return q.get(timeout=POLL)
            except queue.Empty:
                continue
        return _END

    def fail(self, error: StageError, position: int | None = None) -> None:
        """Record the run's first failure; ``position`` None: stop everything (hard)."""
        with self._failure_lock:
            if self.failure is None:
                self.failure = error
            if position is None:
                self.hard.set()
            else:
                self.stop_at = max(self.stop_at, position)

    def _stage_error(self, step: _Step, index: int, error: BaseException) -> StageError:
        worker = self.workers[step.device]
        device = self.program.device_names[step.device]
        if isinstance(error, StageError):
            return error
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        detail = " / ".join(lines[-3:]) if lines else type(error).__name__
        where = f"stage {step.stage!r} on {device} ({worker.label})"
        if worker.died(error):
            worker.broken = f"it died while running {step.stage!r} on input {index}"
            tail = ""
            server = getattr(worker, "server", None)
            if server is not None and server.log_tail():
                tail = f"; its log: {server.log_tail(3)}"
            return WorkerDiedError(
                f"the worker of {where} died while processing input {index}: {detail}{tail}",
                stage=step.stage, device=device, worker=worker.label, input_index=index,
            )
        return StageError(
            f"{where} failed on input {index}: {detail}",
            stage=step.stage, device=device, worker=worker.label, input_index=index,
        )

    # -- the feeder --
    def _feed(self) -> None:
        names = self.program.plan.inputs
        first = self.queues[0]
        index = -1
        try:
            for index, item in enumerate(self.items):
                if self._stopped(-1):
                    return
                host = dict(zip(names, _as_arrays(item, len(names), index)))
                self.stats.submitted.append(time.perf_counter())
                self.submitted = index + 1
                if not self._put(first, _Context(index, host), -1):
                    return
        except StageError as err:
            self.fail(err, -1)
        except Exception as err:  # noqa: BLE001 - the caller's iterable failed
            self.fail(StageError(f"reading input {index + 1} of the stream failed: {err!r}",
                                 input_index=index + 1), -1)
        self._put(first, _END, -1, forced=True)

    # -- one stage --
    def _stage(self, position: int) -> None:
        step = self.program.steps[position]
        worker = self.workers[step.device]
        inbox, outbox = self.queues[position], self.queues[position + 1]
        while True:
            context = self._get(inbox, position)
            if context is _END:
                break
            try:
                self._lock(worker, step, context.index)
                try:
                    self._execute(step, worker, context)
                finally:
                    worker.lock.release()
            except BaseException as err:  # noqa: BLE001 - reported to the caller, with context
                self.fail(self._stage_error(step, context.index, err), position)
                break
            finally:
                self.busy[position] = None
            if not self._put(outbox, context, position):
                break
        # Let the stages after this one finish what they hold, then stop.
        self._put(outbox, _END, position, forced=True)

    def _lock(self, worker: Worker, step: _Step, index: int) -> None:
        self.busy[step.position] = (index, time.monotonic(), "waiting for its worker")
        while not worker.lock.acquire(timeout=POLL):
            if self.hard.is_set():
                raise StageError("run aborted", stage=step.stage, input_index=index)
        if worker.broken is not None:
            worker.lock.release()
            raise WorkerDiedError(
                f"the worker of stage {step.stage!r} on {self.program.device_names[step.device]} "
                f"({worker.label}) cannot be used: {worker.broken}; attach workers again",
                stage=step.stage, device=self.program.device_names[step.device],
                worker=worker.label, input_index=index,
            )

    def _execute(self, step: _Step, worker: Worker, context: _Context) -> None:
        stats, clock, index = self.stats, time.perf_counter, context.index
        self.busy[step.position] = (index, time.monotonic(), "copying its inputs")
        args = []
        for arg in step.args:
            if arg.name in context.values:
                args.append(context.values[arg.name])
                continue
            if arg.kind == "local":
                raise StageError(f"stage {step.stage!r} reads {arg.name!r}, which no stage made")
            if arg.kind == "input":
                value = context.host[arg.source]
                start = clock()
                tensor = worker.upload(value)
                stats._record(stats.inputs, arg.name, None, step.device, nbytes(value),
                              import_=clock() - start)
            else:
                payload = context.payload[arg.source]
                start = clock()
                tensor = worker.upload(payload)
                stats._record(stats.copies, arg.name, self.program.copy_source_device[arg.name],
                              step.device, nbytes(payload), import_=clock() - start)
            context.values[arg.name] = tensor
            args.append(tensor)
        self.busy[step.position] = (index, time.monotonic(), "computing")
        start = clock()
        results = worker.run(step.stage, args)
        elapsed = clock() - start
        with stats._lock:
            stats.compute.setdefault(step.stage, []).append(elapsed)
        if len(results) != len(step.outputs):
            raise StageError(
                f"stage {step.stage!r} returned {len(results)} values, the plan expects "
                f"{len(step.outputs)}", stage=step.stage, input_index=index,
            )
        for name, result in zip(step.outputs, results):
            context.values[name] = result
        self.busy[step.position] = (index, time.monotonic(), "sending its outputs")
        for name in step.exports:
            start = clock()
            payload = worker.export(context.values[name])
            seconds = clock() - start
            context.payload[name] = payload
            size = nbytes(context.values[name])
            # The sender pays once per value, however many devices receive it.
            for copy_name, copy in self.program.copies.items():
                if copy["source"] == name:
                    stats._record(stats.copies, copy_name, step.device, int(copy["device"]), size,
                                  export=seconds)
                    seconds = 0.0
        for name in step.fetches:
            start = clock()
            context.outputs[name] = worker.download(context.values[name])
            stats._record(stats.outputs, name, step.device, None, nbytes(context.outputs[name]),
                          export=clock() - start)

    # -- the coordinator --
    def results(self):
        """Yield ``(index, context)`` in input order; raise the run's failure at the end."""
        threads = [
            threading.Thread(target=self._stage, args=(position,), daemon=True,
                             name=f"tvm-place stage {step.stage}")
            for position, step in enumerate(self.program.steps)
        ]
        threads.append(threading.Thread(target=self._feed, daemon=True, name="tvm-place feeder"))
        self.stats.start = time.perf_counter()
        for thread in threads:
            thread.start()
        last = self.queues[-1]
        try:
            while True:
                if self.hard.is_set():  # keep what finished, then stop
                    while True:
                        try:
                            context = last.get_nowait()
                        except queue.Empty:
                            break
                        if context is not _END:
                            self.stats.finished.append(time.perf_counter())
                            yield context.index, context
                    raise self.failure
                try:
                    context = last.get(timeout=POLL)
                except queue.Empty:
                    self._watch()
                    continue
                if context is _END:
                    if self.failure is not None:
                        raise self.failure
                    break
                self.stats.finished.append(time.perf_counter())
                yield context.index, context
        finally:
            self.stats.end = time.perf_counter()
            self.hard.set()
            deadline = time.monotonic() + 1.0
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _watch(self) -> None:
        """Fail the run on a stage that outlasts the timeout or a worker known to be dead."""
        now = time.monotonic()
        for position, busy in enumerate(self.busy):
            if busy is None:
                continue
            index, since, what = busy
            step = self.program.steps[position]
            worker = self.workers[step.device]
            device = self.program.device_names[step.device]
            if worker.alive() is False:
                # The call itself reports a dead worker within milliseconds; this is the backstop.
                first_seen = self._dead_since.setdefault(position, now)
                if now - first_seen > 1.0:
                    worker.broken = worker.broken or f"its process ended while running {step.stage!r}"
                    self.fail(WorkerDiedError(
                        f"the worker of stage {step.stage!r} on {device} ({worker.label}) died "
                        f"while processing input {index} ({what})",
                        stage=step.stage, device=device, worker=worker.label, input_index=index,
                    ))
                    return
            if now - since > self.timeout:
                worker.abandon(f"a call on it did not return within {self.timeout:g} s")
                self.fail(StageTimeoutError(
                    f"stage {step.stage!r} on {device} ({worker.label}) spent more than "
                    f"{self.timeout:g} s {what} for input {index}; the worker was abandoned",
                    stage=step.stage, device=device, worker=worker.label, input_index=index,
                ))
                return


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
    arrays = []
    for value in item:
        if isinstance(value, np.ndarray):
            arrays.append(value)
        elif hasattr(value, "numpy"):
            arrays.append(value.numpy())
        else:
            arrays.append(np.asarray(value))
    return arrays


def run_stream(program: Program, workers: dict[int, Worker], items: Iterable, depth: int,
               timeout: float, stats: StreamStats, on_result=None) -> list:
    """Run ``items`` through the pipeline; outputs (NumPy, a tuple when the model returns
    several) in input order. On a failure the error's ``completed`` holds what finished."""
    plan = program.plan
    stats.depth = depth
    stats.stage_device = {step.stage: step.device for step in program.steps}
    stats.worker_labels = {d: w.label for d, w in workers.items()}
    results: list = []
    run = _Run(program, workers, items, depth, timeout, stats)
    try:
        for index, context in run.results():
            values = []
            for name in plan.outputs:
                if name in context.outputs:
                    values.append(context.outputs[name])
                else:  # a model input returned as is
                    values.append(np.asarray(context.host[name]))
            output = tuple(values) if plan.output_is_tuple else values[0]
            results.append(output)
            if on_result is not None:
                on_result(index, output)
    except StageError as err:
        err.completed = results
        err.num_inputs = run.submitted
        if err.input_index is not None:
            message = (f"{err.args[0]} ({len(results)} of {run.submitted} submitted inputs "
                       "completed before it; their outputs are in this error's .completed)")
            err.args = (message,)
        raise
    return results
