"""Issue 15, "time limits at scale": does every method keep to its time limit on 10,000- and
200,000-operator graphs, and does ``auto`` return at least what its cheap methods find?

Graphs: :func:`layered_problem`, a random layered DAG like a real model's (layers of 1 to 3
operators, each taking one or two inputs from the previous layers, some skip connections),
generated with NumPy in O(n); ``D`` devices (a CPU and accelerators of different speeds), with
memory caps (each device holds at most ``1.6 / D`` of the model's memory, the CPU
uncapped) and pins (0.5% of the operators pinned to one device, along a pipeline). Every registered method solves each case in its own process (so a runaway is
killed at ``--kill-after`` seconds and cannot hide the others' times), under ``--time-limit``;
recorded: wall seconds of :func:`tvm_place.solvers.solve`, whether it kept to ``1.1 x limit + 2
s``, the value relative to ``greedy``'s and the gap, or the error.

Writes ``docs/time-limits.md`` (the table, the machine and its load average).

Usage::

    python scripts/time_limits_at_scale.py                       # 10k (limit 1 s) and 200k (10 s)
    python scripts/time_limits_at_scale.py --sizes 10000 --methods slicegraph auto --no-doc
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

#: ``(operators, devices, objective, time limit)`` run by default.
CASES = (
    (10_000, 4, "throughput", 1.0),
    (10_000, 4, "latency", 1.0),
    (10_000, 2, "throughput", 1.0),
    (10_000, 8, "latency", 1.0),
    (200_000, 8, "throughput", 10.0),
    (200_000, 8, "latency", 10.0),
)


def layered_problem(num_ops: int, num_devices: int = 4, seed: int = 0, memory_caps: bool = True,
                    pins: bool = True):
    """A random layered DAG of ``num_ops`` operators on ``num_devices`` devices (module
    docstring). Time O(n + m), vectorised: 200,000 operators in about a second."""
    from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem

    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 4, size=num_ops)
    ends = np.cumsum(widths)
    num_layers = int(np.searchsorted(ends, num_ops)) + 1
    widths = widths[:num_layers]
    widths[-1] -= int(ends[num_layers - 1] - num_ops)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    layer = np.repeat(np.arange(num_layers), widths)
    # Inputs: one or two per operator after the first layer; 80% from the previous layer, the
    # rest skip connections up to 6 layers back.
    consumers = np.flatnonzero(layer > 0)
    consumers = np.concatenate([consumers, consumers[rng.random(consumers.size) < 0.5]])
    li = layer[consumers]
    skip = rng.random(consumers.size) >= 0.8
    back = np.where(skip & (li >= 2), rng.integers(2, 7, size=consumers.size), 1)
    back = np.minimum(back, li)
    source_layer = li - back
    producers = starts[source_layer] + (rng.random(consumers.size) * widths[source_layer]).astype(
        np.int64)
    # Every operator before the last layer feeds something (no dead ends in the middle).
    has_output = np.zeros(num_ops, dtype=bool)
    has_output[producers] = True
    dead = np.flatnonzero(~has_output & (layer < num_layers - 1))
    nxt = layer[dead] + 1
    targets = starts[nxt] + (rng.random(dead.size) * widths[nxt]).astype(np.int64)
    src = np.concatenate([producers, dead])
    dst = np.concatenate([consumers, targets])
    edges = np.unique(src * num_ops + dst)
    edges = np.stack([edges // num_ops, edges % num_ops], axis=1)

    flops = np.exp(rng.uniform(np.log(1e5), np.log(5e9), size=num_ops))
    out_bytes = np.exp(rng.uniform(np.log(4e3), np.log(4e6), size=num_ops))
    params = np.where(rng.random(num_ops) < 0.6,
                      np.exp(rng.uniform(np.log(1e3), np.log(1e7), size=num_ops)), 0.0)
    # Device 0 a CPU (slow, no link cost: it is the host), the rest accelerators 3x to 30x faster
    # with PCIe-like links; each operator's speed on each device varies by +-30%.
    speed = np.concatenate([[1e11], 1e11 * np.exp(rng.uniform(np.log(3), np.log(30),
                                                               size=num_devices - 1))])
    compute = flops[:, None] / speed[None, :] * np.exp(rng.normal(0, 0.3, (num_ops, num_devices)))
    bandwidth = np.concatenate([[np.inf], rng.uniform(8e9, 32e9, size=num_devices - 1)])
    transfer = out_bytes[:, None] / bandwidth[None, :]
    memory = params + out_bytes
    capacity = np.full(num_devices, math.inf)
    if memory_caps:
        capacity[1:] = 1.6 * memory.sum() / num_devices
    pinned: dict[int, tuple[int, ...]] = {}
    if pins:
        # Pinned along a pipeline (device d in the d-th 1/D of the order), so that a contiguous
        # placement exists for the methods that search only those.
        chosen = rng.choice(num_ops, size=max(1, num_ops // 200), replace=False)
        pinned = {int(u): (int(u * num_devices // num_ops),) for u in chosen}
        pinned[0] = (0,)  # the input arrives on the host
    nodes = [OpNode(f"op{u}", flops=float(flops[u]), output_bytes=float(out_bytes[u]),
                    param_bytes=float(params[u]), bytes_accessed=float(2 * out_bytes[u] + params[u]))
             for u in range(num_ops)]
    devices = [Device("cpu" if d == 0 else f"acc{d}", kind="cpu" if d == 0 else "gpu",
                      memory_capacity=float(capacity[d])) for d in range(num_devices)]
    return PlacementProblem(OpGraph(nodes, edges), devices, compute, transfer, memory, pinned,
                            name=f"layered-{num_ops}-{num_devices}")


def cached_problem(num_ops: int, num_devices: int, seed: int = 0):
    """:func:`layered_problem`, pickled under the temp folder so each method's process loads it."""
    path = Path(tempfile.gettempdir()) / f"tvm-place-layered-{num_ops}-{num_devices}-{seed}.pkl"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    problem = layered_problem(num_ops, num_devices, seed)
    with path.open("wb") as f:
        pickle.dump(problem, f)
    return problem


def run_one(num_ops: int, num_devices: int, objective: str, method: str, limit: float) -> dict:
    """Solve one case in this process; the row of the table."""
    from tvm_place.solvers import solve

    problem = cached_problem(num_ops, num_devices)
    started = time.perf_counter()
    try:
        placement = solve(problem, objective, method, limit)
    except Exception as err:  # a failure is a result here
        return {"seconds": time.perf_counter() - started, "error": f"{type(err).__name__}: {err}"}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "value": placement.value, "lower_bound": placement.lower_bound,
            "gap": placement.gap, "method_used": placement.method}


def run_case(num_ops, num_devices, objective, method, limit, kill_after) -> dict:
    command = [sys.executable, __file__, "--one", str(num_ops), str(num_devices), objective, method,
               str(limit)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=kill_after)
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - started, "error": f"killed after {kill_after} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"seconds": time.perf_counter() - started,
                "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def render(rows: list[dict], loads: list[float]) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    import _tables as tables

    out = [
        "# Time limits at scale",
        "",
        "Issue 15: every method keeps to its time limit (within 1.1 x limit + 2 s) on 10,000- and "
        "200,000-operator graphs, and `auto` returns a placement wherever one of its methods "
        "finds one, no worse than `greedy`'s.",
        "",
        "Made by `python scripts/time_limits_at_scale.py` (random layered DAGs, "
        "`layered_problem` there: memory caps on the accelerators, 0.5% of the operators pinned; "
        "each method in its own process, killed after `--kill-after` seconds).",
        "",
        f"Machine: {tables.machine()}; load average during the run "
        f"{min(loads):.2f} to {max(loads):.2f}. {tables.versions()}. {tables.today()}.",
        "",
        "| operators | devices | objective | limit (s) | method | seconds | within limit | value | "
        "value / greedy | gap | note |",
        "|---:|---:|---|---:|---|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ok = row["seconds"] <= 1.1 * row["limit"] + 2.0
        greedy = next((r.get("value") for r in rows if r["case"] == row["case"]
                       and r["method"] == "greedy"), None)
        ratio = (f"{row['value'] / greedy:.3f}" if "value" in row and greedy else "")
        gap = f"{row['gap']:.1%}" if "gap" in row else ""
        note = row.get("error", row.get("method_used", ""))[:120].replace("|", "/")
        value = f"{row['value']:.4g}" if "value" in row else ""
        out.append(f"| {row['ops']:,} | {row['devices']} | {row['objective']} | {row['limit']:g} | "
                   f"{row['method']} | {row['seconds']:.2f} | {'yes' if ok else '**no**'} | "
                   f"{value} | {ratio} | {gap} | {note} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="*", help="only these operator counts")
    parser.add_argument("--methods", nargs="*", help="only these methods")
    parser.add_argument("--kill-after", type=float, default=150.0,
                        help="kill a method's process after this many seconds")
    parser.add_argument("--no-doc", action="store_true", help="print the table, write no doc")
    parser.add_argument("--output", default=str(ROOT / "docs" / "time-limits.md"))
    args = parser.parse_args(argv)
    if args.one:
        ops, devices, objective, method, limit = args.one
        print(json.dumps(run_one(int(ops), int(devices), objective, method, float(limit))))
        return 0
    from tvm_place.solvers import METHODS

    rows, loads = [], []
    for ops, devices, objective, limit in CASES:
        if args.sizes and ops not in args.sizes:
            continue
        cached_problem(ops, devices)
        methods = [m for m, entry in sorted(METHODS.items()) if objective in entry.objectives
                   and (not args.methods or m in args.methods)]
        for method in methods:
            loads.append(os.getloadavg()[0])
            row = run_case(ops, devices, objective, method, limit, args.kill_after)
            row.update(case=(ops, devices, objective), ops=ops, devices=devices,
                       objective=objective, limit=limit, method=method)
            rows.append(row)
            print(f"{ops} {devices} {objective} {method}: {row['seconds']:.2f} s "
                  f"{row.get('value', row.get('error'))} (load {loads[-1]:.2f})", flush=True)
    loads.append(os.getloadavg()[0])
    table = render(rows, loads)
    Path(tempfile.gettempdir(), "time-limits-rows.json").write_text(
        json.dumps([{k: v for k, v in row.items() if k != "case"} for row in rows], indent=1))
    if args.no_doc:
        print(table)
    else:
        Path(args.output).write_text(table)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
