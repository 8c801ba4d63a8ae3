"""Calibration: a device's profile fitted to micro-benchmarks run on that device.

The analytical model's profile figures (peak GFLOP/s, bandwidth, efficiencies, launch overhead)
are datasheet guesses; on the development machine's CPU they were 1.6x to 6.4x off on held-out
models (docs/benchmarks.md, table 4). :func:`calibrate` measures them instead: a few kernels per
operator class (:data:`tvm_place.schemas.OPERATOR_CLASSES`), each a one-operator Relax module
lowered by tvm-place's own pipeline (so its FLOPs and bytes are counted as a model's operators
are) and timed like the measured model times kernels (:func:`tvm_place.cost.measured.time_kernel`),
and copies of 1 KB to 64 MB between host and device. The fit (:func:`fit_profile`):

- launch overhead: the time of the smallest kernel (one element);
- peak GFLOP/s and bandwidth: the best any benchmark reached (so every efficiency is at most 1);
- per class, the compute and memory efficiencies of the roofline
  ``launch + max(F / (peak * e_c), B / (bandwidth * e_m))`` minimising the mean absolute log
  error over the class's benchmarks (a grid in log space, refined twice), ties broken towards 1
  (a class no benchmark shows bound by a resource is not slowed by it). Absolute, not squared:
  like a median, the fit follows most of a class's kernels, not the few TVM's default schedules
  run far faster (depthwise convolutions reach 20-30x a dense one's GFLOP/s on the development
  machine's CPU; a squared fit doubled the dense ones' predicted speed for them). The profile's
  own efficiencies are the same fit over all benchmarks, for classes the time limit left out;
- the link: latency + bytes / bandwidth fitted to the copies (:func:`tvm_place.cost.links.fit_link`).

The result is a device file (``tvm-place calibrate --out FILE``; ``--devices FILE`` reads it), so a
profile measured on one machine can be kept and shared and used by the analytical model anywhere.
:class:`CalibratedCostModel` (``cost_model="calibrated"``) calibrates each device present on this
machine once, caches the file per device (target, CPU model or GPU name, threads, TVM version)
and prices operators analytically with it; a device this machine lacks is priced by its profile
as written. Time: one build and timing per benchmark (under a second each on the development
machine's CPU), bounded by the time limit, checked between benchmarks.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidTargetError, TvmPlaceError
from ..graph import OpNode
from .analytical import roofline_seconds
from .links import PROBE_SIZES, fit_link
from .profiles import profile_from_dict

#: Seconds a calibration may take unless told otherwise (the benchmarks below took about 25 s on
#: the 2-core development machine at load 2).
DEFAULT_TIME_LIMIT = 120.0

#: The folder (in the measured-cost cache directory) of the profiles calibrated automatically.
CALIBRATED_DIR = "calibrated-profiles"

#: The benchmarks the fit cannot do without, run first whatever the time limit: a one-element
#: kernel (the launch overhead), a large elementwise kernel (the bandwidth) and a matmul (compute).
ESSENTIAL = 3


@dataclass(frozen=True)
class Sample:
    """One micro-benchmark: its operator class, name, FLOPs and bytes (as ``CollectOpGraph``
    counts them) and the seconds one run took."""

    op_class: str
    name: str
    flops: float
    bytes_accessed: float
    seconds: float


@dataclass
class Calibration:
    """What :func:`calibrate` measured and fitted: ``profile`` (the fields of a device profile),
    ``target`` (as the device file gives it), the samples, the copies and the seconds it took."""

    target: Any
    profile: dict
    samples: list[Sample]
    copies: list[tuple[int, float]]
    seconds: float
    skipped: list[str] = field(default_factory=list)

    def device_file(self) -> dict:
        """The calibration as a device file (``--devices FILE``)."""
        return {"devices": [{"target": self.target, "profile": self.profile}]}

    def write(self, path: str | Path) -> Path:
        """Write the device file to ``path`` whole (a reader never sees half of it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(self.device_file(), indent=2) + "\n")
        os.replace(partial, path)
        return path

    def summary(self) -> str:
        """The fitted figures, in words."""
        p = self.profile
        lines = [p["description"],
                 f"  peak {p['peak_gflops']:.2f} GFLOP/s, bandwidth {p['memory_bandwidth_gbs']:.2f} GB/s, "
                 f"launch {p['launch_overhead_us']:.2f} us; other operators: compute efficiency "
                 f"{p['compute_efficiency']:.3g}, memory efficiency {p['memory_efficiency']:.3g}",
                 f"  copies: latency {p['link']['latency_us']:.1f} us, bandwidth "
                 f"{p['link']['bandwidth_gbs']:.2f} GB/s"]
        for op_class, figures in p.get("operator_classes", {}).items():
            count = sum(1 for s in self.samples if s.op_class == op_class)
            lines.append(f"  {op_class:<14} compute efficiency {figures['compute_efficiency']:.3g} "
                         f"({figures['compute_efficiency'] * p['peak_gflops']:.2f} GFLOP/s), memory "
                         f"efficiency {figures['memory_efficiency']:.3g} "
                         f"({figures['memory_efficiency'] * p['memory_bandwidth_gbs']:.2f} GB/s); "
                         f"{count} benchmarks")
        if self.skipped:
            lines.append(f"  not run (time limit): {len(self.skipped)} benchmarks, "
                         f"{', '.join(self.skipped)}")
        return "\n".join(lines)


# -- the micro-benchmarks -----------------------------------------------------------------------


def _one_operator(build: Callable, *shapes):
    """A Relax module whose ``main`` applies ``build`` to float32 inputs of ``shapes``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    inputs = [relax.Var(f"x{i}", relax.TensorType(shape, "float32")) for i, shape in enumerate(shapes)]
    with bb.function("main", inputs):
        with bb.dataflow():
            out = bb.emit_output(build(*inputs))
        bb.emit_func_output(out)
    return bb.get()


def benchmarks() -> list[tuple[str, str, Callable]]:
    """``(class, name, module builder)`` for every micro-benchmark, in the order they run: the
    :data:`ESSENTIAL` ones, then one of each class per round, so a time limit that cuts the list
    short leaves every class a few sizes. Sizes span the kernels of the registry's models at
    small-to-moderate sizes (a microsecond to a few hundred milliseconds on the development
    machine's CPU)."""
    from tvm.relax import op

    def conv(c, hw, k, kernel, groups=1):
        return (f"conv2d {c}x{hw}x{hw} -> {k}, {kernel}x{kernel}"
                + (f", groups {groups}" if groups > 1 else ""),
                lambda: _one_operator(lambda x, w: op.nn.conv2d(x, w, padding=kernel // 2, groups=groups),
                                      (1, c, hw, hw), (k, c // groups, kernel, kernel)))

    def matmul(m, k, n, batch=()):
        return (f"matmul {m}x{k} @ {k}x{n}" + (f", batch {batch[0]}" if batch else ""),
                lambda: _one_operator(op.matmul, (*batch, m, k), (*batch, k, n)))

    def add(n):
        return f"add of {n} elements", lambda: _one_operator(op.add, (n,), (n,))

    def one(name, build, *shapes):
        return name, lambda: _one_operator(build, *shapes)

    classes = {
        # depthwise convolutions run tens of times faster per FLOP than dense ones: two of
        # them, among dense ones up to the large-weight layers that dominate a CNN's time
        "conv": [conv(16, 8, 16, 3), conv(16, 32, 16, 3), conv(32, 32, 32, 3, groups=32),
                 conv(64, 16, 64, 3), conv(128, 8, 256, 1), conv(96, 16, 96, 3, groups=96),
                 conv(256, 8, 256, 3), conv(512, 4, 512, 3)],
        "matmul": [matmul(16, 64, 64), matmul(1, 768, 768), matmul(64, 64, 64, batch=(8,)),
                   matmul(128, 768, 768), matmul(32, 512, 2048), matmul(32, 768, 3072)],
        "elementwise": [add(4096), add(1 << 16), one("relu of 512K elements", op.nn.relu, (1 << 19,))],
        "reduction": [
            one("mean 256x4x4 over space", lambda x: op.mean(x, axis=[2, 3], keepdims=True), (1, 256, 4, 4)),
            one("sum 256x256 over rows", lambda x: op.sum(x, axis=[-1]), (256, 256)),
            one("softmax 256x256", op.nn.softmax, (256, 256)),
            one("layer_norm 64x768", lambda x, g, b: op.nn.layer_norm(x, g, b, axes=[-1]),
                (64, 768), (768,), (768,)),
            one("mean 64x32x32 over space", lambda x: op.mean(x, axis=[2, 3], keepdims=True), (1, 64, 32, 32)),
        ],
        "pooling": [
            one("adaptive_avg_pool2d 256x4x4 -> 1x1", lambda x: op.nn.adaptive_avg_pool2d(x, (1, 1)),
                (1, 256, 4, 4)),
            one("max_pool2d 16x64x64, 3x3 stride 2",
                lambda x: op.nn.max_pool2d(x, (3, 3), (2, 2), padding=(1, 1)), (1, 16, 64, 64)),
            one("avg_pool2d 128x16x16, 2x2 stride 2", lambda x: op.nn.avg_pool2d(x, (2, 2), (2, 2)),
                (1, 128, 16, 16)),
        ],
        "data_movement": [
            one("transpose 64x32x32 to channels last", lambda x: op.permute_dims(x, [0, 2, 3, 1]),
                (1, 64, 32, 32)),
            one("concatenate 2 x 32x32x32", lambda a, b: op.concat([a, b], axis=1),
                (1, 32, 32, 32), (1, 32, 32, 32)),
            one("strided_slice 64x32x32 -> 32 channels",
                lambda x: op.strided_slice(x, axes=[1], begin=[16], end=[48]), (1, 64, 32, 32)),
            one("reshape 64x32x32 -> 64x1024", lambda x: op.reshape(x, (64, 1024)), (1, 64, 32, 32)),
        ],
    }
    essential = [("elementwise", *add(1)), ("elementwise", *add(1 << 22)),
                 ("matmul", *matmul(64, 256, 256))]
    rest = []
    for round_ in range(max(len(kernels) for kernels in classes.values())):
        rest += [(op_class, *kernels[round_]) for op_class, kernels in classes.items()
                 if round_ < len(kernels)]
    return essential + rest


# -- where a device is, what it is --------------------------------------------------------------


def host_description(device) -> str:
    """The device's hardware in words: a GPU's name, or this machine's CPU model."""
    if device.kind == "gpu":
        return str(device.runtime_device().device_name)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def is_present(device) -> bool:
    """Whether ``device`` (a resolved target device) is on this machine: a CPU always is (an llvm
    device runs on this machine's CPU), a GPU where its runtime device exists."""
    return device.kind == "cpu" or bool(device.runtime_device().exist)


def _threads(device) -> str:
    from .measured import cpu_threads

    return str(cpu_threads()) if device.kind == "cpu" else "-"


def cache_key(device) -> str:
    """What a calibrated profile holds for: target, hardware, CPU threads, TVM version."""
    import tvm

    return (f"target={device.target}|device={host_description(device)}|"
            f"threads={_threads(device)}|tvm={tvm.__version__}")


def local_device(target: Any):
    """The resolved device of ``target`` (``"llvm"``, ``"cuda"`` or a target dict) on this
    machine; an error where the target is unknown or its device is not here."""
    from ..targets import resolve_targets

    (device,) = resolve_targets([target])
    if not is_present(device):
        raise InvalidTargetError(
            f"no {device.target.kind.name} device {device.index} on this machine to calibrate: run "
            "`tvm-place calibrate` on the machine that has it and bring its profile file here "
            "(--devices FILE), or describe the device with a profile (docs/problem-format.md)")
    return device


# -- measuring ----------------------------------------------------------------------------------


def _kernel(module) -> tuple[OpNode, Any]:
    """The one operator of a one-operator module: its node (FLOPs, bytes) and PrimFunc."""
    from tvm_place.passes import collect_op_graph, prepare_pipeline

    collected = collect_op_graph(prepare_pipeline()(module))
    return collected.graph.nodes[0], collected.kernels[0]


def measure_copies(device, sizes: Sequence[int] = PROBE_SIZES, repeat: int = 5) -> list[tuple[int, float]]:
    """``(bytes, seconds)`` of the least of ``repeat`` copies of each size: to and from the host
    for a GPU (the mean of the two directions), within host memory for a CPU."""
    import tvm

    runtime_device = device.runtime_device()
    host = tvm.cpu(0)
    copies = []
    for size in sizes:
        data = np.ones(size // 4, dtype="float32")
        on_host = tvm.runtime.tensor(data, host)
        on_device = tvm.runtime.empty(data.shape, "float32", runtime_device)
        times = []
        for _ in range(repeat + 1):  # the first copy touches fresh memory: not counted
            start = time.perf_counter()
            on_device.copyfrom(on_host)
            if device.kind == "gpu":
                runtime_device.sync()
                on_device.copyto(on_host)
            runtime_device.sync()
            times.append((time.perf_counter() - start) / (2 if device.kind == "gpu" else 1))
        copies.append((size, min(times[1:])))
    return copies


def calibrate(target: Any = "llvm", time_limit: float = DEFAULT_TIME_LIMIT, progress=None,
              number: int = 3, repeat: int = 3, min_repeat_ms: int = 20) -> Calibration:
    """Run the micro-benchmarks on ``target``'s device on this machine (a target as
    :func:`tvm_place.compile` takes one, or a resolved device; as many as
    ``time_limit`` seconds allow, the :data:`ESSENTIAL` ones whatever it is), and fit its
    profile (:func:`fit_profile`). ``progress``: a ``(message, fraction)`` callback. Timing as
    :func:`~tvm_place.cost.measured.time_kernel` (``number``, ``repeat``, ``min_repeat_ms``)."""
    import tvm

    from ..passes.build import error_line
    from ..targets import TargetDevice
    from .measured import time_kernel

    if not (isinstance(time_limit, (int, float)) and not isinstance(time_limit, bool)
            and time_limit > 0):
        raise TvmPlaceError(f"the calibration's time limit must be seconds > 0, not {time_limit!r}")
    device = target if isinstance(target, TargetDevice) else local_device(target)
    started = time.perf_counter()
    deadline = started + time_limit
    rng = np.random.default_rng(0)
    plan = benchmarks()
    samples, skipped, copies = [], [], []
    for position, (op_class, name, build) in enumerate(plan):
        if position == ESSENTIAL:
            if progress is not None:
                progress(f"calibrating {device.name}: copies of {PROBE_SIZES[0]} to "
                         f"{PROBE_SIZES[-1]} bytes", position / (len(plan) + 1))
            copies = measure_copies(device)
        if position >= ESSENTIAL and time.perf_counter() >= deadline:
            skipped = [skipped_name for _, skipped_name, _ in plan[position:]]
            break
        if progress is not None:
            progress(f"calibrating {device.name}: {name}", (position + 1) / (len(plan) + 1))
        node, kernel = _kernel(build())
        try:
            seconds = time_kernel(kernel, device, number, repeat, min_repeat_ms, rng)
        except Exception as err:  # TVM's own failure to build or run it on this device
            raise TvmPlaceError(f"cannot calibrate {device.target.kind.name}: the benchmark "
                                f"{name!r} failed on {device.name} ({error_line(err)})") from None
        samples.append(Sample(op_class, name, node.flops, node.bytes_accessed, seconds))
    seconds = time.perf_counter() - started
    target_config = target if isinstance(target, (str, dict)) else device.target.kind.name
    profile = fit_profile(samples, copies, device.kind)
    profile["memory_bytes"] = _memory_bytes(device)
    flags = {key: str(device.target.attrs[key]) for key in ("mcpu", "arch")
             if key in device.target.attrs}
    if "arch" in flags:
        profile["arch"] = flags["arch"]
    target_text = " ".join([device.target.kind.name, *(f"-{k}={v}" for k, v in flags.items())])
    profile["description"] = (
        f"calibrated by tvm-place on {host_description(device)} (target {target_text}, "
        f"{_threads(device)} threads, TVM {tvm.__version__}), "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{len(samples)} micro-benchmarks in {seconds:.0f} s")
    profile_from_dict("calibrated", profile)  # what it writes, it reads back
    return Calibration(target_config, profile, samples, copies, seconds, skipped)


def _memory_bytes(device) -> float:
    if device.kind == "gpu":
        return float(device.runtime_device().total_global_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# -- fitting ------------------------------------------------------------------------------------


def _fit_efficiencies(flops: np.ndarray, bytes_: np.ndarray, seconds: np.ndarray, launch: float,
                      peak_flops: float, bandwidth: float) -> tuple[float, float]:
    """Compute and memory efficiencies in (0, 1] minimising the mean absolute log error of
    ``launch + max(F / (peak * e_c), B / (bandwidth * e_m))``, plus a 1e-6 pull towards 1 that
    only decides between equally good fits. A 81 x 81 grid over 1e-4..1, refined twice around
    the best point (each step a tenth of the last): 3 x 6561 x samples evaluations."""

    def loss(compute: np.ndarray, memory: np.ndarray) -> np.ndarray:
        predicted = launch + np.maximum(
            flops[None, None, :] / (peak_flops * compute[:, None, None]),
            bytes_[None, None, :] / (bandwidth * memory[None, :, None]))
        error = np.mean(np.abs(np.log(predicted / seconds[None, None, :])), axis=2)
        return error + 1e-6 * (np.log(compute)[:, None] ** 2 + np.log(memory)[None, :] ** 2)

    exponents = np.linspace(-4.0, 0.0, 81)
    centre, step = (-2.0, -2.0), 0.05
    compute_grid = memory_grid = 10.0 ** exponents
    for _ in range(3):
        error = loss(compute_grid, memory_grid)
        i, j = np.unravel_index(np.argmin(error), error.shape)
        centre = (np.log10(compute_grid[i]), np.log10(memory_grid[j]))
        step /= 10
        offsets = np.arange(-10, 11) * step
        compute_grid = 10.0 ** np.clip(centre[0] + offsets, -4.0, 0.0)
        memory_grid = 10.0 ** np.clip(centre[1] + offsets, -4.0, 0.0)
    return float(10.0 ** centre[0]), float(10.0 ** centre[1])


def fit_profile(samples: Sequence[Sample], copies: Sequence[tuple[int, float]], kind: str) -> dict:
    """The fields of a device profile fitted to ``samples`` and ``copies`` (see the module's
    docstring for the fit), without ``memory_bytes`` and ``description``."""
    if not samples:
        raise TvmPlaceError("no micro-benchmark ran: nothing to fit a profile to")
    flops = np.array([s.flops for s in samples], dtype=np.float64)
    bytes_ = np.array([s.bytes_accessed for s in samples], dtype=np.float64)
    seconds = np.maximum(np.array([s.seconds for s in samples], dtype=np.float64), 1e-9)
    launch = float(seconds[np.argmin(flops + bytes_)])  # the smallest kernel
    busy = np.maximum(seconds - launch, 1e-9)
    peak_flops = float(np.max(flops / busy))
    bandwidth = float(np.max(bytes_ / busy))
    if peak_flops <= 0 or bandwidth <= 0:
        raise TvmPlaceError("the micro-benchmarks did no arithmetic or moved no data: cannot fit")
    compute, memory = _fit_efficiencies(flops, bytes_, seconds, launch, peak_flops, bandwidth)
    classes = {}
    for op_class in sorted({s.op_class for s in samples}):
        mine = np.array([s.op_class == op_class for s in samples])
        if mine.sum() < 2:  # one point fixes no roofline: the class keeps the device's figures
            continue
        class_compute, class_memory = _fit_efficiencies(flops[mine], bytes_[mine], seconds[mine],
                                                        launch, peak_flops, bandwidth)
        classes[op_class] = {"compute_efficiency": class_compute, "memory_efficiency": class_memory}
    link = fit_link([size for size, _ in copies], [t for _, t in copies]) if copies else None
    return {
        "kind": kind,
        "peak_gflops": peak_flops / 1e9,
        "memory_bandwidth_gbs": bandwidth / 1e9,
        "compute_efficiency": compute,
        "memory_efficiency": memory,
        "launch_overhead_us": launch * 1e6,
        "link": {"bandwidth_gbs": link.bandwidth_gbs, "latency_us": link.latency_us,
                 "description": "copies measured by tvm-place calibrate"} if link else "host-memory",
        "operator_classes": classes,
    }


# -- the calibrated cost model ------------------------------------------------------------------


class CalibratedProfileWarning(UserWarning):
    """A cached calibrated profile that cannot be read (it is measured again and rewritten)."""


class CalibratedCostModel:
    """The analytical model on profiles calibrated on this machine (``cost_model="calibrated"``).

    Each device present here (:func:`is_present`) is calibrated on first use, once per
    :func:`cache_key`, and its profile kept in ``cache_dir/calibrated-profiles/`` (default: the
    measured-cost cache directory); later uses read the file. A device this machine lacks is
    priced by its profile as written. Sources: ``calibrated``, ``calibrated (cached)``, or
    ``analytical``."""

    name = "calibrated"

    def __init__(self, cache_dir: Path | str | None = None,
                 time_limit: float = DEFAULT_TIME_LIMIT, progress=None):
        from .measured import default_cache_dir

        self.directory = Path(cache_dir or default_cache_dir()) / CALIBRATED_DIR
        self.time_limit = time_limit
        self.progress = progress
        self.calibrations = 0  # run by this model (the rest came from the cache)
        self._profiles: dict[str, tuple[Any, str]] = {}

    def profile_path(self, device) -> Path:
        digest = hashlib.sha256(cache_key(device).encode()).hexdigest()[:16]
        return self.directory / f"{device.target.kind.name}-{digest}.json"

    def prepare_devices(self, devices: Sequence, progress=None) -> None:
        """Calibrate (or read) every present device's profile before costing starts, with
        progress reported."""
        for device in devices:
            self.profile(device, progress)

    def profile(self, device, progress=None) -> tuple[Any, str]:
        """``(profile, source)`` that prices ``device``."""
        if not is_present(device):
            return device.profile, "analytical"
        key = cache_key(device)
        if key not in self._profiles:
            self._profiles[key] = self._cached(device) or self._calibrated(device, progress)
        return self._profiles[key]

    def has_profile(self, device) -> bool:
        """Whether ``device`` is on this machine with a calibrated profile at hand (calibrated by
        this model, or in the cache), so pricing it runs no micro-benchmark."""
        if not is_present(device):
            return False
        key = cache_key(device)
        if key not in self._profiles:
            cached = self._cached(device)
            if cached is None:
                return False
            self._profiles[key] = cached
        return True

    def _cached(self, device):
        from ..formats import load_device_file

        path = self.profile_path(device)
        if not path.exists():
            return None
        try:
            _, (profile,) = load_device_file(path)
        except (TvmPlaceError, ValueError) as err:
            warnings.warn(f"{err}; calibrating {device.name} again (the file is rewritten)",
                          CalibratedProfileWarning, stacklevel=4)
            return None
        return profile, "calibrated (cached)"

    def _calibrated(self, device, progress):
        from ..formats import load_device_file

        calibration = calibrate(device, self.time_limit, progress or self.progress)
        self.calibrations += 1
        path = calibration.write(self.profile_path(device))
        _, (profile,) = load_device_file(path)
        return profile, "calibrated"

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        profile, source = self.profile(device)
        return roofline_seconds(node, profile), source
