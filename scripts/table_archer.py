"""Table 2 of issue 4: Archer et al.'s lower bounds against the best pipelined placement found.

For each k in {2, 4, 8, 16, 32, 64} and each k-stage problem of the testbed (``a100xK``: k equal
A100s, the throughput objective = max-load of a contiguous k-stage pipeline), this runs

- ``slicegraph`` (SliceGraph DP + BRKGA, with the combinatorial and MIP lower bounds of
  ``tvm_place/solvers/bounds/contiguous.py``) under ``--time-limit`` seconds, and
- ``dp`` (the exact DP over ideals) under ``--dp-time-limit`` seconds, where it finishes (it gives
  up on graphs with too many ideals or at its time limit; that is recorded),

then takes the best placement found (the least max-load of the two) and three lower bounds on the
contiguous optimum: the combinatorial bound (heaviest group, total work / k: it ignores
communication), our best *bound* (the best of the combinatorial, the "bottleneck" and
"guess the bottleneck" MIP bounds and the general work bound, what ``slicegraph`` reports as its
``lower_bound``, plus dp's own bound when dp stopped early), and the best *proven* value, which is
the dp optimum where dp finished (then the ratio is 1). It prints and writes the table of the
geometric mean over the problems of (lower bound / best placement) per k into docs/benchmarks.md,
between ``<!-- table:archer -->`` and ``<!-- /table:archer -->``.

Usage::

    python scripts/testbed.py                      # first: the testbed
    python scripts/table_archer.py --time-limit 4 --dp-time-limit 2
    python scripts/table_archer.py --testbed /tmp/tb --ks 2 4 --time-limit 1 --no-doc   # reduced

``--budget`` stops starting new problems after that many seconds (the rest are listed as skipped;
problems run in the order of ``--ks``, smallest graphs first, so put the k that matters first);
``--max-ops`` skips larger graphs. Per-problem results go to ``--results`` (JSON, default docs/data/tables/archer.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import _tables as tables  # noqa: E402

KS = (2, 4, 8, 16, 32, 64)
HEADING = "## Archer et al.: lower bounds against the best pipeline (issue 4, table 2)"
TOLERANCE = 1e-6  # relative: a bound may exceed a value by solver round-off, no more
#: Issue 17's targets at k = 16: the best bound's geometric mean, and each RandWire graph's.
TARGET, RANDWIRE_TARGET = 0.97, 0.90


def solve_one(path: Path, time_limit: float, dp_time_limit: float | None) -> dict:
    """Solve one k-stage problem with slicegraph (and dp) and collect values and bounds."""
    from tvm_place.formats import load_problem
    from tvm_place.solvers import solve

    problem = load_problem(str(path))
    row: dict = {"ops": problem.num_ops, "k": problem.num_devices}
    started = time.perf_counter()
    sg = solve(problem, "throughput", "slicegraph", time_limit)
    row["slicegraph_seconds"] = time.perf_counter() - started
    row["slicegraph"] = sg.value
    row["slicegraph_bound"] = sg.lower_bound
    row["slicegraph_optimal"] = bool(sg.stats.get("optimal"))
    row["groups"] = sg.stats.get("groups")
    row["bounds"] = {name: b["value"] for name, b in sg.stats.get("bounds", {}).items()}
    row["bound_status"] = {name: b["status"] for name, b in sg.stats.get("bounds", {}).items()}
    if "bound_conflict" in sg.stats:
        row["bound_conflict"] = sg.stats["bound_conflict"]
    values, bounds_found, proven = [sg.value], [sg.lower_bound], [sg.lower_bound]
    if dp_time_limit:
        started = time.perf_counter()
        try:
            dp = solve(problem, "throughput", "dp", dp_time_limit)
        except Exception as err:  # noqa: BLE001 - recorded, the table goes on
            row["dp_error"] = f"{type(err).__name__}: {err}"
        else:
            row["dp"] = dp.value
            row["dp_optimal"] = bool(dp.stats.get("optimal"))
            row["dp_bound"] = dp.lower_bound
            if not row["dp_optimal"]:
                row["dp_reason"] = str(dp.stats.get("reason", ""))
            values.append(dp.value)
            proven.append(dp.value if row["dp_optimal"] else dp.lower_bound)
            if not row["dp_optimal"]:
                bounds_found.append(dp.lower_bound)
        row["dp_seconds"] = time.perf_counter() - started
    row["best"] = min(values)
    row["best_from"] = "slicegraph" if sg.value <= row["best"] else "dp"
    row["combinatorial"] = row["bounds"].get("combinatorial", 0.0)
    row["best_bound"] = max(bounds_found)
    row["best_proven"] = max(proven)
    return row


def geomean(values: list[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    if not values:
        return float("nan")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summarise(rows: list[dict], ks) -> list[dict]:
    table = []
    for k in ks:
        mine = [r for r in rows if r["k"] == k and "best" in r and r["best"] > 0]
        if not mine:
            continue
        table.append({
            "k": k,
            "problems": len(mine),
            "combinatorial": geomean([r["combinatorial"] / r["best"] for r in mine]),
            **{name: geomean([max(r["bounds"].get(name, 0.0), r["combinatorial"]) / r["best"]
                              for r in mine]) for name in ("cut", "heaviest", "window", "chain", "levels", "covering")},
            "chain_solved": sum(1 for r in mine if r.get("bound_status", {}).get("chain") == "optimal"),
            "best_bound": geomean([r["best_bound"] / r["best"] for r in mine]),
            "best_proven": geomean([r["best_proven"] / r["best"] for r in mine]),
            "proven_optimal": sum(
                1 for r in mine if r["best_proven"] >= r["best"] * (1 - 2 * TOLERANCE)),
            "dp_finished": sum(1 for r in mine if r.get("dp_optimal")),
            "dp_better": sum(1 for r in mine if r.get("dp", math.inf) < r["slicegraph"] * (1 - 1e-9)),
            "worst_best_bound": min(r["best_bound"] / r["best"] for r in mine),
        })
    return table


def render(table: list[dict], rows: list[dict], skipped: list[dict], meta: dict) -> str:
    lines = [
        f"`{meta['command']}`, {meta['date']}, {meta['machine']}; load average "
        f"{meta['load_start']:.1f} at the start and {meta['load_end']:.1f} at the end"
        f"{' (other jobs shared the 2 cores)' if max(meta['load_start'], meta['load_end']) > 2.5 else ''}; "
        f"{meta['versions']}; {meta['seconds']:.0f} s in all.",
        "",
        f"Testbed: `{meta['testbed']}` ({'quick sizes' if meta['quick'] else 'real sizes'}, batch 1, "
        f"analytical costs, k equal A100s, objective max-load of a contiguous k-stage pipeline): "
        f"{len(rows)} problems of {len({r['model'] for r in rows})} models. Per problem, slicegraph "
        f"ran under {meta['time_limit']} s and dp under {meta['dp_time_limit']} s.",
        "",
        "Geometric mean over the problems of (lower bound / best placement found):",
        "",
        "| k | problems | combinatorial bound | cut bound | heaviest block | cut windows | "
        "chain model (CP-SAT) | level search | covering LP | chain solved | our best bound (no dp) | best proven (with exact dp) "
        "| proven optimal | dp finished | worst best bound |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in table:
        per_bound = " | ".join(f"{t.get(name, float('nan')):.4f}"
                               for name in ("cut", "heaviest", "window", "chain", "levels", "covering"))
        lines.append(
            f"| {t['k']} | {t['problems']} | {t['combinatorial']:.4f} | {per_bound} | "
            f"{t.get('chain_solved', 0)}/{t['problems']} | {t['best_bound']:.4f} | "
            f"{t['best_proven']:.4f} | {t['proven_optimal']}/{t['problems']} | "
            f"{t['dp_finished']}/{t['problems']} | {t['worst_best_bound']:.4f} |"
        )
    lines += [
        "",
        "Columns: *combinatorial* is the heaviest group or total work / k (no communication); "
        "*cut bound*: `bounds.cut_bound`, the least load of a device holding a given group "
        "(one max-flow per group; the largest over groups); *heaviest block*: "
        "`bounds.contiguous.heaviest_block_bound`, the least load of a pipeline block holding at "
        "least 1/k of the work, transfers charged (one block's CP-SAT model); *cut windows*: "
        "`bounds.window.window_bound`, every cut's sends and receives by min cuts and a "
        "program over the work before each cut; these "
        "four and the next three are each shown where at least the combinatorial bound. Inside "
        "slicegraph's bound phase they run in the order cut windows, cut, heaviest block, chain "
        "where the covering LP does not run (short limits), and cut, heaviest block, chain, "
        "level search, covering LP, cut windows where it does (the cut windows then get what the covering LP "
        "leaves, and start from the best bound so far); each is skipped (0, shown as the "
        "combinatorial bound) once an earlier one proves the placement optimal or the time is "
        "spent, so their columns show what each added in turn, not its strength alone; "
        "*chain model*: the bound of `bounds.contiguous.chain_bound` (Archer et al.'s full "
        "formulation: all k blocks as one chain of ideals, the block index being the device, "
        "solved by CP-SAT with the best placement's value as the cap, then probes below it); "
        "*level search*: `bounds.levels.level_bound`, the highest level at which a "
        "bidirectional search over ideals proves that no chain of k blocks under it exists "
        "(exact; bisected from the bound held to the placement's value); "
        "*covering LP*: `bounds.covering.covering_bound`, the heaviest block under the weights of a "
        "covering LP's duals (column generation over blocks; run only with at least "
        "10 s of the bound phase left); "
        "*chain solved*: problems where CP-SAT solved it to optimality (the contiguous optimum) inside slicegraph's limit; *our best bound* is "
        "the best lower bound the bound machinery proves without the exact dp (combinatorial, "
        "cut windows, cut, heaviest block, chain model, covering LP, \"bottleneck\" and \"guess the bottleneck\" MIPs, "
        "all within slicegraph's time limit, and dp's bound where dp stopped early): this is the "
        "quantity Archer et al. report; *best proven* also counts the exact dp's optimum where dp "
        "finished. *proven optimal*: problems whose best placement is proven optimal among "
        "contiguous pipelines; *worst best bound*: the smallest ratio.",
    ]
    at16 = next((t for t in table if t["k"] == 16), None)
    lines += [""]
    if at16:
        verdict = "meets" if at16["best_bound"] >= TARGET else "misses"
        randwire = [r["best_bound"] / r["best"] for r in rows
                    if r["k"] == 16 and r["model"].startswith("randwire") and r.get("best", 0) > 0]
        lines.append(
            f"At k = 16 our best bound reaches {at16['best_bound']:.4f} of the best placement (geometric "
            f"mean; Archer et al. report 0.9452 on their 369 production models, up from 0.4598 for "
            f"the combinatorial bound there; ours is {at16['combinatorial']:.4f}): it {verdict} "
            f"issue 17's target of {TARGET}; counting the exact dp's optima, "
            f"{at16['best_proven']:.4f} is proven. "
            + (f"RandWire: {', '.join(f'{v:.3f}' for v in randwire)} (geometric mean "
               f"{geomean(randwire):.4f}; target {RANDWIRE_TARGET}). " if randwire else "")
            + "The testbed is not theirs, so the numbers are not comparable one to one."
        )
        short = sorted((r for r in rows if r["k"] == 16 and r.get("best", 0) > 0
                        and r["best_proven"] < 0.95 * r["best"]),
                       key=lambda r: r["best_proven"] / r["best"])
        if short:
            lines += ["", "Below 0.95 at k = 16 even counting the exact dp (best proven / best "
                      "placement, bound without dp in brackets): " + ", ".join(
                          f"{r['model']} {r['best_proven'] / r['best']:.3f} "
                          f"({r['best_bound'] / r['best']:.3f}, {r['groups']} groups"
                          f"{', dp unfinished' if not r.get('dp_optimal') else ''})"
                          for r in short) + ". With k equal A100s and batch 1 the transfers at "
                      "the cuts are a large part of each stage's load (a value crossing a cut is "
                      "paid by its sender and its receiver), so total work / k is far below the "
                      "optimum; the bounds that charge transfers prove the gap on narrow graphs, "
                      "and the exact dp closes it where the ideals are few enough to enumerate."]
    finished = [r for r in rows if r.get("dp_optimal")]
    if finished:
        matched = sum(1 for r in finished if r["slicegraph"] <= r["dp"] * (1 + 1e-6))
        lines += ["", f"slicegraph found the contiguous optimum (dp's value) on {matched} of the "
                  f"{len(finished)} problems where dp finished."]
    unfinished = sorted({r["model"] for r in rows if "dp" in r and not r.get("dp_optimal")}
                        | {r["model"] for r in rows if "dp_error" in r})
    if unfinished and meta.get("dp_time_limit"):
        lines += ["", f"dp did not finish within {meta['dp_time_limit']} s (too many ideals: wide "
                  f"graphs) on some k for: {', '.join(unfinished)}; there only the bounds grade the "
                  "placement."]
    weak = sorted(
        (r for r in rows if "best" in r and r["best"] > 0),
        key=lambda r: r["best_bound"] / r["best"],
    )[:5]
    if weak:
        lines += [
            "",
            "Where the bound is weakest (best bound / best placement): "
            + ", ".join(
                f"{r['model']} k={r['k']} {r['best_bound'] / r['best']:.3f}" for r in weak
            )
            + ".",
        ]
    notes = list(meta.get("notes") or [])
    if skipped:
        reasons: dict[str, list[str]] = {}
        for s in skipped:
            reasons.setdefault(s["reason"], []).append(f"{s['model']}@{s['hardware']}")
        notes.append(
            "Skipped: " + "; ".join(f"{reason}: {', '.join(names)}" for reason, names in reasons.items())
        )
    for note in notes:
        lines += ["", note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", default=str(ROOT / "testbed"))
    parser.add_argument("--ks", nargs="*", type=int, default=list(KS))
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument("--time-limit", type=float, default=4.0, help="slicegraph, per problem")
    parser.add_argument("--dp-time-limit", type=float, default=2.0, help="dp, per problem")
    parser.add_argument("--no-dp", action="store_true")
    parser.add_argument("--max-ops", type=int, default=None, help="skip larger problems")
    parser.add_argument("--budget", type=float, default=None,
                        help="start no new problem after this many seconds")
    parser.add_argument("--results", default=str(ROOT / "docs" / "data" / "tables" / "archer.json"),
                        help="per-problem JSON (default docs/data/tables/archer.json)")
    parser.add_argument("--doc", default=str(tables.BENCHMARKS), help="markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    parser.add_argument("--from-results", default=None,
                        help="re-render the table and block from an earlier run's JSON")
    parser.add_argument("--note", action="append", default=[],
                        help="a paragraph to add under the table (repeatable)")
    args = parser.parse_args(argv)

    if args.from_results:
        earlier = json.loads(Path(args.from_results).read_text())
        rows, skipped, meta = earlier["rows"], earlier["skipped"], earlier["meta"]
        meta["notes"] = [n for n in meta.get("notes", []) if not n.startswith("Skipped: ")] + args.note
        meta["notes"].append(tables.rendered_note(args.from_results))
        table = summarise(rows, sorted({r["k"] for r in rows}))
        tables.publish("archer", HEADING, render(table, rows, skipped, meta),
                       None if args.no_doc else Path(args.doc))
        return 0

    testbed = Path(args.testbed)
    manifest = json.loads((testbed / "manifest.json").read_text())
    entries = [
        e for e in manifest["problems"]
        if e["hardware"] in {f"a100x{k}" for k in args.ks}
        and (not args.models or e["model"] in args.models)
    ]
    entries.sort(key=lambda e: (args.ks.index(e["devices"]), e["ops"], e["model"]))  # --ks order first
    load_start = tables.load_average()
    started = time.perf_counter()
    rows, skipped = [], []
    for i, e in enumerate(entries, 1):
        if args.max_ops is not None and e["ops"] > args.max_ops:
            skipped.append({"model": e["model"], "hardware": e["hardware"],
                            "reason": f"more than {args.max_ops} operators"})
            continue
        if args.budget is not None and time.perf_counter() - started > args.budget:
            skipped.append({"model": e["model"], "hardware": e["hardware"],
                            "reason": f"over the {args.budget:.0f} s budget"})
            continue
        row = {"model": e["model"], "hardware": e["hardware"]}
        try:
            row.update(solve_one(testbed / e["file"], args.time_limit,
                                 None if args.no_dp else args.dp_time_limit))
        except Exception as err:  # noqa: BLE001
            skipped.append({"model": e["model"], "hardware": e["hardware"],
                            "reason": f"{type(err).__name__}: {str(err)[:120]}"})
            print(f"[{i}/{len(entries)}] {e['model']}@{e['hardware']}: failed: {err}", flush=True)
            continue
        rows.append(row)
        print(
            f"[{i}/{len(entries)}] {e['model']}@{e['hardware']} ({row['ops']} ops): best "
            f"{row['best']:.4g} ({row['best_from']}), comb {row['combinatorial'] / row['best']:.3f}, "
            f"bound {row['best_bound'] / row['best']:.3f}, proven {row['best_proven'] / row['best']:.3f}"
            f"{'' if 'dp' in row else ' (dp: ' + row.get('dp_error', 'off')[:60] + ')'}  "
            f"[{time.perf_counter() - started:.0f} s]",
            flush=True,
        )
    table = summarise(rows, sorted(args.ks))
    meta = tables.run_record(
        "table_archer.py", argv, load_start, started,
        testbed=str(testbed.relative_to(ROOT)) if testbed.resolve().is_relative_to(ROOT) else str(testbed),
        quick=manifest.get("quick", False),
        time_limit=args.time_limit,
        dp_time_limit=None if args.no_dp else args.dp_time_limit,
        notes=list(args.note),
    )
    testbed_skips = manifest.get("skipped", [])
    if testbed_skips:
        meta["notes"].append(
            "Not in the testbed: " + "; ".join(f"{s['model']} ({s['reason']})" for s in testbed_skips)
        )
    tables.publish("archer", HEADING, render(table, rows, skipped, meta),
                   None if args.no_doc else Path(args.doc), Path(args.results),
                   {"meta": meta, "table": table, "rows": rows, "skipped": skipped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
