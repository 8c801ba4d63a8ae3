"""Planning time (issue 17): ``tvm_place.compile`` against ``tvm.compile`` on the same module.

For each model (registry builders, batch 1), in one process, after one warm-up call of each
configuration, the configurations are timed alternating (one call of each per round) for
``--repeat`` rounds; each figure is the median over rounds (min and max beside it):

- ``tvm.compile``: ``tvm.compile(mod, target="llvm")``, TVM's default for the CPU (legalized, not
  fused, constants not folded): the issue's baseline;
- ``tvm.compile native``: the same for the CPU target tvm-place resolves ``"llvm"`` to (this
  machine's ``mcpu``, as ``-march=native``): LLVM generates code for the CPU's own vector
  instructions (AVX-512 on the development machine), which takes longer than for a generic
  x86-64; the issue's baseline on tvm-place's target;
- ``tvm.compile fused``: TVM's CPU pipeline (``relax.backend.cpu_generic``: library dispatch,
  legalize, fold constants, fuse, dataflow lowering, finalize), the passes tvm-place runs, split
  between its ``prepare`` and each device's build, for tvm-place's CPU target (so a like-for-like
  build);
- ``tvm.compile cuda``: TVM's CUDA pipeline for the CUDA target tvm-place uses, the like-for-like
  build of a placement that puts everything on the GPU;
- ``llvm``, ``llvm+llvm``: ``tvm_place.compile(mod, targets)`` with its defaults (latency,
  ``method="auto"``, ``cost_model="auto"``: this CPU's learned model where one was trained for it,
  which reads no cache, else its calibrated profile, calibrated into the temporary cache by the
  warm-up for ``llvm+llvm``; kernels of one target are not build-checked);
- ``llvm+cuda warm`` / ``cold``: CPU + CUDA (CUDA compiles here without a GPU: C source, turned
  into a cubin only when loaded). With two targets every kernel is first checked to build for each
  (:mod:`tvm_place.cost.support`), cached on disk: ``warm`` reuses a cache filled by the warm-up;
  ``cold`` gets a new empty cache directory each call (a first-time user).

The whole run uses a temporary cache directory (``TVM_PLACE_CACHE_DIR``), never the user's.
``--profile`` then runs each tvm-place configuration once under cProfile and reports where the
time goes, by phase of ``tvm_place.compile`` (cumulative seconds of the function that does it;
cProfile's overhead inflates the Python-heavy phases a little), and the Relax passes' share of
``tvm.compile``'s time; and, without cProfile, the seconds of each pass of tvm-place's ``prepare``
beside each pass of ``tvm.compile``'s Relax pipeline (median of ``--repeat`` calls).

Writes the block ``<!-- table:plan-time -->`` of docs/benchmarks.md (``--no-write``: print only).

Usage:
    python scripts/bench_plan_time.py [--models resnet50 bert-base] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import LoadSampler, load_average, machine, today, versions, write_block  # noqa: E402

#: The tvm-place configurations: label, targets, whether each call gets a new empty cache.
PLACED = [
    ("llvm", ["llvm"], False),
    ("llvm+llvm", ["llvm", "llvm"], False),
    ("llvm+cuda warm", ["llvm", "cuda"], False),
    ("llvm+cuda cold", ["llvm", "cuda"], True),
]

#: Phases of ``tvm_place.compile``: label, file (path suffix) and function whose cumulative time
#: is the phase's. Indented labels are parts of the phase above them.
PHASES = [
    ("prepare (TVM's legalize + fuse)", "tvm_place/compiler.py", "prepare"),
    ("collect the operator graph", "passes/collect.py", "collect_op_graph"),
    ("cost arrays", "tvm_place/cost/base.py", "compute_costs"),
    ("kernel build check (two targets)", "tvm_place/cost/support.py", "unbuildable"),
    ("solve", "tvm_place/solvers/__init__.py", "solve"),
    ("annotate", "passes/annotate.py", "annotate_placement"),
    ("split", "passes/split.py", "split_by_device"),
    ("build the stages", "passes/build.py", "build_stages"),
    ("  of which tvm.compile per device", "passes/build.py", "compile_module"),
    ("report", "tvm_place/report.py", "format_report"),
]


class Cache:
    """``TVM_PLACE_CACHE_DIR`` for one call: the run's warm directory, or a new empty one."""

    def __init__(self, warm_dir: str, cold: bool):
        self.warm_dir, self.cold = warm_dir, cold

    def __enter__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="plan-time-cold-") if self.cold else self.warm_dir
        os.environ["TVM_PLACE_CACHE_DIR"] = self.dir

    def __exit__(self, *exc) -> None:
        os.environ["TVM_PLACE_CACHE_DIR"] = self.warm_dir
        if self.cold:
            shutil.rmtree(self.dir, ignore_errors=True)


#: TVM's own builds of the module: label and what each tvm-place configuration compares with.
BASELINE = "tvm.compile"
NATIVE = "tvm.compile native"
FUSED = "tvm.compile fused"
CUDA = "tvm.compile cuda"
REFERENCE = {"llvm": FUSED, "llvm+llvm": FUSED, "llvm+cuda warm": CUDA, "llvm+cuda cold": CUDA}


def configurations(mod, warm_dir: str) -> dict:
    """``{label: call}``: each call compiles ``mod`` once and returns what it made.

    ``tvm.compile``: TVM's default for ``target="llvm"`` (``relax.get_pipeline("default")``:
    legalized, not fused, no constant folding), the issue's baseline; ``tvm.compile native``: the
    same for the CPU target tvm-place resolves ``"llvm"`` to; ``tvm.compile fused``: TVM's CPU
    pipeline (``relax.get_default_pipeline``: constants folded and operators fused) for that
    target, what tvm-place builds for CPU devices; ``tvm.compile cuda``: TVM's CUDA pipeline
    (fused, dlight schedules) for the CUDA target tvm-place resolves ``"cuda"`` to."""
    import tvm
    from tvm import relax

    import tvm_place
    from tvm_place.targets import resolve_targets

    def placed(targets, cold):
        def call():
            with Cache(warm_dir, cold):
                return tvm_place.compile(mod, targets)
        return call

    native, cuda = (device.target for device in resolve_targets(["llvm", "cuda"]))
    calls = {
        BASELINE: lambda: tvm.compile(mod, target="llvm"),
        NATIVE: lambda: tvm.compile(mod, target=native),
        FUSED: lambda: tvm.compile(mod, target=native, relax_pipeline=relax.get_default_pipeline(native)),
        CUDA: lambda: tvm.compile(mod, target=cuda),
    }
    calls.update({label: placed(targets, cold) for label, targets, cold in PLACED})
    return calls


def describe(result) -> str:
    """What a tvm-place call decided: method, stages, copies and gap."""
    placement = result.placement
    stages = sum(1 for step in result.plan.steps if step["kind"] == "call")
    gap = "-" if placement.gap is None else f"{placement.gap:.1%}"
    return f"{placement.method}, {stages} stage(s), {result.plan.num_copies} copies, gap {gap}"


def time_model(name: str, repeat: int, warm_dir: str, only=None) -> dict:
    import tvm_place.models

    model = tvm_place.models.get(name)
    calls = {label: call for label, call in configurations(model.mod, warm_dir).items()
             if only is None or label in only}
    seconds = {label: [] for label in calls}
    notes, failed, ops = {}, {}, None
    for label, call in calls.items():  # warm-up: imports, lazy inits, the warm cache
        try:
            result = call()
            if label in REFERENCE:
                notes[label] = describe(result)
                ops = len(result.problem.graph)
        except Exception as err:  # noqa: BLE001 - a configuration this machine cannot compile
            failed[label] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:160]}"
    for _ in range(repeat):
        for label, call in calls.items():
            if label in failed:
                continue
            started = time.perf_counter()
            call()
            seconds[label].append(time.perf_counter() - started)
    return {"name": name, "ops": ops, "seconds": seconds, "notes": notes, "failed": failed,
            "load": load_average()}


def pass_seconds(pipeline, mod, repeat: int) -> dict[str, float]:
    """``{pass: seconds}``: the median over ``repeat`` runs of ``pipeline`` on ``mod`` of each pass
    its Sequential runs (nested passes count in theirs; a pass run twice sums)."""
    import tvm

    @tvm.ir.instrument.pass_instrument
    class PassTimes:
        def __init__(self):
            self.started, self.seconds = [], {}

        def run_before_pass(self, _mod, _info):
            self.started.append(time.perf_counter())

        def run_after_pass(self, _mod, info):
            elapsed = time.perf_counter() - self.started.pop()
            if len(self.started) == 2:  # the pipeline's pass, then its Sequential, then these
                self.seconds[info.name] = self.seconds.get(info.name, 0.0) + elapsed

    runs = []
    for _ in range(repeat):
        times = PassTimes()
        with tvm.transform.PassContext(instruments=[times]):
            pipeline(mod)
        runs.append(times.seconds)
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in runs[0]}


def profile_model(name: str, warm_dir: str, repeat: int) -> dict:
    """Seconds per phase of one call of each tvm-place configuration, under cProfile, and per
    pass of ``prepare`` and of ``tvm.compile``'s Relax pipeline (:func:`pass_seconds`)."""
    import tvm
    from tvm import relax

    import tvm_place.models
    from tvm_place.passes import prepare_pipeline

    mod = tvm_place.models.get(name).mod
    calls = configurations(mod, warm_dir)
    phases = {}
    for label, _, _ in PLACED:
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.runcall(calls[label])
        total = time.perf_counter() - started
        stats = pstats.Stats(profiler).stats
        row = {}
        for phase, suffix, function in PHASES:
            row[phase] = sum(entry[3] for (path, _, func), entry in stats.items()
                             if func == function and path.endswith(suffix))
        row["total (under cProfile)"] = total
        phases[label] = row
    target = tvm.target.Target("llvm")
    started = time.perf_counter()
    with target:
        relax.get_pipeline("default")(mod)  # what tvm.compile(mod, target="llvm") runs first
    pipeline = time.perf_counter() - started
    started = time.perf_counter()
    tvm.compile(mod, target=target)
    whole = time.perf_counter() - started

    def tvm_pipeline(module):
        with target:
            return relax.get_pipeline("default")(module)

    passes = {"prepare": pass_seconds(prepare_pipeline(), mod, repeat),
              "tvm.compile": pass_seconds(tvm_pipeline, mod, repeat)}
    return {"name": name, "phases": phases, "tvm_pipeline": pipeline, "tvm_total": whole,
            "passes": passes}


def timing_table(results: list[dict]) -> str:
    lines = ["| model | operators | configuration | median s (min-max) | / tvm.compile | "
             "/ same pipeline | load | placement |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for result in results:
        medians = {label: statistics.median(times) for label, times in result["seconds"].items()
                   if label not in result["failed"]}

        def ratio(label, reference):
            return f"{medians[label] / medians[reference]:.2f}x" if reference in medians else "-"

        for label, times in result["seconds"].items():
            if label in result["failed"]:
                lines.append(f"| {result['name']} | {result['ops']} | {label} | not measured: "
                             f"{result['failed'][label]} | | | | |")
                continue
            same = f"{ratio(label, REFERENCE[label])} ({REFERENCE[label]})" if label in REFERENCE else ""
            lines.append(
                f"| {result['name']} | {result['ops']} | {label} | {medians[label]:.2f} "
                f"({min(times):.2f}-{max(times):.2f}) | {ratio(label, BASELINE)} | {same} | "
                f"{result['load']:.1f} | {result['notes'].get(label, '')} |")
    return "\n".join(lines)


def profile_table(profiles: list[dict]) -> str:
    labels = [label for label, _, _ in PLACED]
    blocks = []
    for profile in profiles:
        lines = [f"**{profile['name']}** (seconds under cProfile; tvm.compile of the same module "
                 f"{profile['tvm_total']:.2f} s, of which its Relax passes "
                 f"{profile['tvm_pipeline']:.2f} s)", "",
                 "| phase | " + " | ".join(labels) + " |",
                 "| --- |" + " ---: |" * len(labels)]
        for phase in [p for p, _, _ in PHASES] + ["total (under cProfile)"]:
            cells = [profile["phases"][label][phase] for label in labels]
            shown = phase.replace("  ", "&nbsp;&nbsp;")
            lines.append(f"| {shown} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        blocks.append("\n".join(lines))
        blocks.append(pass_table(profile))
    return "\n\n".join(blocks)


def pass_table(profile: dict) -> str:
    """Seconds per pass: tvm-place's ``prepare`` beside ``tvm.compile``'s Relax pipeline, each
    pass on the row of its name (a pass one of them does not run: blank)."""
    ours, theirs = profile["passes"]["prepare"], profile["passes"]["tvm.compile"]
    lines = [f"**{profile['name']}**, per pass (seconds, median of the rounds, no cProfile; "
             "the passes from RewriteDataflowReshape on run in tvm-place's device build)", "",
             "| pass | tvm-place prepare | tvm.compile's Relax pipeline |", "| --- | ---: | ---: |"]
    names = list(ours) + [name for name in theirs if name not in ours]
    for name in names:
        cells = [f"{table[name]:.3f}" if name in table else "" for table in (ours, theirs)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines.append(f"| total | {sum(ours.values()):.3f} | {sum(theirs.values()):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert-base"])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--profile", action="store_true", help="also profile each configuration")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--configs", nargs="+", metavar="LABEL",
                        help="time only these configurations (labels as in the table)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    warnings.simplefilter("ignore")  # untuned-kernel warnings: every configuration builds untuned
    warm_dir = tempfile.mkdtemp(prefix="plan-time-warm-")
    os.environ["TVM_PLACE_CACHE_DIR"] = warm_dir
    try:
        with LoadSampler() as load:
            results = [time_model(name, args.repeat, warm_dir, args.configs) for name in args.models]
            profiles = [profile_model(name, warm_dir, args.repeat) for name in args.models] if args.profile else []
    finally:
        shutil.rmtree(warm_dir, ignore_errors=True)
    from tvm_place.options import PlaceOptions

    text = "\n\n".join(part for part in [
        f"{today()}; {machine()}; {versions()}. Load average (1 min) over the run: "
        f"{load.summary()}; per model at its end in the table. Median of {args.repeat} "
        "alternating rounds after a warm-up; tvm-place with its defaults (latency, method auto, "
        f"cost model {PlaceOptions().cost_model}); `cold`: a new empty cache directory per call.",
        timing_table(results),
        profile_table(profiles) if profiles else "",
    ] if part)
    print(text)
    if not args.no_write:
        write_block("plan-time", "## Planning time against tvm.compile (issue 17)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
