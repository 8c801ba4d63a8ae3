"""``tvm_place.tune``: MetaSchedule tuning of the kernels each device will run.

place the module (as :func:`tvm_place.compile` would) -> per target, the distinct kernels placed on
its devices, weighted by how often the graph calls each -> leave out those the database already
holds -> MetaSchedule search (``trials`` per kernel, a wall-clock ``time_limit`` over all) ->
records in a per-target database (:class:`tvm_place.passes.tuning_database.TuningDatabase`),
which ``tvm_place.compile(..., database=DIR)`` builds from and costs by.

Only what the placement puts on a device is tuned there, and nothing twice: a second call with the
same database and placement runs no trial. A target this machine cannot run (CUDA without a GPU)
is not tuned; its kernels keep dlight's default schedules and the result says so.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import types
import warnings
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from .compiler import _progress_printer, place, tuning_database
from .errors import InvalidTargetError, MissingDependencyError, UntunedKernelWarning
from .graph import Placement
from .options import PlaceOptions
from .passes import collect_op_graph
from .passes.tuning_database import expected_slowdown, target_key, workload

#: Search strategies offered (MetaSchedule's names). ``replay-trace`` samples the design space;
#: ``evolutionary`` also mutates the best candidates, guided by an XGBoost cost model.
STRATEGIES = ("replay-trace", "evolutionary")


#: Modules of ``tvm.s_tir.tensor_intrin`` with the CPU intrinsics (x86 VNNI/AVX-512, ARM dot
#: product) that MetaSchedule's llvm rules may tensorize with.
CPU_INTRINSICS = ("x86", "arm_cpu")


@dataclass
class TargetTuning:
    """What tuning did for one target."""

    target: str
    devices: list[str]
    kernels: int
    already_tuned: int
    newly_tuned: list[str] = field(default_factory=list)
    improved: list[str] = field(default_factory=list)  # retuned kernels whose best time dropped
    untuned: list[str] = field(default_factory=list)
    trials: int = 0
    seconds: float = 0.0
    skipped: str | None = None


@dataclass
class TuningResult:
    """What :func:`tune` did: per target, and the placement it tuned for."""

    database: Path
    placement: Placement
    targets: list[TargetTuning]
    seconds: float
    timed_out: bool

    @property
    def trials(self) -> int:
        return sum(t.trials for t in self.targets)

    def summary(self) -> str:
        lines = [f"tuning database {self.database} ({self.seconds:.0f} s, {self.trials} trials"
                 + (", time limit reached)" if self.timed_out else ")")]
        for t in self.targets:
            state = t.skipped or (
                f"{len(t.newly_tuned)} newly tuned"
                + (f", {len(t.improved)} retuned faster" if t.improved else "")
                + f" in {t.trials} trials, {t.seconds:.0f} s; {len(t.untuned)} still untuned"
            )
            lines.append(f"  {t.target} ({', '.join(t.devices)}): {t.kernels} kernels, "
                         f"{t.already_tuned} already in the database; {state}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "database": str(self.database),
            "seconds": self.seconds,
            "timed_out": self.timed_out,
            "trials": self.trials,
            "targets": [asdict(t) for t in self.targets],
        }


def tune(
    mod: tvm.IRModule,
    targets: Sequence[Any],
    database: str | os.PathLike,
    options: PlaceOptions | None = None,
    *,
    trials: int = 32,
    time_limit: float = 600.0,
    strategy: str = "replay-trace",
    progress: Any = False,
    seed: int = 0,
    retune: bool = False,
    **option_values,
) -> TuningResult:
    """Tune, for each target, the kernels the placement puts on it; records go to ``database``.

    ``trials``: MetaSchedule trials per kernel; ``time_limit``: seconds for the whole search (it
    stops after the batch of trials running when the limit passes, and what was found is kept).
    ``strategy``: one of :data:`STRATEGIES`. The placement comes from ``options`` (a
    :class:`~tvm_place.options.PlaceOptions`) and the other keywords, as in
    :func:`tvm_place.compile` (the options' ``time_limit`` is the solver's); costs come from the
    database where it already has kernels. ``retune``: search the kernels the database already
    has again, ``trials`` more each (each search's random seed is moved on by the records the
    kernel has, so it samples new schedules; compile keeps using the best record). Returns a
    :class:`TuningResult`.
    """
    if strategy not in STRATEGIES:
        raise InvalidTargetError(f"unknown tuning strategy {strategy!r}; use one of {list(STRATEGIES)}")
    if trials < 1 or time_limit <= 0:
        raise InvalidTargetError(f"trials ({trials}) and time_limit ({time_limit}) must be positive")
    start = time.monotonic()
    deadline = start + time_limit
    show = progress if callable(progress) else _progress_printer(progress)
    db = tuning_database(database)
    placed = place(mod, targets, PlaceOptions.of(options, **option_values).replace(database=db),
                   progress=show)
    collected = collect_op_graph(placed.prepared)
    # External calls have no TIR to tune.
    callees = [None if u in collected.externals else c for u, c in enumerate(collected.callees)]
    by_target: dict[str, tuple[tvm.target.Target, list[str], Counter]] = {}
    for callee, device_index in zip(callees, placed.placement.device_of):
        device = placed.devices[int(device_index)]
        target, names, calls = by_target.setdefault(str(device.target), (device.target, [], Counter()))
        if device.name not in names:
            names.append(device.name)
        if callee is not None:
            calls[callee] += 1

    results = []
    timed_out = False
    for target, device_names, calls in by_target.values():
        kernels = {name: placed.prepared[name] for name in sorted(calls)}
        had = {name: db.seconds(func, target) for name, func in kernels.items()
               if db.record(func, target) is not None}
        todo = {name: func for name, func in kernels.items() if retune or name not in had}
        result = TargetTuning(target_key(target), device_names, len(kernels), len(had))
        results.append(result)
        if not todo:
            continue
        if target.kind.name != "llvm" and not tvm.runtime.device(target.kind.name, 0).exist:
            result.skipped = (f"not tuned: no {target.kind.name} device on this machine; its "
                              f"{len(todo)} kernels keep dlight's default schedules")
            result.untuned = sorted(todo)
            continue
        if time.monotonic() >= deadline:
            timed_out = True
            result.skipped = "not tuned: the time limit was spent on other targets"
            result.untuned = sorted(todo)
            continue
        began = time.monotonic()
        result.trials, reached = _search(
            todo, {name: calls[name] for name in todo}, target, db, trials, deadline, strategy,
            show, seed,
        )
        timed_out |= reached
        result.seconds = time.monotonic() - began
        for name, func in todo.items():
            if name in had:
                best = db.seconds(func, target)
                if best is not None and had[name] is not None and best < had[name]:
                    result.improved.append(name)
            else:
                (result.newly_tuned if db.record(func, target) is not None else result.untuned).append(name)
    for (target, _, _), result in zip(by_target.values(), results):
        if result.untuned:
            warnings.warn(
                f"{len(result.untuned)} of {result.kernels} kernels for {', '.join(result.devices)} stay "
                f"untuned ({result.skipped or 'no valid schedule found, or the time limit'}): "
                f"{expected_slowdown(str(target.kind.name))}",
                UntunedKernelWarning,
                stacklevel=2,
            )
    return TuningResult(db.directory, placed.placement, results, time.monotonic() - start, timed_out)


def _search(kernels, weights, target, db, trials, deadline, strategy, show, seed) -> tuple[int, bool]:
    """MetaSchedule over ``kernels`` on ``target`` into ``db``; (trials run, time limit reached)."""
    cores = os.cpu_count() or 1
    tune_target = target
    if target.kind.name == "llvm" and "num-cores" not in target.export():
        # MetaSchedule's CPU rules need the core count; the schedule it finds fits the compile
        # target as well (the database is keyed by the target compile() will use).
        tune_target = tvm.target.Target({**target.export(), "num-cores": cores})
    _register_tensor_intrinsics(str(target.kind.name))
    quiet = logging.getLogger("tvm_place.meta_schedule")
    quiet.setLevel(logging.WARNING)
    names = list(kernels)
    contexts = [
        ms.TuneContext(
            mod=workload(kernels[name]),
            target=tune_target,
            space_generator="post-order-apply",
            search_strategy=strategy,
            task_name=name,
            # A kernel searched before gets a new seed, so a retune samples new schedules.
            rand_state=seed + number + 1_000_003 * db.record_count(kernels[name], target),
            num_threads=cores,
            logger=quiet,
        ).clone()
        for number, name in enumerate(names)
    ]
    watch = _Deadline(deadline, len(names) * trials, show, str(target.kind.name))
    if show is not None:
        show(f"tuning {len(names)} kernels for {target.kind.name}, {trials} trials each", 0.0)
    ms.tune_tasks(
        tasks=contexts,
        task_weights=[float(weights[name]) for name in names],
        work_dir=str(db.path(target)),
        max_trials_global=len(names) * trials,
        max_trials_per_task=trials,
        num_trials_per_iter=min(trials, 16),
        builder=_InProcessBuilder(cores),
        runner=ms.runner.LocalRunner(timeout_sec=60),
        database=db.for_target(target),
        cost_model=_cost_model_for(strategy, cores),
        measure_callbacks=ms.MeasureCallback.create("default") + [watch],
        task_scheduler="gradient",
    )
    return watch.trials, watch.reached


def _register_tensor_intrinsics(kind: str) -> None:
    """Register the tensor intrinsics schedules for ``kind`` may use, before any TuneContext.

    A TuneContext imports ``tvm.s_tir.tensor_intrin``, which registers every target's intrinsics;
    its CUDA ones alone took 12 s of the 18 s on an idle 2-core machine (38 s under load). For a
    CPU target only the CPU intrinsics are registered, and the package is entered in
    ``sys.modules`` without running its ``__init__``, so TuneContext's import finds it done.
    """
    package = "tvm.s_tir.tensor_intrin"
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        stub = types.ModuleType(package)
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules[package] = stub
    for module in CPU_INTRINSICS if kind == "llvm" else CPU_INTRINSICS + (kind,):
        importlib.import_module(f"{package}.{module}")


def _cost_model_for(strategy: str, cores: int):
    if strategy == "evolutionary":
        # MetaSchedule imports XGBoost lazily, deep inside a search: check before starting one.
        if importlib.util.find_spec("xgboost") is None:
            raise MissingDependencyError(
                "the evolutionary tuning strategy needs XGBoost: pip install 'tvm-place[xgboost]', "
                "or use strategy='replay-trace'"
            )
        return ms.CostModel.create("xgb", num_tuning_cores=cores)
    return ms.CostModel.create("random")


#: Seconds a candidate may take to build (per candidate, in batches of ``workers``) before it
#: counts as a failed trial.
BUILD_TIMEOUT = 60.0


@derived_object
class _InProcessBuilder(ms.builder.PyBuilder):
    """Builds candidates in this process, on ``workers`` threads.

    MetaSchedule's LocalBuilder starts fresh worker processes for every batch of candidates, and
    each imports TVM's tensor intrinsics first: 12 to 60 s of CPU per worker on the 2-core
    development machine, more than the builds themselves. A candidate not built within
    ``timeout`` seconds (counted per round of ``workers`` builds) is reported as a failed build
    and the search goes on; its thread cannot be stopped and finishes in the background.
    """

    def __init__(self, workers: int, timeout: float = BUILD_TIMEOUT):
        super().__init__()
        self.workers = workers
        self.timeout = timeout

    def build(self, build_inputs):
        pool = ThreadPoolExecutor(self.workers)
        futures = [pool.submit(_build_candidate, build_input) for build_input in build_inputs]
        rounds = -(-len(futures) // self.workers)
        deadline = time.monotonic() + self.timeout * max(1, rounds)
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                results.append(ms.builder.BuilderResult(
                    None, f"TimeoutError: the build took longer than {self.timeout:.0f} s"))
        pool.shutdown(wait=False, cancel_futures=True)
        return results


def _build_candidate(build_input):
    """One candidate built and exported as MetaSchedule's default builder does, or its error."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    try:
        module = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(build_input.mod)
        artifact = os.path.join(tempfile.mkdtemp(prefix="tvm-place-tune-"), "candidate." + tar.output_format)
        tvm.tirx.build(module, target=build_input.target).export_library(artifact, fcompile=tar)
        return ms.builder.BuilderResult(artifact, None)
    except Exception as err:  # a candidate that does not build is a failed trial, not a failure
        return ms.builder.BuilderResult(None, f"{type(err).__name__}: {err}")


@derived_object
class _Deadline(ms.measure_callback.PyMeasureCallback):
    """Counts trials, reports progress, and ends every task once the deadline has passed."""

    def __init__(self, deadline: float, total: int, show, label: str):
        super().__init__()
        self.deadline, self.total, self.show, self.label = deadline, total, show, label
        self.trials = 0
        self.reached = False

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.trials += len(runner_results)
        if self.show is not None:
            self.show(f"tuning {self.label}: {self.trials}/{self.total} trials", self.trials / self.total)
        if time.monotonic() >= self.deadline:
            self.reached = True
            for number, task in enumerate(task_scheduler.tasks_):
                if not task.is_terminated:
                    task_scheduler.terminate_task(number)
