"""Table 5 of issue 4: solver time against graph size, for every registered method.

Graphs: random layered DAGs (DNN-like: layers of 1 to 3 operators, each taking one or two inputs
from the previous layers, some skip connections; FLOPs and bytes drawn log-uniformly and costed
with the analytical roofline, so costs look like a real model's) of ``--sizes`` operators, and the
testbed's real models (``testbed/``, ``--real`` of them spread over the sizes; largest included).
Hardware: 1 server CPU + A100 + T4 (DiviML's node). Every method of ``tvm_place.solvers.METHODS``
solves each graph under ``--time-limit`` seconds, for throughput where it can, else latency
(after one untimed warm-up solve per method on an 8-operator graph, which loads its libraries).
Recorded: wall seconds, whether it stopped at its time limit, value relative to the best value
any method found for that graph and objective, and the error if it failed. Once a method needed
more than 1.5x the time limit + 1 s (it does not keep to it) or failed on a size, larger random graphs
are not tried for it (recorded as skipped).

Writes a table (median seconds per size bucket) and a PNG plot (``docs/scaling.png``) and the
block between ``<!-- table:scaling -->`` and ``<!-- /table:scaling -->`` of docs/benchmarks.md.

Usage::

    python scripts/table_scaling.py --time-limit 3
    python scripts/table_scaling.py --sizes 20 40 --real 0 --methods greedy dp --no-doc   # reduced
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import _tables as tables  # noqa: E402

SIZES = (25, 50, 100, 200, 400, 800, 1600, 3200)
HARDWARE = (["llvm", "cuda", "cuda"], ["server-cpu", "a100", "t4"])


def random_layered_problem(num_ops: int, seed: int = 0):
    """A DNN-like random layered DAG of ``num_ops`` operators on CPU + A100 + T4."""
    from tvm_place.cost.analytical import AnalyticalCostModel
    from tvm_place.cost.base import transfer_costs
    from tvm_place.graph import OpGraph, OpNode, PlacementProblem
    from tvm_place.targets import resolve_targets

    rng = np.random.default_rng(seed)
    layers: list[list[int]] = []
    count = 0
    while count < num_ops:
        width = min(int(rng.integers(1, 4)), num_ops - count)
        layers.append(list(range(count, count + width)))
        count += width
    edges = set()
    for li in range(1, len(layers)):
        for v in layers[li]:
            for _ in range(int(rng.integers(1, 3))):
                back = 1 if li < 2 or rng.random() < 0.8 else int(rng.integers(2, min(li, 6) + 1))
                u = int(rng.choice(layers[li - back]))
                edges.add((u, v))
        # every operator of the previous layer feeds something (no dead ends in the middle)
        for u in layers[li - 1]:
            if not any(e[0] == u for e in edges):
                edges.add((u, int(rng.choice(layers[li]))))
    nodes = []
    for u in range(num_ops):
        flops = float(np.exp(rng.uniform(np.log(1e5), np.log(5e9))))
        out_bytes = float(np.exp(rng.uniform(np.log(4e3), np.log(4e6))))
        params = float(np.exp(rng.uniform(np.log(1e3), np.log(1e7)))) if rng.random() < 0.6 else 0.0
        nodes.append(OpNode(f"op{u}", flops=flops, bytes_accessed=2 * out_bytes + params,
                            output_bytes=out_bytes, param_bytes=params))
    graph = OpGraph(nodes, sorted(edges))
    devices = resolve_targets(*HARDWARE)
    model = AnalyticalCostModel()
    compute = np.array([[model.op_time(None, n, d)[0] for d in devices] for n in nodes])
    from tvm_place.graph import Device

    return PlacementProblem(
        graph=graph,
        devices=[Device(name=d.name, kind=d.kind, memory_capacity=d.profile.memory_bytes,
                        target=str(d.target), profile=d.profile.name) for d in devices],
        compute_time=compute,
        transfer_time=transfer_costs(graph, devices),
        memory=np.array([n.param_bytes + n.output_bytes for n in nodes]),
        name=f"random-{num_ops}",
    )


def real_problems(testbed: Path, how_many: int) -> list[tuple[str, Path, int]]:
    """``how_many`` testbed models on cpu+a100+t4, spread over the sizes (the largest included)."""
    manifest_path = testbed / "manifest.json"
    if how_many <= 0 or not manifest_path.exists():
        return []
    manifest = json.loads(manifest_path.read_text())
    entries = sorted((e for e in manifest["problems"] if e["hardware"] == "cpu+a100+t4"),
                     key=lambda e: e["ops"])
    if not entries:
        return []
    if how_many >= len(entries):
        picked = entries
    else:
        picks = sorted({round(i * (len(entries) - 1) / (how_many - 1)) for i in range(how_many)}) \
            if how_many > 1 else [len(entries) - 1]
        picked = [entries[i] for i in picks]
    return [(e["model"], testbed / e["file"], e["ops"]) for e in picked]


def objective_of(method: str) -> str:
    from tvm_place.solvers import METHODS

    objectives = METHODS[method].objectives
    return "throughput" if "throughput" in objectives else objectives[0]


def bucket(n: int) -> str:
    for lo, hi in ((0, 37), (37, 75), (75, 150), (150, 300), (300, 600), (600, 1200), (1200, 2400)):
        if lo <= n < hi:
            return f"{lo}-{hi - 1}"
    return ">=2400"


def run(args) -> tuple[list[dict], list[dict]]:
    from tvm_place.formats import load_problem
    from tvm_place.solvers import METHODS, solve

    methods = args.methods or list(METHODS)
    graphs = [(f"random-{n}", None, n) for n in args.sizes]
    graphs += real_problems(Path(args.testbed), args.real)
    graphs.sort(key=lambda g: g[2])
    # Warm-up: the first call of each method imports its solver libraries; keep that out of the times.
    tiny = random_layered_problem(8, seed=1)
    for method in methods:
        try:
            solve(tiny, objective_of(method), method, 1.0)
        except Exception:  # noqa: BLE001 - its failures show in the timed runs
            pass
    rows, skipped = [], []
    stopped: dict[str, str] = {}
    started_all = time.perf_counter()
    for gi, (name, path, _) in enumerate(graphs, 1):
        problem = load_problem(str(path)) if path else random_layered_problem(int(name.split("-")[1]))
        for method in methods:
            if method in stopped and name.startswith("random"):
                skipped.append({"graph": name, "method": method, "reason": stopped[method]})
                continue
            if args.budget is not None and time.perf_counter() - started_all > args.budget:
                skipped.append({"graph": name, "method": method, "reason": "over the budget"})
                continue
            objective = objective_of(method)
            row = {"graph": name, "real": path is not None, "ops": problem.num_ops,
                   "edges": len(problem.graph.edges), "method": method, "objective": objective}
            t0 = time.perf_counter()
            try:
                placement = solve(problem, objective, method, args.time_limit)
            except Exception as err:  # noqa: BLE001 - recorded
                row["seconds"] = time.perf_counter() - t0
                row["error"] = f"{type(err).__name__}: {str(err)[:160]}"
                if name.startswith("random"):
                    stopped.setdefault(method, f"failed at {problem.num_ops} operators")
            else:
                row["seconds"] = time.perf_counter() - t0
                row["value"] = placement.value
                row["lower_bound"] = placement.lower_bound
                row["optimal"] = bool(placement.value <= placement.lower_bound * (1 + 1e-6))
            row["at_limit"] = row["seconds"] >= 0.9 * args.time_limit
            if row["seconds"] > 1.5 * args.time_limit + 1.0 and name.startswith("random"):
                stopped.setdefault(method, f"took {row['seconds']:.1f} s > 1.5x the limit + 1 s at "
                                           f"{problem.num_ops} operators")
            rows.append(row)
            status = row.get("error", f"{row.get('value', 0):.4g}")
            print(f"[{gi}/{len(graphs)}] {name} ({problem.num_ops} ops) {method}: "
                  f"{row['seconds']:.2f} s  {status[:80]}  [{time.perf_counter() - started_all:.0f} s]",
                  flush=True)
    compare(rows)
    return rows, skipped


def _space(method: str) -> str:
    from tvm_place.solvers import METHODS

    # replica groups (data parallelism) are a larger search space: compared among themselves
    return "replicated" if METHODS[method].search_space == "replicated" else "placements"


def compare(rows: list[dict]) -> None:
    """``vs_best``: value over the best any method found on the same graph, objective and space
    (placements, or placements with replica groups)."""
    best: dict[tuple[str, str, str], float] = {}
    for r in rows:
        if "value" in r:
            key = (r["graph"], r["objective"], _space(r["method"]))
            best[key] = min(best.get(key, math.inf), r["value"])
    for r in rows:
        key = (r["graph"], r["objective"], _space(r["method"]))
        r.pop("vs_best", None)
        if "value" in r and best[key] > 0:
            r["vs_best"] = r["value"] / best[key]


def render(rows: list[dict], skipped: list[dict], args, meta: dict, plot: str | None) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    graphs = sorted({(r["ops"], r["graph"]) for r in rows})
    lines = [
        f"`{meta['command']}`, {meta['date']}, {meta['machine']}; load average "
        f"{meta['load_start']:.1f} at the start and {meta['load_end']:.1f} at the end (other jobs "
        f"shared the 2 cores); {meta['versions']}; {meta['seconds']:.0f} s in all.",
        "",
        f"Hardware: server CPU + A100 + T4 (analytical costs). Time limit {args.time_limit} s per "
        "solve; objective throughput where the method has it, else latency. Seconds per graph "
        "(wall, including `solve`'s re-check); `*` = stopped at its time limit (answer is the "
        "best found then), `x` = failed (see below), `-` = not tried (skipped after a failure or "
        "overrun on a smaller random graph, or budget). Random graphs are layered DNN-like DAGs; "
        "named ones are testbed models.",
        "",
        "| graph | ops | " + " | ".join(methods) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in methods) + " |",
    ]
    by = {(r["graph"], r["method"]): r for r in rows}
    for ops, g in graphs:
        cells = []
        for m in methods:
            r = by.get((g, m))
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append("x")
            else:
                cells.append(f"{r['seconds']:.2f}{'*' if r['at_limit'] else ''}")
        lines.append(f"| {g} | {ops} | " + " | ".join(cells) + " |")
    # quality summary per method
    lines += ["", "Value against the best any method found on the same graph and objective (geometric "
              "mean; 1.000 = always the best; diviml-replicas, which may also replicate operators over "
              "devices, is compared with itself only), graphs solved, and the largest graph solved "
              "before its time limit:", "",
              "| method | objective | vs best (geo. mean) | solved | at time limit | failed | largest solved before the limit (ops) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ok = [r for r in mine if "vs_best" in r]
        geo = math.exp(statistics.fmean(math.log(r["vs_best"]) for r in ok)) if ok else float("nan")
        within = [r["ops"] for r in ok if not r["at_limit"]]
        lines.append(
            f"| {m} | {mine[0]['objective']} | {geo:.3f} | {len(ok)}/{len(mine)} | "
            f"{sum(1 for r in mine if r['at_limit'])} | {sum(1 for r in mine if 'error' in r)} | "
            f"{max(within) if within else '-'} |"
        )
    over = [r for r in rows if r["seconds"] > 1.25 * args.time_limit + 0.25]
    if over:
        worst: dict[str, dict] = {}
        for r in over:
            if r["method"] not in worst or r["seconds"] > worst[r["method"]]["seconds"]:
                worst[r["method"]] = r
        lines += ["", "Over the time limit (more than 1.25x + 0.25 s, wall time including `solve`'s "
                  "re-check; the worst case per method): " + ", ".join(
                      f"{m} {r['seconds']:.1f} s on {r['graph']}" for m, r in sorted(worst.items())) + "."]
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Failures: " + "; ".join(
            f"{r['method']} on {r['graph']} ({r['ops']} ops): {r['error'][:110]}" for r in errors[:12])
            + (f"; and {len(errors) - 12} more" if len(errors) > 12 else "") + "."]
    if skipped:
        reasons: dict[str, list[str]] = {}
        for s in skipped:
            reasons.setdefault(f"{s['method']} ({s['reason']})", []).append(s["graph"])
        lines += ["", "Not tried: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in reasons.items()) + "."]
    if plot:
        lines += ["", f"![solver time against graph size]({plot})"]
    for note in meta.get("notes", []):
        lines += ["", note]
    return "\n".join(lines)


def make_plot(rows: list[dict], path: Path, time_limit: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 5.5))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(methods):
        mine = sorted((r for r in rows if r["method"] == m and "error" not in r), key=lambda r: r["ops"])
        if not mine:
            continue
        rand = [r for r in mine if not r["real"]]
        real = [r for r in mine if r["real"]]
        colour = cmap(i % 20)
        ax.plot([r["ops"] for r in rand], [r["seconds"] for r in rand], "-o", ms=3, color=colour, label=m)
        ax.plot([r["ops"] for r in real], [r["seconds"] for r in real], "x", ms=6, color=colour)
    ax.axhline(time_limit, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operators (lines: random layered DAGs; x: testbed models)")
    ax.set_ylabel("solve time (s)")
    ax.set_title(f"Solver time vs graph size, CPU + A100 + T4, limit {time_limit} s (dashed)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--time-limit", type=float, default=3.0)
    parser.add_argument("--testbed", default=str(ROOT / "testbed"))
    parser.add_argument("--real", type=int, default=6, help="testbed models to include (0: none)")
    parser.add_argument("--budget", type=float, default=None,
                        help="start no new solve after this many seconds")
    parser.add_argument("--results", default=str(ROOT / "docs" / "data" / "tables" / "scaling.json"),
                        help="per-solve JSON (default docs/data/tables/scaling.json)")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "scaling.png"))
    parser.add_argument("--doc", default=str(tables.BENCHMARKS))
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--from-results", default=None,
                        help="re-render the table, plot and block from an earlier run's JSON")
    parser.add_argument("--note", action="append", default=[],
                        help="a paragraph to add under the table (repeatable)")
    args = parser.parse_args(argv)

    plot_path = Path(args.plot) if args.plot else None
    if args.from_results:
        earlier = json.loads(Path(args.from_results).read_text())
        rows, skipped, meta = earlier["rows"], earlier["skipped"], earlier["meta"]
        args.time_limit = meta.get("time_limit", args.time_limit)
        compare(rows)
        meta["notes"] = list(meta.get("notes", [])) + args.note + [
            tables.rendered_note(args.from_results)]
    else:
        load_start = tables.load_average()
        started = time.perf_counter()
        rows, skipped = run(args)
        meta = tables.run_record("table_scaling.py", argv, load_start, started,
                                 time_limit=args.time_limit, notes=list(args.note))
    if plot_path:
        make_plot(rows, plot_path, args.time_limit)
    doc = Path(args.doc)
    rel_plot = None
    if plot_path:
        try:
            rel_plot = str(plot_path.resolve().relative_to(doc.resolve().parent))
        except ValueError:
            rel_plot = str(plot_path)
    results = Path(args.results)
    rerendered = args.from_results and results.resolve() == Path(args.from_results).resolve()
    tables.publish("scaling", "## Solver scaling: time against graph size (issue 4, table 5)",
                   render(rows, skipped, args, meta, rel_plot), None if args.no_doc else doc,
                   None if rerendered else results, {"meta": meta, "rows": rows, "skipped": skipped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
