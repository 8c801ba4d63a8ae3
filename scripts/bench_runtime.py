"""Predicted against measured: the runtime on Ray workers beside the evaluator's prediction.

Every run here uses Ray actors pinned to one core each with one TVM thread (this process too),
costs measured on this machine (``cost_model="measured"``), and the links that
``attach_workers`` measured between the actors (``placed.problem`` is priced with them; the
placement is re-solved on them before it is run). Rows:

- transfer: a chain of four softmaxes on a 2048 x 2048 float32 tensor (16 MB per value), two per
  device: time per input against the prediction, and against the TVM-RPC worker processes of an
  older tvm-place (``--baseline-python``: the interpreter of an environment where that version is
  installed; run in the same invocation, one after the other).
- pipeline: a model split in two stages (exact contiguous DP, throughput) on two single-core
  workers against the unsplit model on one: throughput ratio, and per device the measured load
  (compute and both halves of its copies) against the evaluator's; then re-solved with the
  times that run measured (``placed.rebalance()``) and run again if that moved anything; the
  BERT layer also on a given split that goes back and forth between the devices (9 stages).
  Predicted time per input: the evaluator's stream at the run's depth (``stream_interval``).
- replicas: the whole model on two workers taking alternate inputs, against one worker.
- latency: two equal independent towers on two workers against one worker; then models with
  parallel branches placed for latency: measured latency (median) against the evaluator's.

Outputs are checked against a single-device run of the same module every time. Writes the full
report to ``--out`` and the summary table into docs/benchmarks.md.

Usage:
    python scripts/bench_runtime.py [--rows transfer,pipeline,latency] [--inputs 8] [--repeat 5]
        [--baseline-python /path/to/old/venv/bin/python] [--out docs/runtime-benchmark.md]

Run it on an otherwise idle machine: the two workers need both cores.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM loads: the driver's kernels as the workers'

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runtime_models import dense_branches, softmax_chain  # noqa: E402
from _tables import LoadSampler, machine, shown, today, versions, write_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORES = [[0], [1]]


@dataclass
class Row:
    section: str
    name: str
    measured: str
    predicted: str
    ratio: str
    note: str = ""
    details: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def compile_on(mod, num_devices: int, objective: str, placement=None, method: str = "auto",
               time_limit: float = 30.0):
    import tvm_place

    return tvm_place.compile(mod, ["llvm"] * num_devices, objective=objective, method=method,
                             time_limit=time_limit, cost_model="measured", placement=placement)


def on_workers(placed, mod, num_devices: int, resolve: str | None = None, method: str = "auto",
               time_limit: float = 30.0):
    """Attach ``num_devices`` single-core Ray workers; with ``resolve`` (an objective), solve again
    on the links they measured and recompile if that moves anything. Returns the module run."""
    import tvm_place
    from tvm_place import solvers

    placed.attach_workers("ray", cores=CORES[:num_devices], threads=1)
    if resolve is None or num_devices == 1:
        return placed
    better = solvers.solve(placed.problem, resolve, method, time_limit)
    if np.array_equal(better.device_of, placed.placement.device_of):
        return placed
    log(f"re-solved on the measured links: {int((better.device_of != placed.placement.device_of).sum())} operators moved")
    links, problem = placed.links, placed.problem
    placed.close()
    moved = tvm_place.compile(mod, ["llvm"] * num_devices, objective=resolve, cost_model="measured",
                              placement=better)
    moved.attach_workers("ray", cores=CORES[:num_devices], threads=1, calibrate=False)
    moved.links, moved.problem = links, problem
    return moved


def stream_per_input(placed, inputs, count: int) -> tuple[float, float, list]:
    """Steady-state seconds per input and wall seconds per input of a stream of ``count``."""
    items = [tuple(inputs)] * count
    placed.run_stream(items[:2])  # warm-up
    started = time.perf_counter()
    outputs = placed.run_stream(items)
    wall = (time.perf_counter() - started) / count
    return placed.last_stats.interval, wall, outputs


def first(output):
    return output[0] if isinstance(output, tuple) else output


def check_equal(got, reference, what: str, tolerance: float = 1e-4) -> float:
    got = np.asarray(first(got).numpy() if hasattr(first(got), "numpy") else first(got))
    error = float(np.max(np.abs(got - reference)))
    scale = float(np.max(np.abs(reference))) or 1.0
    if error > tolerance * scale:
        raise SystemExit(f"{what}: outputs differ from the single-device run (max abs {error:.3g})")
    return error


def stage_count(placed) -> int:
    return sum(1 for step in placed.plan.steps if step["kind"] == "call")


def evaluation(placed):
    from tvm_place.evaluate import evaluate

    return evaluate(placed.problem, placed.placement)


def predicted_one_at_a_time(placed) -> float:
    """The evaluator's latency with each copy's halves on the workers that do them (a stage's
    imports before it computes, its exports after, as the runtime runs them): the stream rule
    with one input in flight (``stream_interval``, depth 1). ``evaluate``'s latency, which the
    placement was solved for, lets copies overlap the devices' work."""
    from tvm_place.evaluate import stream_interval

    return stream_interval(placed.problem, placed.placement, 1)


def repriced(placed, stats) -> float:
    """The evaluator's time per input at the run's depth (``stream_interval``; at depth 1 the
    latency with copies on the workers) on the costs the run ``stats`` measured (each device's
    kernels and copy halves as that run took them: ``replan.measured_problem``): whether the
    runtime ran the schedule the evaluator prices, the kernels' cached times aside."""
    from tvm_place.evaluate import stream_interval
    from tvm_place.replan import measured_problem

    return stream_interval(measured_problem(placed.problem, placed.placement, stats),
                           placed.placement, stats.depth or 1)


def predicted_stream(placed) -> float:
    """The evaluator's steady-state seconds per input of the stream just run (its depth): the
    schedule the runtime ran (``stream_interval``), at least the max-stage time."""
    from tvm_place.evaluate import stream_interval

    return stream_interval(placed.problem, placed.placement, placed.last_stats.depth)


# -- rows -----------------------------------------------------------------------------------------


def transfer_row(args) -> list[Row]:
    mod = softmax_chain()
    x = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    log("softmax chain: compiling")
    single = compile_on(mod, 1, "throughput")
    reference = single(x).numpy()
    num_ops = single.problem.num_ops
    placement = (np.arange(num_ops) >= num_ops // 2).astype(np.int64)
    placed = compile_on(mod, 2, "throughput", placement=placement)
    placed.attach_workers("ray", cores=CORES, threads=1)
    interval, wall, outputs = stream_per_input(placed, [x], args.inputs)
    check_equal(outputs[-1], reference, "softmax chain")
    predicted = evaluation(placed)
    again = repriced(placed, placed.last_stats)
    stats_text, compare_text = placed.last_stats.format(), placed.compare()
    links_text = placed.report().split("links measured", 1)[-1]
    placed.close()
    rows = [Row("transfer", "16 MB softmax chain, 2 Ray workers (steady state per input)",
                f"{interval * 1e3:.1f} ms", f"{predicted.max_load * 1e3:.1f} ms (max-stage)",
                f"{interval / predicted.max_load:.2f}x",
                f"wall per input {wall * 1e3:.1f} ms; one copy of 16 MB each way per input; "
                f"re-priced with that run's own kernel and copy times {again * 1e3:.1f} ms "
                f"({interval / again:.2f}x)",
                [stats_text, compare_text, "links measured" + links_text])]
    if args.baseline_python:
        log("softmax chain: baseline (TVM RPC worker processes of the older tvm-place)")
        baseline = run_baseline(args.baseline_python, args.inputs)
        rows.append(Row("transfer", "same, TVM-RPC worker processes (tvm-place 06353ef)",
                        f"{baseline['wall'] * 1e3:.1f} ms", "-",
                        f"{baseline['wall'] / wall:.1f}x slower per input",
                        f"steady state {baseline['interval'] * 1e3:.1f} ms; the Ray run's wall per "
                        f"input is {wall * 1e3:.1f} ms"))
    return rows


BASELINE = """
import os, sys, json, time
os.environ["TVM_NUM_THREADS"] = "1"
sys.path.insert(0, {scripts!r})
import numpy as np, tvm_place
from _runtime_models import softmax_chain
mod = softmax_chain()
x = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
single = tvm_place.compile(mod, ["llvm"])
n = single.problem.num_ops
placed = tvm_place.compile(mod, ["llvm", "llvm"], objective="throughput",
                           placement=(np.arange(n) >= n // 2).astype(np.int64))
placed.attach_workers("processes", cores=[[0], [1]], threads=1)
items = [x] * {count}
placed.run_stream(items[:2])
start = time.perf_counter()
out = placed.run_stream(items)
wall = (time.perf_counter() - start) / {count}
assert np.allclose(out[-1], single(x).numpy(), atol=1e-6)
print(json.dumps({{"wall": wall, "interval": placed.last_stats.interval}}))
placed.close()
"""


def run_baseline(python: str, count: int) -> dict:
    code = BASELINE.format(scripts=str(ROOT / "scripts"), count=count)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=1800,
                          cwd="/tmp")
    if done.returncode != 0:
        raise SystemExit(f"the baseline run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_worker(model, count: int):
    """The unsplit model streamed on one single-core worker: (reference output, seconds per
    input measured, seconds predicted, operators)."""
    single = compile_on(model.mod, 1, "throughput")
    reference = single(*model.inputs).numpy()
    single.attach_workers("ray", cores=CORES[:1], threads=1)
    measured, _, _ = stream_per_input(single, model.inputs, count)
    single.close()
    return reference, measured, evaluation(single).max_load, single.problem.num_ops


#: A BERT layer's 15 operators over two devices back and forth (9 stages, cpu:1 between cpu:0's
#: attention and its second FFN matmul): like the placement rebalance() gave in an earlier run,
#: whose stream ran at 1.46x its max-stage time in the order the Ray runtime used then.
BACK_AND_FORTH = [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0]


def back_and_forth_row(model, label: str, reference, one: float, predicted_one: float,
                       args) -> Row:
    placed = compile_on(model.mod, 2, "throughput", placement=np.array(BACK_AND_FORTH))
    placed.attach_workers("ray", cores=CORES, threads=1)
    measured, wall, outputs = stream_per_input(placed, model.inputs, args.inputs)
    check_equal(outputs[-1], reference, label)
    stream = predicted_stream(placed)
    row = Row("pipeline", f"{label}: a given split back and forth ({stage_count(placed)} stages)",
              f"{one / measured:.2f}x ({1 / measured:.3f} inputs/s)", f"{predicted_one / stream:.2f}x",
              f"{measured / stream:.2f}x of predicted per input",
              f"steady state {measured * 1e3:.0f} ms per input, predicted {stream * 1e3:.0f} ms "
              f"(max-stage {evaluation(placed).max_load * 1e3:.0f} ms); wall per input "
              f"{wall * 1e3:.0f} ms",
              [placed.last_stats.format(), placed.compare(),
               "Gantt chart (the actors' clocks):\n" + placed.last_stats.gantt()])
    placed.close()
    return row


def pipeline_rows(args) -> list[Row]:
    from tvm_place import models

    rows = []
    for name, sizes in (("resnet18", {}), ("bert-layer", {"seq_len": 512})):
        model = models.get(name, **sizes)
        label = f"{name} ({', '.join(f'{k}={v}' for k, v in sizes.items()) or 'full size'})"
        log(f"pipeline {label}: compiling")
        reference, one, predicted_one, _ = one_worker(model, args.inputs)
        # The exact IP over all placements: a device may run two stages apart (a BERT layer's
        # first FFN matmul alone on one device, everything else on the other).
        split = on_workers(compile_on(model.mod, 2, "throughput", method="ip"), model.mod, 2,
                           resolve="throughput", method="ip")
        two, _, outputs = stream_per_input(split, model.inputs, args.inputs)
        check_equal(outputs[-1], reference, label)
        predicted = evaluation(split)
        stream = predicted_stream(split)
        loads = split.last_stats.device_times()["load"]
        per_stage = [loads[d] / predicted.load[d] for d in range(2) if predicted.load[d] > 0]
        worst = max(abs(r - 1) for r in per_stage)
        rows.append(Row(
            "pipeline", f"{label}: pipeline on 2 workers vs 1 worker (throughput)",
            f"{one / two:.2f}x ({1 / two:.3f} vs {1 / one:.3f} inputs/s)",
            f"{predicted_one / stream:.2f}x",
            "per device load measured/predicted: " + ", ".join(f"{r:.2f}" for r in per_stage),
            f"steady state {two * 1e3:.0f} ms per input, predicted {stream * 1e3:.0f} ms "
            f"({two / stream:.2f}x; max-stage {predicted.max_load * 1e3:.0f} ms); worst per-device "
            f"deviation {worst:.0%}; unsplit predicted {predicted_one * 1e3:.0f} ms, "
            f"measured {one * 1e3:.0f} ms per input; {stage_count(split)} stages",
            [split.last_stats.format(), split.compare()],
        ))
        # Measured feedback: re-solve with the stage and copy times this run measured.
        new = split.rebalance(method="ip")
        moved = int((new.device_of != split.placement.device_of).sum())
        if moved:
            links, problem = split.links, split.problem
            split.close()
            split = compile_on(model.mod, 2, "throughput", placement=new)
            split.attach_workers("ray", cores=CORES, threads=1, calibrate=False)
            split.links, split.problem = links, problem
            three, _, outputs = stream_per_input(split, model.inputs, args.inputs)
            check_equal(outputs[-1], reference, label)
            stream = predicted_stream(split)
            rows.append(Row("pipeline", f"{label}: after measured feedback ({moved} operators moved)",
                            f"{one / three:.2f}x ({1 / three:.3f} inputs/s)",
                            f"{predicted_one / stream:.2f}x",
                            f"{three / stream:.2f}x of predicted per input",
                            f"steady state {three * 1e3:.0f} ms per input, predicted "
                            f"{stream * 1e3:.0f} ms; rebalance() predicted {new.value * 1e3:.0f} ms "
                            f"(max-stage); {stage_count(split)} stages",
                            [split.last_stats.format(), split.compare(),
                             "Gantt chart (the actors' clocks):\n" + split.last_stats.gantt()]))
        split.close()
        if name == "bert-layer":
            log(f"pipeline {label}: a given split back and forth")
            rows.append(back_and_forth_row(model, label, reference, one, predicted_one, args))
    return rows


# Models with parallel branches. The two-tower model's ID tables are cut to 100k rows (each
# stage library carries its weights to its actor: 2 x 256 MB at the full 1M rows).
def replica_rows(args) -> list[Row]:
    """Two replicas of a whole model (DiviML's data parallelism) on two workers vs one."""
    from tvm_place import models
    from tvm_place.graph import Placement

    model = models.get("resnet18")
    log("replicas resnet18: compiling")
    reference, one, predicted_one, num_ops = one_worker(model, args.inputs)
    replicated = Placement(device_of=np.zeros(num_ops, dtype=np.int64),
                           objective="throughput", value=0.0, lower_bound=0.0, method="given",
                           replicas=[(0, 1)])
    placed = compile_on(model.mod, 2, "throughput", placement=replicated)
    placed.attach_workers("ray", cores=CORES, threads=1)
    two, _, outputs = stream_per_input(placed, model.inputs, args.inputs)
    check_equal(outputs[-1], reference, "resnet18 replicas")
    predicted = evaluation(placed).max_load
    row = Row("replicas", "resnet18 (full size): 2 replicas on 2 workers vs 1 worker (throughput)",
              f"{one / two:.2f}x ({1 / two:.3f} vs {1 / one:.3f} inputs/s)",
              f"{predicted_one / predicted:.2f}x", f"{two / predicted:.2f}x of predicted per input",
              "inputs dealt alternately; results in input order", [placed.last_stats.format()])
    placed.close()
    return [row]


LATENCY_MODELS = (
    ("inception-v3", {}),
    ("randwire-ws", {}),
    ("randwire-er", {}),
    ("two-tower", {"batch": 256, "query_rows": 100_000, "item_rows": 100_000}),
    ("moe-block", {}),
)


def latency_rows(args) -> list[Row]:
    from tvm_place import models

    rows = []
    mod = dense_branches()
    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    log("two towers: compiling")
    single = compile_on(mod, 1, "latency")
    reference = single(x).numpy()
    single.attach_workers("ray", cores=CORES[:1], threads=1)
    one = single.measure_latency([x], repeat=args.repeat)
    single.close()
    split = on_workers(compile_on(mod, 2, "latency"), mod, 2, resolve="latency")
    two = split.measure_latency([x], repeat=args.repeat)
    check_equal(split(x), reference, "two towers")
    predicted = evaluation(split)
    on_workers_time = predicted_one_at_a_time(split)
    rows.append(Row("latency", "two equal towers: 2 workers vs 1 worker (latency)",
                    f"{two / one:.2f}x ({two * 1e3:.0f} vs {one * 1e3:.0f} ms)",
                    f"{predicted.latency * 1e3:.0f} ms on 2 workers",
                    f"{two / predicted.latency:.2f}x of predicted",
                    f"{split.problem.num_ops} operators; "
                    f"{int((split.placement.device_of == 1).sum())} on cpu:1; copies on the "
                    f"workers {on_workers_time * 1e3:.0f} ms ({two / on_workers_time:.2f}x)"))
    split.close()
    for name, sizes in LATENCY_MODELS:
        if args.models and name not in args.models:
            continue
        model = models.get(name, **sizes)
        label = f"{name} ({', '.join(f'{k}={v}' for k, v in sizes.items()) or 'full size'})"
        log(f"latency {label}: compiling")
        reference = compile_on(model.mod, 1, "latency")(*model.inputs)
        reference = (first(reference).numpy())
        placed = on_workers(compile_on(model.mod, 2, "latency"), model.mod, 2, resolve="latency")
        measured = placed.measure_latency(model.inputs, repeat=args.repeat)
        check_equal(placed(*model.inputs), reference, label)
        predicted = evaluation(placed)
        on_workers_time = predicted_one_at_a_time(placed)
        ran = float(placed.latency_stats.latencies[0])  # the run check_equal just made
        again = repriced(placed, placed.latency_stats)
        on = np.bincount(placed.placement.device_of, minlength=2)
        rows.append(Row("latency", f"{label}: latency placement on 2 workers",
                        f"{measured * 1e3:.0f} ms", f"{predicted.latency * 1e3:.0f} ms",
                        f"{measured / predicted.latency:.2f}x",
                        f"{placed.problem.num_ops} operators ({on[0]} / {on[1]}), "
                        f"{stage_count(placed)} stages, "
                        f"{placed.plan.num_copies} copies; method {placed.placement.method}; "
                        f"copies on the workers {on_workers_time * 1e3:.0f} ms "
                        f"({measured / on_workers_time:.2f}x); re-priced with that run's own "
                        f"kernel and copy times {again * 1e3:.0f} ms against its "
                        f"{ran * 1e3:.0f} ms ({ran / again:.2f}x)",
                        [placed.latency_stats.format(),
                         "Gantt chart (the actors' clocks):\n" + placed.latency_stats.gantt()]))
        placed.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="transfer,pipeline,replicas,latency")
    parser.add_argument("--models", default="", help="latency models to run (default: all)")
    parser.add_argument("--inputs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-python", default=None)
    parser.add_argument("--out", default=str(ROOT / "docs" / "runtime-benchmark.md"))
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    from tvm_place.runtime.ray_engine import ensure_ray

    started = time.monotonic()
    ray_start = time.perf_counter()
    ensure_ray()
    ray_seconds = time.perf_counter() - ray_start
    rows: list[Row] = []
    with LoadSampler() as load:
        for section in args.rows.split(","):
            rows += {"transfer": transfer_row, "pipeline": pipeline_rows,
                     "replicas": replica_rows, "latency": latency_rows}[section](args)
    command = "python " + " ".join(shlex.quote(a) for a in [shown(__file__), *sys.argv[1:]])
    table = ["| row | measured | predicted | ratio | notes |", "| --- | ---: | ---: | --- | --- |"]
    table += [f"| {r.name} | {r.measured} | {r.predicted} | {r.ratio} | {r.note} |" for r in rows]
    header = (f"`{command}` on {today()}: {machine()}; {versions()}; Ray started in "
              f"{ray_seconds:.1f} s; load average {load.summary()}; {time.monotonic() - started:.0f} s "
              "in all. Ray actors pinned to one core each, one TVM thread; measured kernel costs; "
              "links measured on attach.")
    report = [f"# Runtime: predicted vs measured\n\n{header}\n", *table, ""]
    for row in rows:
        if row.details:
            report += [f"## {row.name}\n", "```", *[d.strip() for d in row.details], "```", ""]
    Path(args.out).write_text("\n".join(report))
    write_block("runtime", "## Runtime: predicted vs measured (issue 13)",
                f"{header} Full report: [{Path(args.out).name}]({Path(args.out).name}).\n\n"
                + "\n".join(table))
    print("\n".join(table))


if __name__ == "__main__":
    main()
