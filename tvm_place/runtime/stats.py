"""What a run measured: per stage, per copy, per input (:class:`StreamStats`), read by
``PlacedModule.compare`` and ``rebalance`` (:mod:`tvm_place.runtime.feedback`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


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
    ``finished``: per input, when it entered the run and when its outputs were ready; ``runs``:
    which device started which stage of which input, in order.
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
    #: ``time.time()`` at ``start``: how the workers' clocks (:class:`StageResult` ``span``)
    #: map onto this one.
    epoch: float = 0.0
    #: ``(device, input index, stage, start, end)`` of every stage call as its worker ran it
    #: (``perf_counter`` seconds of this process; ``device`` is the physical device: a replica
    #: group's member that ran it): the run's Gantt chart (:meth:`gantt`).
    runs: list[tuple[int, int, str, float, float]] = field(default_factory=list)
    #: Per stage call: the seconds the driver waited beyond what the worker reported spending
    #: (dispatch, result hand-back, scheduling: the cost of a call itself).
    call_overheads: list[float] = field(default_factory=list)
    #: Replica groups of the run (device indices, the first holding the stages).
    replicas: list[tuple[int, ...]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def device_order(self, index: int = 0) -> dict[int, list[str]]:
        """Per device, the stages it ran for input ``index``, in the order it ran them."""
        order: dict[int, list[str]] = {}
        for device, k, stage, _, _ in sorted(self.runs, key=lambda run: run[3]):
            if k == index:
                order.setdefault(device, []).append(stage)
        return order

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
        """Seconds per input in steady state: the median time between results ``g`` apart,
        divided by ``g``, and never less than the busiest device's measured load per input (no
        pipeline outputs faster than its slowest device works).

        ``g`` is the number of inputs in flight (``depth``), or the largest replica group if
        larger: results come in bursts of up to that many (a group's members finish together; a
        device running several stages of inputs in flight finishes them in turn). The median gap
        between consecutive results read 165-174 ms per input where each device's load was
        243-475 ms (a BERT layer's stream on two CPUs). In a short stream the drain (a device
        whose stages are done finishes the rest faster) still pulls the median below the period:
        hence the floor."""
        group = max([self.depth, *(len(g) for g in self.replicas)], default=1) or 1
        group = min(group, max(1, len(self.finished) - 1))
        if len(self.finished) <= group:
            return self.wall_seconds / max(1, len(self.finished))
        finished = np.asarray(self.finished)
        median = float(np.median(finished[group:] - finished[:-group])) / group
        return max(median, float(self.device_times()["load"].max(initial=0.0)))

    @property
    def latencies(self) -> np.ndarray:
        """Per input: from entering the pipeline to its outputs on the host (queueing included)."""
        n = len(self.finished)
        return np.array(self.finished[:n]) - np.array(self.submitted[:n])

    @property
    def call_overhead(self) -> float:
        """Median seconds a stage call cost beyond the worker's own time (see ``call_overheads``)."""
        return float(np.median(self.call_overheads)) if self.call_overheads else 0.0

    def stage_seconds(self, stage: str) -> float:
        times = self.compute.get(stage, [])
        return float(np.median(times)) if times else 0.0

    def device_times(self) -> dict[str, np.ndarray]:
        """Median seconds per input on each device: compute, copies in, copies out, and load
        (their sum, the evaluator's per-device load); model inputs/outputs counted apart. A
        replica group's members each carry ``1 / len(group)`` of its times."""
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
        # A replica group's members share its inputs in turn: each carries 1/len of the group's
        # per-input times (the evaluator's rule).
        for times in (compute, transfer_in, transfer_out, host_in, host_out):
            for group in self.replicas:
                times[list(group)] = times[group[0]] / len(group)
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

    def gantt(self) -> str:
        """The run's Gantt chart as text: per device its calls in the order they started (input,
        stage, start and end in ms from the run's start) and how long the device sat idle
        before each (waiting for a value from another device, or for an input to enter)."""
        lines = []
        for device in sorted({run[0] for run in self.runs}):
            lines.append(f"{self.device_names[device]}:")
            free = 0.0
            for _, k, stage, start, end in sorted((run for run in self.runs if run[0] == device),
                                                  key=lambda run: run[3]):
                start, end = (start - self.start) * 1e3, (end - self.start) * 1e3
                lines.append(f"  input {k:<4} {stage:<18} {start:9.1f} - {end:9.1f} ms  "
                             f"idle before {max(0.0, start - free):8.1f} ms")
                free = end
        return "\n".join(lines)

    def format(self) -> str:
        """A plain-text table of what was measured."""
        lines = [
            f"stream of {self.num_inputs} inputs (queue depth {self.depth}): "
            f"{self.wall_seconds:.3f} s, {self.throughput:.2f} inputs/s overall, steady-state "
            f"{1.0 / self.interval if self.interval > 0 else 0.0:.2f} inputs/s "
            f"({self.interval * 1e3:.1f} ms per input); latency median "
            f"{float(np.median(self.latencies)) * 1e3 if self.num_inputs else 0.0:.1f} ms; "
            f"per stage call {self.call_overhead * 1e3:.2f} ms beyond the worker's own time (median)",
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
