"""Table 3 (DiviML, Ghannane & Abdelfattah, arXiv 2308.00127) on DiviML's heterogeneous node.

Each model (batch 1, real size unless ``--reduced``) is costed with the analytical roofline
profiles on one server CPU + an A100 + a T4 (``server-cpu``, ``a100``, ``t4`` in
tvm_place/cost/profiles/devices.json), then, for latency and throughput:

(a) heuristic vs exact: ``split`` (DiviML's modularity heuristic) against ``diviml-milp`` (the
    exact program), each with ``--time-limit`` seconds: quality loss (split / MILP - 1) and
    speed-up (MILP seconds / split seconds), with the MILP's status, bound and gap;
(b) the best placement found on the three devices against the fastest single GPU (every operator
    on the A100 or every operator on the T4, whichever is better), plus ``diviml-replicas``
    (throughput with data-parallel replica groups).

Every number is a *prediction* of the analytical cost model, not a measurement: no GPU ran.
Writes the block ``<!-- table:diviml -->`` of docs/benchmarks.md (only that block) and the raw
results to docs/data/tables/diviml.json (``--no-write``: print only). ``--merge-into`` puts the
rows of this run (or of ``--from-json``) into earlier saved results in place of the same models'
rows, keeps the other rows, and renders the block (aggregates included) from the merged rows; the
header names each merged run's command, date and load.

Usage:
    python scripts/table_diviml.py [--time-limit 60] [--models resnet50,bert-base]
    python scripts/table_diviml.py --reduced --time-limit 2 --no-write     (seconds; the tests)
    python scripts/table_diviml.py --time-limit 60 --models dlrm \
        --merge-into docs/data/tables/diviml.json   (re-measure one model, keep the other rows)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import ROOT, LoadSampler, machine, today, versions, write_block  # noqa: E402

TARGETS = ["llvm", "cuda", "cuda"]
PROFILES = ["server-cpu", "a100", "t4"]

#: (family, registry name, size overrides) at real size.
FULL = [
    ("CNN", "resnet50", {}),
    ("CNN", "inception-v3", {}),
    ("Transformer", "bert-base", {}),
    ("Transformer", "gpt2-small", {}),
    ("RandWire", "randwire-ws", {}),
    ("RandWire", "randwire-er", {}),
    ("Recommender", "dlrm", {}),
    ("Mixture of experts", "moe-block", {}),
]

#: Tiny versions for the tests (graphs of a few dozen operators).
REDUCED = [
    ("CNN", "resnet18", {"image_size": 32, "width": 8, "num_classes": 10}),
    ("Transformer", "bert-layer", {"seq_len": 16, "hidden": 64, "heads": 2, "ffn": 128}),
    ("RandWire", "randwire-ws", {"image_size": 32, "num_nodes": 10, "channels": 8,
                                 "num_classes": 10}),
]

OUT_JSON = ROOT / "docs" / "data" / "tables" / "diviml.json"


def build_problem(name: str, sizes: dict, cache_dir: Path | None):
    """The placement problem of one registry model on server-cpu + a100 + t4 (analytical costs);
    cached as JSON in ``cache_dir`` (None: no cache)."""
    from tvm_place import models
    from tvm_place.compiler import place
    from tvm_place.formats import problem_from_dict, problem_to_json

    tag = name + "".join(f"-{k}={v}" for k, v in sorted(sizes.items()))
    path = None if cache_dir is None else cache_dir / f"{tag}.json"
    if path is not None and path.exists():
        return problem_from_dict(json.loads(path.read_text())), 0.0, True
    started = time.perf_counter()
    model = models.get(name, batch=1, **sizes)
    placed = place(model.mod, TARGETS, objective="latency", method="fastest-device",
                   cost_model="analytical", profiles=PROFILES, name=tag, time_limit=10)
    problem = placed.problem
    seconds = time.perf_counter() - started
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(problem_to_json(problem))
    return problem, seconds, False


def single_device(problem, device: int) -> dict:
    """Every operator on ``device`` (None where memory or support forbids it)."""
    from tvm_place.errors import InvalidPlacementError
    from tvm_place.evaluate import evaluate

    try:
        ev = evaluate(problem, np.full(problem.num_ops, device, dtype=np.int64))
    except InvalidPlacementError as err:
        return {"device": problem.device_names[device], "error": str(err)}
    return {"device": problem.device_names[device], "profile": problem.devices[device].profile,
            "latency": ev.latency, "max_load": ev.max_load}


def run_solver(problem, objective: str, method: str, time_limit: float) -> dict:
    from tvm_place.solvers import solve

    started = time.perf_counter()
    try:
        placement = solve(problem, objective, method, time_limit)
    except Exception as err:  # noqa: BLE001 - a failed solve is a table entry, not a crash
        return {"method": method, "error": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    counts = np.bincount(placement.device_of, minlength=problem.num_devices)
    stats = placement.stats
    return {
        "method": method,
        "value": placement.value,
        "lower_bound": placement.lower_bound,
        "gap": placement.gap,
        "seconds": seconds,
        "status": stats.get("status", "heuristic" if method == "split" else None),
        "solution_from": stats.get("solution_from"),
        "modules": stats.get("modules"),
        "ops_per_device": {problem.device_names[d]: int(c) for d, c in enumerate(counts)},
        "replicas": [[problem.device_names[d] for d in g] for g in placement.replicas],
    }


def run_model(family: str, name: str, sizes: dict, time_limit: float, cache_dir, log) -> dict:
    problem, build_seconds, cached = build_problem(name, sizes, cache_dir)
    log(f"{name}: {problem.num_ops} ops, {len(problem.graph.edges)} edges "
        f"({'cached' if cached else f'built in {build_seconds:.1f} s'})")
    row = {"family": family, "model": name, "sizes": sizes, "ops": problem.num_ops,
           "edges": int(len(problem.graph.edges)), "build_seconds": build_seconds,
           "devices": [f"{d.name} ({d.profile})" for d in problem.devices],
           "single": [single_device(problem, d) for d in range(problem.num_devices)]}
    for objective in ("latency", "throughput"):
        for method in ("split", "diviml-milp"):
            result = run_solver(problem, objective, method, time_limit)
            row[f"{objective}/{method}"] = result
            log(f"  {objective:10s} {method:12s} " + (
                result.get("error") or f"{result['value'] * 1e3:.4f} ms, bound "
                f"{result['lower_bound'] * 1e3:.4f}, {result['seconds']:.1f} s, {result['status']}"))
    result = run_solver(problem, "throughput", "diviml-replicas", time_limit)
    row["throughput/diviml-replicas"] = result
    log("  throughput diviml-replicas " + (
        result.get("error") or f"{result['value'] * 1e3:.4f} ms/input, {result['seconds']:.1f} s, "
        f"{result['status']}, groups {result['replicas']}"))
    return row


# -- derived numbers ---------------------------------------------------------------------------
def best_gpu(row: dict, key: str) -> dict | None:
    gpus = [s for s in row["single"] if "error" not in s and s["device"].startswith("gpu")]
    return min(gpus, key=lambda s: s[key]) if gpus else None


def best_found(row: dict, objective: str, methods=("split", "diviml-milp")) -> dict | None:
    found = [row[f"{objective}/{m}"] for m in methods if "value" in row.get(f"{objective}/{m}", {})]
    return min(found, key=lambda r: r["value"]) if found else None


def best_bound(row: dict, objective: str) -> float:
    """The best lower bound either method proved (no replicas)."""
    return max(row[f"{objective}/{m}"].get("lower_bound", 0.0) for m in ("split", "diviml-milp"))


def comparison(row: dict, objective: str) -> dict | None:
    """Heuristic vs exact for one objective: loss (%) and speed-up."""
    h, e = row[f"{objective}/split"], row[f"{objective}/diviml-milp"]
    if "value" not in h or "value" not in e:
        return None
    return {"loss_pct": (h["value"] / e["value"] - 1) * 100 if e["value"] > 0 else 0.0,
            "speedup": e["seconds"] / max(h["seconds"], 1e-9)}


def geomean(values) -> float:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def status_text(result: dict) -> str:
    if "error" in result:
        return "failed"
    if result["status"] == "optimal":
        return "optimal"
    return f"time limit, gap {result['gap'] * 100:.1f}%"


def command_line(argv: list[str]) -> str:
    return ("python scripts/table_diviml.py " + " ".join(argv)).strip()


def merge(base: dict, run: dict) -> dict:
    """``base`` (saved results) with ``run``'s rows in place of its rows of the same models
    (models new to ``base`` are appended); ``run``'s command, date and load go to ``merged``."""
    fresh = {row["model"]: row for row in run["rows"]}
    rows = [fresh.pop(row["model"], row) for row in base["rows"]] + list(fresh.values())
    entry = {"models": [row["model"] for row in run["rows"]]}
    entry.update({k: run.get(k) for k in ("date", "machine", "versions", "load", "time_limit",
                                          "wall", "argv")})
    # A model merged again replaces its earlier entry.
    kept = [dict(m, models=[n for n in m["models"] if n not in entry["models"]])
            for m in base.get("merged", [])]
    return dict(base, rows=rows, merged=[m for m in kept if m["models"]] + [entry])


def dlrm_note(rows: list[dict]) -> list[str]:
    """The note on DLRM's row (none without one): its costs are launch overheads."""
    row = next((r for r in rows if r["model"] == "dlrm"), None)
    gl, gt = (best_gpu(row, "latency"), best_gpu(row, "max_load")) if row else (None, None)
    bl, bt = (best_found(row, "latency"), best_found(row, "throughput")) if row else (None, None)
    if not (gl and gt and bl and bt):
        return []
    rep = row["throughput/diviml-replicas"]
    with_replicas = (f", {gt['max_load'] / rep['value']:.2f}x with replicas"
                     if "value" in rep else "")
    alone = ", ".join(f"{s['profile']} {ms(s['latency'])} ms" for s in row["single"]
                      if "error" not in s)
    return [
        "- DLRM: an embedding lookup (`take`) now counts the rows it gathers (one row of 16 "
        "floats per table at batch 1; `gathered_elements` in passes/collect.py), no longer its "
        "whole table. Before that fix the roofline charged each lookup a full-table read (up to "
        "10 M rows x 16 floats, 648 MB), the A100 alone took 2.648 ms and three devices gained "
        "1.45x by spreading those reads (this table's first run). Now each of DLRM's "
        f"{row['ops']} operators costs about the 5 us launch overhead on every device "
        f"({gl['latency'] / row['ops'] * 1e6:.1f} us per operator on the A100), so the three "
        f"devices are equally fast on it (alone: {alone}) and the 3-device gains "
        f"({gl['latency'] / bl['value']:.2f}x latency, ceiling "
        f"{gl['latency'] / best_bound(row, 'latency'):.2f}x; "
        f"{gt['max_load'] / bt['value']:.2f}x throughput{with_replicas}) come from running "
        "launch overheads of independent operators in parallel, as on three identical devices: "
        "an artefact of the profiles' equal per-call overhead, not a measured effect, and no "
        "evidence for DiviML's headlines even where DLRM's gains come near them.",
    ]


def markdown(rows: list[dict], args, load: str, wall: float, merged=(), date=None,
             machine_line=None, versions_line=None) -> str:
    """The block; ``date``, ``machine_line``, ``versions_line``: those of a saved run (default:
    now, this machine); ``merged``: the runs whose rows replaced the first run's (see merge)."""
    lines = []
    merged_models = {name for m in merged for name in m["models"]}
    first = [row["model"] for row in rows if row["model"] not in merged_models]
    lines += [
        f"`{command_line(args.argv)}` (date {date or today()}; {wall / 60:.1f} min wall)"
        + (f", rows of {', '.join(first)}" if merged else "")
        + f". Machine: {machine_line or machine()}; "
        f"load average during the run: {load} (on 2 cores: above 2, other jobs competed and "
        f"solver seconds are noisy). Versions: {versions_line or versions()}.",
    ]
    for m in merged:
        same = (m.get("machine") == (machine_line or machine())
                and m.get("versions") == (versions_line or versions()))
        lines += [
            "",
            f"Re-measured later and merged in: rows {', '.join(m['models'])} by "
            f"`{command_line(m.get('argv') or [])}` (date {m.get('date')}; "
            f"{(m.get('wall') or 0.0) / 60:.1f} min wall; load average {m.get('load')}; "
            + ("same machine and versions" if same else
               f"machine {m.get('machine')}, versions {m.get('versions')}")
            + (f"; a {m['time_limit']:g} s limit per solve" if m.get("time_limit") is not None
               and m["time_limit"] != args.time_limit else "")
            + "). The aggregates below are over the merged rows.",
        ]
    lines += [
        "",
        "Devices: DiviML's heterogeneous node as tvm-place profiles: `server-cpu` (2x Xeon 8380), "
        "`a100` (PCIe 4) and `t4` (PCIe 3), analytical roofline costs, batch 1, models at "
        f"{'tiny test sizes' if args.reduced else 'their real size'}. Each solve had a {args.time_limit:g} s limit. **Every latency and throughput "
        "below is a prediction of the analytical cost model, not a measurement** (no GPU ran; "
        "[gpu-results.md](gpu-results.md) found the analytical H100 profile 2-7x optimistic per model).",
        "",
        "**(a) Heuristic (`split`) vs exact (`diviml-milp`).** Loss = split / MILP - 1 (negative: "
        "the heuristic beat a MILP that hit its time limit); speed-up = MILP seconds / split "
        "seconds. Values in ms: latency, or the bottleneck device's time per input (throughput).",
        "",
        "| family | model | ops | objective | split | split s | MILP | MILP s | MILP status | MILP bound | loss | speed-up |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        for objective in ("latency", "throughput"):
            h, e = row[f"{objective}/split"], row[f"{objective}/diviml-milp"]
            c = comparison(row, objective)
            loss = f"{c['loss_pct']:+.2f}%" if c else "–"
            speedup = f"{c['speedup']:.1f}x" if c else "–"
            lines.append(
                f"| {row['family']} | {row['model']} | {row['ops']} | {objective} | "
                f"{ms(h['value']) if 'value' in h else 'failed'} | {h['seconds']:.2f} | "
                f"{ms(e['value']) if 'value' in e else 'failed'} | {e['seconds']:.2f} | "
                f"{status_text(e)} | {ms(e['lower_bound']) if 'value' in e else '–'} | "
                f"{loss} | {speedup} |")
    lines.append("")
    for objective in ("latency", "throughput"):
        cs = [comparison(r, objective) for r in rows]
        cs = [c for c in cs if c]
        if cs:
            optimal = sum(1 for r in rows if r[f"{objective}/diviml-milp"].get("status") == "optimal")
            lines.append(
                f"- {objective}: split within {max(c['loss_pct'] for c in cs):+.2f}% of the MILP "
                f"at worst (mean {sum(c['loss_pct'] for c in cs) / len(cs):+.2f}%), "
                f"speed-up geometric mean {geomean(c['speedup'] for c in cs):.1f}x "
                f"(range {min(c['speedup'] for c in cs):.1f}x-{max(c['speedup'] for c in cs):.1f}x); "
                f"the MILP proved optimality on {optimal} of {len(rows)} models.")
    lines += [
        "",
        "**(b) Three devices against the fastest single GPU.** Best = the better of split and the "
        "MILP; single GPU = every operator on the A100 or on the T4, whichever is faster (no "
        "copies). Throughput in inputs/s = 1 / bottleneck time per input. DiviML reports > 3x "
        "lower latency and up to 2.9x higher throughput than the fastest GPU alone.",
        "",
        "| model | single GPU latency ms | best 3-device latency ms | latency gain | gain ceiling | single GPU inputs/s | best 3-device inputs/s | gain | gain ceiling | with replicas inputs/s | gain | replica groups | ops cpu/a100/t4 (throughput) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    # model -> gain (or ceiling), per column
    gains = {"latency": {}, "throughput": {}, "replicas": {}}
    ceilings = {"latency": {}, "throughput": {}}
    rep_limited = sum(1 for r in rows
                      if r["throughput/diviml-replicas"].get("status") != "optimal")
    milp_optimal = sum(1 for r in rows for o in ("latency", "throughput")
                       if r[f"{o}/diviml-milp"].get("status") == "optimal")
    split_better = sum(1 for r in rows for o in ("latency", "throughput")
                       if (c := comparison(r, o)) and c["loss_pct"] < -1e-6)
    for row in rows:
        gl, gt = best_gpu(row, "latency"), best_gpu(row, "max_load")
        bl, bt = best_found(row, "latency"), best_found(row, "throughput")
        rep = row["throughput/diviml-replicas"]
        cells = [row["model"]]
        if gl and bl:
            gains["latency"][row["model"]] = gl["latency"] / bl["value"]
            cells += [f"{ms(gl['latency'])} ({gl['profile']})", ms(bl["value"]),
                      f"{gl['latency'] / bl['value']:.2f}x",
                      f"{gl['latency'] / best_bound(row, 'latency'):.2f}x"]
            ceilings["latency"][row["model"]] = gl["latency"] / best_bound(row, "latency")
        else:
            cells += ["–"] * 4
        if gt and bt:
            gains["throughput"][row["model"]] = gt["max_load"] / bt["value"]
            cells += [f"{1 / gt['max_load']:.1f} ({gt['profile']})", f"{1 / bt['value']:.1f}",
                      f"{gt['max_load'] / bt['value']:.2f}x",
                      f"{gt['max_load'] / best_bound(row, 'throughput'):.2f}x"]
            ceilings["throughput"][row["model"]] = gt["max_load"] / best_bound(row, "throughput")
        else:
            cells += ["–"] * 4
        if gt and "value" in rep:
            gains["replicas"][row["model"]] = gt["max_load"] / rep["value"]
            groups = "; ".join("+".join(g) for g in rep["replicas"]) or "none"
            status = "" if rep["status"] == "optimal" else f" ({status_text(rep)})"
            cells += [f"{1 / rep['value']:.1f}{status}", f"{gt['max_load'] / rep['value']:.2f}x",
                      groups]
        else:
            cells += ["failed" if "error" in rep else "–", "–", "–"]
        cells.append("/".join(str(v) for v in bt["ops_per_device"].values()) if bt else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, label in (("latency", "latency"), ("throughput", "throughput without replicas"),
                       ("replicas", "throughput with replicas")):
        if gains[key]:
            values = gains[key].values()
            others = [g for m, g in gains[key].items() if m != "dlrm"]
            lines.append(f"- {label}: gain over the fastest single GPU geometric mean "
                         f"{geomean(values):.2f}x, best {max(values):.2f}x"
                         + (f"; without DLRM (launch overheads only, see the notes) "
                            f"{geomean(others):.2f}x, best {max(others):.2f}x"
                            if others and len(others) < len(gains[key]) else "") + ".")
    gains_but_dlrm = {key: [g for m, g in by_model.items() if m != "dlrm"]
                      for key, by_model in gains.items()}
    ceilings_but_dlrm = [c for m, c in ceilings["latency"].items() if m != "dlrm"]
    dlrm_aside = "apart from DLRM (see below), " if "dlrm" in gains["latency"] else ""
    lines += [
        "",
        "Gain ceiling: single-GPU value / the best lower bound proven on the 3-device optimum "
        "(without replicas); no placement under this cost model can gain more.",
        "",
        "Notes (where we fall short of DiviML's headlines, and why):",
        "",
        f"- Latency: {dlrm_aside}best gain "
        f"{max(gains_but_dlrm['latency'], default=float('nan')):.2f}x, not DiviML's > 3x, and "
        f"the proven ceilings (at most {max(ceilings_but_dlrm, default=float('nan')):.2f}x) "
        "show that no placement could reach 3x under these profiles. Batch-1 inference is "
        "mostly a chain of dependent operators; the A100 profile is 2.4x faster than the T4 "
        "and about 5x faster than the server CPU on compute, and every copy pays a PCIe "
        "transfer, so only graphs with wide "
        "parallel branches (RandWire, Inception, DLRM's embedding lookups, the MoE experts) "
        "gain. DiviML's numbers are measured on their hardware and kernels.",
        "- Throughput: a pipeline's bottleneck cannot drop below total work / combined speed. "
        "For the compute-heavy models (ResNet-50, BERT-base, GPT-2) that caps the gain over the "
        "A100 near 1.5-1.7x. RandWire gains more because its hundreds of "
        "small operators are dominated by the 5 us launch overhead that every profile charges "
        "alike, which makes the CPU and the T4 nearly as fast as the A100 on them: partly an "
        "artefact of the profiles, not a measured effect (DLRM, below, is launch overheads only).",
        f"- Replicas: `diviml-replicas` hit the time limit on {rep_limited} of {len(rows)} models "
        "with large gaps (its bound is weak), and gained over the best placement without "
        "replicas on few models; where its incumbent is worse than the MILP without replicas "
        "(the replica space contains every plain placement) that is the time limit, not the "
        "model.",
        f"- Heuristic vs exact: the MILP proved optimality on {milp_optimal} of {2 * len(rows)} "
        f"solves within {args.time_limit:g} s; "
        + (f"on the others `split` was better than the MILP's incumbent {split_better} times. "
           if split_better else "`split` never beat the MILP's value, and lost most where "
           "the MILP proved a throughput optimum that `split` missed. ")
        + "`split` is anytime for throughput (filling passes and "
        "block-coordinate descent until its clock runs out), so its speed-up there mostly "
        "reflects the time limit. DiviML's 395x is against their Gurobi MILP on their graphs; "
        "ours is against CP-SAT (latency) and SCIP (throughput) under a time limit.",
        *dlrm_note(rows),
        "- The MILP's value after a time limit is its best incumbent (possibly the HEFT warm "
        "start); the bound and gap say how far it may be from optimal.",
        "- Raw results: [data/tables/diviml.json](data/tables/diviml.json).",
    ]
    return "\n".join(lines)


def render(result: dict, args) -> str:
    """The block from saved or fresh results (their command, limit, date, machine, versions)."""
    args = argparse.Namespace(**vars(args))
    args.argv = result.get("argv", args.argv)
    args.time_limit = result.get("time_limit", args.time_limit)
    return markdown(result["rows"], args, result.get("load", "n/a"), result.get("wall", 0.0),
                    merged=result.get("merged", []), date=result.get("date"),
                    machine_line=result.get("machine"), versions_line=result.get("versions"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve")
    parser.add_argument("--models", default=None,
                        help="comma-separated registry names (default: the table's models)")
    parser.add_argument("--reduced", action="store_true", help="tiny models (tests)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md and docs/data alone")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "build" / "tables" / "problems",
                        help="cache of built problems ('' for none)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="render the table from the raw results of an earlier run (no solving)")
    parser.add_argument("--merge-into", type=Path, default=None,
                        help="saved results (e.g. docs/data/tables/diviml.json) whose rows of the "
                        "same models this run's (or --from-json's) rows replace; the block and "
                        "docs/data/tables/diviml.json get the merged results")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        result = measure(args)
    if args.merge_into:
        result = merge(json.loads(args.merge_into.read_text()), result)
    text = render(result, args)
    if not args.no_write:
        if args.merge_into or not args.from_json:
            OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
            OUT_JSON.write_text(json.dumps(result, indent=1, default=str))
        write_block("diviml", "## DiviML: heuristic vs exact, 3 devices vs one GPU (issue 4, "
                    "table 3)", text)
    print(text)
    return 0


def measure(args) -> dict:
    """Solve the chosen models; the raw results (also written to ``--json``)."""
    cache_dir = args.cache_dir if str(args.cache_dir) not in ("", ".") else None

    chosen = REDUCED if args.reduced else FULL
    if args.models:
        wanted = args.models.split(",")
        known = {name: (family, name, sizes) for family, name, sizes in chosen}
        chosen = [known.get(n, ("other", n, {})) for n in wanted]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows = []
    started = time.perf_counter()
    with LoadSampler() as load:
        for family, name, sizes in chosen:
            rows.append(run_model(family, name, sizes, args.time_limit, cache_dir, log))
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"partial": True, "rows": rows}, indent=1,
                                                default=str))
    wall = time.perf_counter() - started
    result = {"date": today(), "machine": machine(), "versions": versions(),
              "load": load.summary(), "time_limit": args.time_limit, "wall": wall,
              "argv": args.argv, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    sys.exit(main())
