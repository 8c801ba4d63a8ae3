"""Pipelined throughput on worker processes: a model split in two stages across two single-core
worker processes, against the same model in one single-core worker process.

Both runs use the same runtime (``PlacedModule.run_stream``) and the same kind of worker: a
``python -m tvm_place.runtime.server`` process pinned to one core with ``TVM_NUM_THREADS=1``,
reached over TVM's RPC; the split's two workers are pinned to different cores. The split is solved
for throughput (exact contiguous DP) on measured kernel costs, run, then re-solved with the stage
and copy times the run measured (``placed.rebalance``) and run again if that changed it. Outputs
are checked against the unsplit run. Baseline and split runs alternate ``--repeat`` times; the
table gives medians. Predicted (evaluator) and measured throughput and latency are printed side
by side. The report goes to ``--out`` (machine, versions, date, command, tables).

Usage:
    python scripts/bench_pipeline.py [--model resnet18] [--size image_size=64] [--inputs 40]
        [--repeat 3] [--cost-model measured] [--wait-for-idle 0.9] [--out docs/pipeline-benchmark.md]

Run it when the machine is otherwise idle: the two workers need both cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def idle_fraction(seconds: float = 3.0) -> float:
    """Share of all CPUs' time that was idle over the next ``seconds`` (from /proc/stat)."""
    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(min_idle: float, max_wait: float) -> float:
    """Wait until the CPUs are at least ``min_idle`` idle (sampled over 3 s); the last sample."""
    deadline = time.monotonic() + max_wait
    idle = idle_fraction()
    while idle < min_idle and time.monotonic() < deadline:
        print(f"[bench] CPUs {idle:.0%} idle (< {min_idle:.0%}): other work is running; waiting",
              flush=True)
        time.sleep(10)
        idle = idle_fraction()
    return idle


def versions() -> dict[str, str]:
    import tvm

    from importlib.metadata import version

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "tvm_place/runtime"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "python": platform.python_version(),
        "apache-tvm": tvm.__version__,
        "apache-tvm-ffi": version("apache-tvm-ffi"),
        "numpy": np.__version__,
        "tvm-place": f"{version('tvm-place')} (git {commit}{', runtime modified' if dirty else ''})",
    }


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {platform.system()} {platform.release()}"


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def our_pids(placed_modules) -> list[int]:
    pids = [os.getpid()]
    for placed in placed_modules:
        for server in getattr(placed, "_owned_servers", []):
            pids += [server.pid, *server.session_pids()]
    return pids


class CpuWatch:
    """How much of the machine's CPU time other processes took during a run."""

    def __init__(self, pids):
        self.pids = pids
        self.start = self._sample()

    def _sample(self):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total, idle = sum(fields[:8]), fields[3] + fields[4]
        return total, total - idle, sum(_ticks(p) for p in self.pids)

    def external_share(self) -> float:
        total0, busy0, ours0 = self.start
        total1, busy1, ours1 = self._sample()
        return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / max(1, total1 - total0))


def parse_sizes(items: list[str]) -> dict:
    sizes = {}
    for item in items:
        key, _, value = item.partition("=")
        sizes[key] = int(value)
    return sizes


def run_config(placed, stream, repeat_latency: int, depth: int):
    """Warm up, run the stream, measure latency; (outputs, stats, latency)."""
    placed.run_stream(stream[:2], depth=depth)
    outputs = placed.run_stream(stream, depth=depth)
    stats = placed.last_stats
    latency = placed.measure_latency([stream[0]], repeat=repeat_latency)
    return outputs, stats, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", nargs="*", default=["image_size=64"],
                        help="model size overrides, e.g. image_size=64 width=64")
    parser.add_argument("--inputs", type=int, default=40, help="inputs per stream")
    parser.add_argument("--repeat", type=int, default=3, help="alternating baseline/split runs")
    parser.add_argument("--cost-model", default="measured", choices=("measured", "analytical"))
    parser.add_argument("--depth", type=int, default=2, help="queue depth between stages")
    parser.add_argument("--cores", default="0,1", help="the two cores: baseline uses the first")
    parser.add_argument("--wait-for-idle", type=float, default=0.9,
                        help="before the timed runs, wait (up to --max-wait s) until this share "
                             "of the CPUs' time is idle (0: do not wait)")
    parser.add_argument("--max-wait", type=float, default=900.0)
    parser.add_argument("--cost-cache", default=None,
                        help="measured-cost cache directory (default: a fresh one, so that kernel "
                             "costs are measured now, not taken from a busier moment)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "pipeline-benchmark.md"))
    args = parser.parse_args()

    import tempfile

    import tvm_place
    from tvm_place import models
    from tvm_place.cost import MeasuredCostModel
    from tvm_place.evaluate import evaluate

    cache = tempfile.TemporaryDirectory(prefix="tvm-place-bench-costs-")
    if args.cost_model == "measured":
        wait_for_quiet(args.wait_for_idle, args.max_wait)  # kernels are timed while compiling
        cost_model = MeasuredCostModel(cache_dir=args.cost_cache or cache.name)
    else:
        cost_model = "analytical"

    cores = [int(c) for c in args.cores.split(",")]
    sizes = parse_sizes(args.size)
    started = datetime.datetime.now(datetime.timezone.utc)
    model = models.get(args.model, **sizes)
    rng = np.random.default_rng(0)
    stream = [rng.standard_normal(model.inputs[0].shape).astype(np.float32) for _ in range(args.inputs)]

    print(f"[bench] {args.model} {sizes}: compiling the unsplit model and the 2-stage split", flush=True)
    single = tvm_place.compile(model.mod, ["llvm"], objective="throughput", cost_model=cost_model)
    split = tvm_place.compile(model.mod, ["llvm", "llvm"], objective="throughput", method="dp",
                              cost_model=cost_model)
    print(split.report(), flush=True)

    single.attach_workers("processes", cores=[[cores[0]]], threads=1)
    split.attach_workers("processes", cores=[[cores[0]], [cores[1]]], threads=1)
    print(f"[bench] workers: {single.workers} / {split.workers}", flush=True)

    idle_before = wait_for_quiet(args.wait_for_idle, args.max_wait) if args.wait_for_idle > 0 else idle_fraction()
    load_before = os.getloadavg()
    runs: dict[str, list] = {"single": [], "split": []}
    reference = []

    def timed(name, placed):
        if args.wait_for_idle > 0:
            wait_for_quiet(args.wait_for_idle, 300)
        watch = CpuWatch(our_pids([placed]))
        outputs, stats, latency = run_config(placed, stream, 3, args.depth)
        external = watch.external_share()
        if not reference:
            reference.extend(outputs)
        runs.setdefault(name, []).append((stats, latency, outputs, external))
        print(f"[bench] {name}: {stats.throughput:.2f} inputs/s overall, "
              f"{1 / stats.interval:.2f} steady-state, latency {latency * 1e3:.1f} ms; other "
              f"processes took {external:.0%} of the CPUs", flush=True)

    for round_ in range(args.repeat):
        timed("single", single)
        timed("split", split)

    def best(name):
        """The least disturbed run: the one with the highest throughput."""
        return max(runs[name], key=lambda run: run[0].throughput)

    # Measured feedback: re-solve the split with the times its best run measured.
    split_stats, split_latency = best("split")[:2]
    comparison = split.compare(split_stats, latency=split_latency)
    print(comparison, flush=True)
    new = split.rebalance(split_stats)
    feedback_note = (
        f"re-solved with the measured costs (device factors "
        f"{', '.join(f'{f:.2f}' for f in new.stats['device_factor'])}, copy overhead "
        f"{', '.join(f'{o * 1e3:.2f} ms' for o in new.stats['copy_overhead'])}): "
    )
    corrected_value_before = new.stats.get("value_before", float("nan"))
    rebalanced = None
    same = np.array_equal(new.device_of, split.placement.device_of) or np.array_equal(
        1 - new.device_of, split.placement.device_of)
    if same:
        feedback_note += "the split stays as it is."
    else:
        feedback_note += (f"predicted max-stage time {corrected_value_before * 1e3:.1f} -> "
                          f"{new.value * 1e3:.1f} ms; the new split was compiled and measured.")
        rebalanced = tvm_place.compile(model.mod, ["llvm", "llvm"], placement=new,
                                       cost_model=cost_model)
        split.close()  # its workers' cores go to the new split's
        rebalanced.attach_workers("processes", cores=[[cores[0]], [cores[1]]], threads=1)
        for round_ in range(args.repeat):
            timed("single", single)
            timed("rebalanced", rebalanced)
    print(f"[bench] {feedback_note}", flush=True)
    load_after = os.getloadavg()
    idle_after = idle_fraction()

    # Outputs of every split run against the unsplit run.
    max_error = 0.0
    for name in ("split", "rebalanced"):
        for _, _, outputs, _ in runs.get(name, []):
            for got, want in zip(outputs, reference):
                max_error = max(max_error, float(np.abs(got - want).max()))
    equal = max_error <= 1e-5

    def summary(name, placed):
        items = runs[name]
        throughput = statistics.median(s.throughput for s, _, _, _ in items)
        steady = statistics.median(1 / s.interval for s, _, _, _ in items)
        latency = statistics.median(l for _, l, _, _ in items)
        evaluation = evaluate(placed.problem, placed.placement.device_of)
        return {
            "throughput": throughput, "steady": steady, "latency": latency,
            "all": [(s.throughput, external) for s, _, _, external in items],
            "predicted_throughput": 1 / evaluation.max_load, "predicted_latency": evaluation.latency,
            "stats": best(name)[0],
        }

    results = {"single": summary("single", single), "split": summary("split", split)}
    if rebalanced is not None:
        results["rebalanced"] = summary("rebalanced", rebalanced)
    base = results["single"]["throughput"]
    best_config = max((k for k in results if k != "single"), key=lambda k: results[k]["throughput"])
    speedup = results[best_config]["throughput"] / base

    labels = {
        "single": f"unsplit, 1 worker process (core {cores[0]})",
        "split": f"2 stages (dp), 2 worker processes (cores {cores[0]}, {cores[1]})",
        "rebalanced": "2 stages after measured feedback, 2 worker processes",
    }
    lines = [
        "# Pipeline benchmark: two single-core worker processes against one",
        "",
        f"Written by `scripts/bench_pipeline.py` on {started:%Y-%m-%d %H:%M} UTC. Command:",
        "",
        "```bash",
        f"{shlex.join([sys.executable.replace(str(ROOT) + '/', ''), 'scripts/bench_pipeline.py', *sys.argv[1:]])}",
        "```",
        "",
        f"- machine: {machine()}; before the timed runs the CPUs were {idle_before:.0%} idle "
        f"(1-min load average {load_before[0]:.2f}); after them {idle_after:.0%} idle "
        f"(load average {load_after[0]:.2f}, our own runs included)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"- model: `{args.model}` {sizes} (random weights), {len(split.problem.graph)} operators; "
        f"a stream of {args.inputs} inputs per run, queue depth {args.depth}; costs: {args.cost_model}",
        "- workers: `python -m tvm_place.runtime.server` processes, each pinned to one core "
        "(`os.sched_setaffinity`) with `TVM_NUM_THREADS=1`, stages uploaded and run over `tvm.rpc`; "
        "values between stages go through the coordinator (download, upload), counted and timed",
        f"- runs alternate baseline and split, {args.repeat} rounds, each started once the CPUs "
        f"were at least {args.wait_for_idle:.0%} idle (waiting up to 300 s); medians below",
        "",
        "| configuration | throughput (inputs/s, whole stream) | steady-state (inputs/s) | "
        "latency (ms, one input alone) | predicted throughput | predicted latency (ms) | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, result in results.items():
        lines.append(
            f"| {labels[key]} | {result['throughput']:.2f} | {result['steady']:.2f} | "
            f"{result['latency'] * 1e3:.1f} | {result['predicted_throughput']:.2f} | "
            f"{result['predicted_latency'] * 1e3:.1f} | {result['throughput'] / base:.2f}x |"
        )
    lines += [
        "",
        f"**Speed-up of the best split over one single-core process: {speedup:.2f}x** "
        f"(medians of whole-stream throughput). Every run, in inputs/s, with the share of the "
        "CPUs that other processes of the machine took meanwhile: "
        + "; ".join(f"{k} " + ", ".join(f"{t:.2f} ({e:.0%})" for t, e in r["all"])
                    for k, r in results.items())
        + ". "
        + ("Target 1.7x reached." if speedup >= 1.7 else "Below the 1.7x target; see the notes."),
        "",
        f"Outputs: every split run's outputs equal the unsplit run's (max abs difference "
        f"{max_error:.2g})." if equal else
        f"Outputs DIFFER from the unsplit run: max abs difference {max_error:.3g}.",
        "",
        f"Measured feedback: {feedback_note}",
        "",
        "## Predicted against measured (the split, its best run)",
        "",
        "```",
        comparison,
        "```",
        "",
        "## Stage and copy times (the split, its best run)",
        "",
        "```",
        results["split"]["stats"].format(),
        "```",
        "",
        "## Baseline (its best run)",
        "",
        "```",
        results["single"]["stats"].format(),
        "```",
    ]
    if rebalanced is not None:
        lines += ["", "## After measured feedback (its best run)", "", "```",
                  rebalanced.compare(results["rebalanced"]["stats"]),
                  results["rebalanced"]["stats"].format(), "```"]
    best_split = results[best_config]["stats"]
    split_loads = best_split.device_times()["load"]
    single_time = results["single"]["stats"].device_times()["load"].max()
    lines += [
        "",
        "## Notes",
        "",
        f"- Where the rest of 2x goes ({labels[best_config]}, its best run): the stages are not equal "
        f"({', '.join(f'{x * 1e3:.1f}' for x in split_loads)} ms per input with their copies, "
        f"against {single_time * 1e3:.1f} ms for the whole model), which alone caps the steady "
        f"state at {single_time / split_loads.max():.2f}x; a contiguous split of the "
        f"{len(split.problem.graph)} operators cannot be more even (the DP is exact on the "
        "measured costs); the copies through the coordinator add a few ms per input.",
        "- Throughput counts the whole stream, pipeline fill and drain included: with two equal "
        f"stages and {args.inputs} inputs the ideal is {2 * args.inputs / (args.inputs + 1):.2f}x, "
        "not 2x. Steady-state is the median time between two results.",
        "- The coordinator (this process: one thread per stage, the copies through it) is not "
        "pinned and shares the two cores with the workers.",
        "- Predictions are the evaluator's on the placement's cost model; the measured/predicted "
        "column of the table above is what `placed.rebalance()` corrects.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for placed in (single, split, rebalanced):
        if placed is not None:
            placed.close()


if __name__ == "__main__":
    main()
