"""Issue 17's table: proven gaps on the testbed's wide graphs, k = 4 and 8 equal accelerators.

For each problem of the testbed's wide models (``scripts/testbed.py``'s ``WIDE_MODELS``: NASNet-A
mobile and large, Inception-v3 at operator granularity, the RandWire graphs) with at least
``--min-ops`` operators (default ``WIDE_MIN_OPS``, what the testbed tags ``wide``) on the
``a100x4`` and ``a100x8`` sets, every method of ``--methods`` runs under
``--time-limit`` seconds through ``tvm_place.solvers.solve`` (so each answer is graded the same
way), and the table lists its max-load, proven lower bound, gap ``(value - bound) / value`` and
seconds, then per method the largest gap and the geometric mean of the gaps (a gap of 0, proven
optimal, counts as ``GAP_FLOOR`` so that the mean stays defined). The contiguous methods' gaps are
over contiguous pipelines (their search space); ``auto``'s are over all placements.

Writes ``docs/data/tables/wide.json`` and the block ``wide`` of docs/benchmarks.md.

Usage::

    python scripts/testbed.py --models nasnet-a-mobile nasnet-a-large inception-v3-ops \\
        randwire-ws randwire-er randwire-ba --hardware a100x4 a100x8 a100x16
    python scripts/table_wide.py --time-limit 120 --methods dp auto
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
import testbed as testbed_script  # noqa: E402

HEADING = "## Wide graphs: proven gaps within the time limit (issue 17)"
#: A proven-optimal answer's gap in the geometric mean (0 would make the mean 0).
GAP_FLOOR = 1e-6


def geomean(values: list[float]) -> float:
    values = [max(v, GAP_FLOOR) for v in values]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def run(entries: list[dict], testbed: Path, methods: list[str],
        time_limit: float) -> tuple[list[dict], dict]:
    """``(rows, unproven)``: a row per problem and method; ``unproven`` maps each row's index,
    where the answer is a contiguous placement not proven optimal, to ``(problem, device_of)``."""
    from tvm_place.formats import load_problem
    from tvm_place.solvers import solve

    rows = []
    unproven = {}
    for entry in entries:
        problem = load_problem(str(testbed / entry["file"]))
        for method in methods:
            started = time.perf_counter()
            placement = solve(problem, "throughput", method, time_limit)
            seconds = time.perf_counter() - started
            stats = placement.stats
            row = {
                "model": entry["model"], "hardware": entry["hardware"], "k": entry["devices"],
                "ops": entry["ops"], "method": method, "value": placement.value,
                "lower_bound": placement.lower_bound, "gap": placement.gap, "seconds": seconds,
                "search_space": stats.get("search_space"), "optimal": bool(stats.get("optimal")),
                "reason": str(stats.get("reason") or stats.get("stopped") or ""),
                "groups": stats.get("groups"), "ideals": stats.get("ideals"),
                "load": tables.load_average(),
            }
            if "contiguous_lower_bound" in stats:
                row["contiguous_lower_bound"] = stats["contiguous_lower_bound"]
            if "anytime" in stats:  # dp stopped early: its one-order slicing and what followed
                row["one_order"] = stats.get("upper_bound")
                row["anytime"] = stats["anytime"]
            if row["search_space"] == "contiguous" and not row["optimal"]:
                unproven[len(rows)] = (problem, placement.device_of)
            rows.append(row)
            print(f"{entry['model']}@{entry['hardware']} ({entry['ops']} ops) {method}: "
                  f"{placement.value:.6g}, bound {placement.lower_bound:.6g}, gap "
                  f"{100 * placement.gap:.2f}% in {seconds:.1f} s (load {row['load']:.1f})",
                  flush=True)
    return rows, unproven


def which_side(rows: list[dict], unproven: dict, seconds: float) -> list[dict]:
    """Which side holds each unproven contiguous answer's gap, run long (issue 17): the chain
    model hinted with the answer for ``seconds`` (does the placement move?), then the cut-window
    bound from scratch (no floor) for ``seconds`` on the better of the two values (does the bound
    move, or does its relaxation stop with nothing left to refine?)."""
    from tvm_place.solvers import anytime
    from tvm_place.solvers.bounds import window as window_bound
    from tvm_place.solvers.grouping import contract

    out = []
    for index, (problem, device_of) in unproven.items():
        row = rows[index]
        groups = contract(problem)
        _, chain = anytime.hinted_chain(problem, device_of, seconds, groups)
        upper = min(row["value"], chain.get("measured", math.inf))
        bound, stats = window_bound.window_bound(problem, seconds, upper, groups)
        out.append({"model": row["model"], "k": row["k"], "method": row["method"],
                    "value": row["value"], "lower_bound": row["lower_bound"], "chain": chain,
                    "upper": upper, "window_bound": bound, "window": stats,
                    "load": tables.load_average()})
        print(f"  {row['model']}@{row['hardware']} {row['method']}, {seconds:g} s each: chain "
              f"model {chain.get('measured', math.nan):.6g} (bound {chain['bound']:.6g}), "
              f"cut-window bound {bound:.6g} on {upper:.6g} in "
              f"{stats.get('seconds', 0):.1f} s", flush=True)
    return out


#: The cut-window bound's refinements, measured against each other (``--bound-variants``):
#: name -> the constants of ``tvm_place.solvers.bounds.window`` it sets (the rest keep theirs).
BOUND_VARIANTS = {
    "min cuts only": {"EXACT_IDEALS": 0, "REFINE_WITH_CP_SAT": False, "PAIR_SECONDS": 0.0},
    "+ CP-SAT and exact works": {"SPLIT_WIDTH": math.inf, "PAIR_SECONDS": 0.0,
                                 "REFINE_WITH_CP_SAT": True},
    "+ windows halved": {"PAIR_SECONDS": 0.0, "REFINE_WITH_CP_SAT": True},
    "+ blocks priced whole": {"REFINE_WITH_CP_SAT": True},
    "blocks priced whole, no CP-SAT windows (default)": {},
}


def bound_variants(entries: list[dict], testbed: Path, rows: list[dict],
                   seconds: float) -> list[dict]:
    """The cut-window bound under each of ``BOUND_VARIANTS`` for ``seconds`` on every problem,
    with the best contiguous value the methods found as its ``U``."""
    from tvm_place.formats import load_problem
    from tvm_place.solvers.bounds import window as window_bound

    out = []
    for entry in entries:
        values = [r["value"] for r in rows if r["model"] == entry["model"]
                  and r["hardware"] == entry["hardware"] and r["search_space"] == "contiguous"]
        if not values:
            continue
        problem = load_problem(str(testbed / entry["file"]))
        for name, settings in BOUND_VARIANTS.items():
            default = {key: getattr(window_bound, key) for key in settings}
            for key, setting in settings.items():
                setattr(window_bound, key, setting)
            try:
                value, stats = window_bound.window_bound(problem, seconds, min(values))
            finally:
                for key, setting in default.items():
                    setattr(window_bound, key, setting)
            out.append({"model": entry["model"], "k": entry["devices"], "variant": name,
                        "upper": min(values), "bound": value, "stats": stats})
            print(f"  {entry['model']}@{entry['hardware']} window bound, {name}: "
                  f"{value / min(values):.5f} of the best value ({stats.get('seconds', 0):.1f} s)",
                  flush=True)
    return out


def render(rows: list[dict], methods: list[str], meta: dict, before: list[dict],
           variants: list[dict], sides: list[dict]) -> str:
    """The block: per problem and method, then per method; ``before``: the rows of an earlier
    run (older code, same testbed and limit) shown beside them."""
    lines = [
        f"`{meta['command']}`, {meta['date']}, {meta['machine']}; load average "
        f"{meta['load_start']:.1f} at the start and {meta['load_end']:.1f} at the end; "
        f"{meta['versions']}; {meta['seconds']:.0f} s in all.",
        "",
        f"Testbed `{meta['testbed']}` (real sizes, batch 1, analytical costs), the wide models' "
        f"problems of at least {meta['min_ops']} operators on k equal A100s; each method under "
        f"{meta['time_limit']:g} s. Gap = "
        "(max-load - proven bound) / max-load; contiguous methods prove it over contiguous "
        "pipelines, `auto` over all placements.",
        "",
        "| model | ops | k | method | max-load (ms) | bound (ms) | gap | seconds | stopped by | "
        "before: max-load, bound, gap |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    previous = {(r["model"], r["hardware"], r["method"]): r for r in before}
    for r in rows:
        old = previous.get((r["model"], r["hardware"], r["method"]))
        was = (f"{1e3 * old['value']:.4f}, {1e3 * old['lower_bound']:.4f}, {100 * old['gap']:.2f}%"
               if old else "")
        lines.append(
            f"| {r['model']} | {r['ops']} | {r['k']} | {r['method']} | {1e3 * r['value']:.4f} | "
            f"{1e3 * r['lower_bound']:.4f} | {100 * r['gap']:.2f}% | {r['seconds']:.1f} | "
            f"{'optimal' if r['optimal'] else r['reason'][:70]} | {was} |")
    lines += ["", "| method | problems | largest gap | geometric mean gap | within 1% | before: "
              "largest, geometric mean, within 1% |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for method in methods:
        gaps = [r["gap"] for r in rows if r["method"] == method]
        old = [r["gap"] for r in before if r["method"] == method]
        was = (f"{100 * max(old):.2f}%, {100 * geomean(old):.3f}%, "
               f"{sum(g <= 0.01 for g in old)}/{len(old)}" if old else "")
        if gaps:
            lines.append(f"| {method} | {len(gaps)} | {100 * max(gaps):.2f}% | "
                         f"{100 * geomean(gaps):.3f}% | {sum(g <= 0.01 for g in gaps)}/{len(gaps)} "
                         f"| {was} |")
    if before:
        lines += ["", f"*before*: {meta['before']}."]
    if variants:
        names = list(BOUND_VARIANTS)
        lines += ["", f"The cut-window bound's refinements against each other, each for "
                  f"{meta['bound_seconds']:g} s with the best contiguous value found as U "
                  "(bound / that value; seconds taken):", "",
                  "| model | k | " + " | ".join(names) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for key in dict.fromkeys((v["model"], v["k"]) for v in variants):
            cells = {v["variant"]: v for v in variants if (v["model"], v["k"]) == key}
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(
                f"{cells[n]['bound'] / cells[n]['upper']:.5f} ({cells[n]['stats'].get('seconds', 0):.1f} s)"
                if n in cells else "" for n in names) + " |")
    if sides:
        lines += ["", f"Which side holds the gaps, run long (`--which-side {meta['side_seconds']:g}`):"
                  f" the chain model hinted with the answer for {meta['side_seconds']:g} s, then "
                  f"the cut-window bound from scratch for {meta['side_seconds']:g} s on the better "
                  "value (*stopped*: before the limit with nothing left to refine, its "
                  "relaxation's own limit):", "",
                  "| model | k | method | answer (ms) | chain model found (ms) | its bound (ms) | "
                  "cut-window bound (ms) | gap then | seconds | load |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in sides:
            found = v["chain"].get("measured")
            took = v["window"].get("seconds", 0.0)
            stopped = " (stopped)" if took < 0.98 * meta["side_seconds"] else ""
            lines.append(
                f"| {v['model']} | {v['k']} | {v['method']} | {1e3 * v['value']:.4f} | "
                f"{f'{1e3 * found:.4f}' if found is not None else 'none'} | "
                f"{1e3 * v['chain']['bound']:.4f} | {1e3 * v['window_bound']:.4f} | "
                f"{100 * (1 - v['window_bound'] / v['upper']):.2f}% | {took:.1f}{stopped} | "
                f"{v['load']:.1f} |")
    lines += ["", f"Geometric means count a proven optimum's gap as {GAP_FLOOR:g}."]
    for note in meta.get("notes") or []:
        lines += ["", note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", default=str(ROOT / "testbed"))
    parser.add_argument("--hardware", nargs="*", default=["a100x4", "a100x8"])
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument("--min-ops", type=int, default=testbed_script.WIDE_MIN_OPS,
                        help="leave out problems with fewer operators")
    parser.add_argument("--methods", nargs="*", default=["dp", "auto"])
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--results", default=str(ROOT / "docs" / "data" / "tables" / "wide.json"))
    parser.add_argument("--doc", default=str(tables.BENCHMARKS), help="markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    parser.add_argument("--note", action="append", default=[], help="a paragraph under the table")
    parser.add_argument("--bound-variants", type=float, default=0.0, metavar="SECONDS",
                        help="also run the cut-window bound's refinements against each other, "
                             "this many seconds each")
    parser.add_argument("--which-side", type=float, default=0.0, metavar="SECONDS",
                        help="after the run, give every unproven contiguous answer the chain "
                             "model and the cut-window bound this many seconds each, to see "
                             "which side holds its gap")
    parser.add_argument("--before", default=None,
                        help="an earlier run's results JSON (older code) to show beside this one")
    parser.add_argument("--before-label", default="an earlier run",
                        help="what --before is, e.g. the commit it ran")
    parser.add_argument("--from-results", default=None,
                        help="re-render the block from an earlier run's JSON (with --before, "
                             "--before-label and --note; with --bound-variants, measure them "
                             "on its values and write the results to --results)")
    args = parser.parse_args(argv)

    testbed = Path(args.testbed)

    def wide_entries() -> list[dict]:
        manifest = json.loads((testbed / "manifest.json").read_text())
        chosen = [e for e in manifest["problems"]
                  if e["model"] in testbed_script.WIDE_MODELS and e["ops"] >= args.min_ops
                  and e["hardware"] in args.hardware
                  and (not args.models or e["model"] in args.models)]
        return sorted(chosen, key=lambda e: (e["devices"], e["ops"], e["model"]))

    if args.from_results:
        earlier = json.loads(Path(args.from_results).read_text())
        rows, meta, variants = earlier["rows"], earlier["meta"], earlier["bound_variants"]
        sides = earlier.get("which_side", [])
        if args.bound_variants:  # measured now, on the earlier run's values, and kept
            variants = bound_variants(wide_entries(), testbed, rows, args.bound_variants)
            meta["bound_seconds"] = args.bound_variants
            meta["bound_variants_load"] = tables.load_average()
            Path(args.results).write_text(json.dumps(
                {"meta": meta, "rows": rows, "bound_variants": variants, "which_side": sides},
                indent=1,
                default=str) + "\n")
        meta["notes"] = list(meta.get("notes") or []) + args.note + [
            tables.rendered_note(args.from_results)]
        before = json.loads(Path(args.before).read_text())["rows"] if args.before else []
        meta["before"] = args.before_label if args.before else None
        methods = list(dict.fromkeys(r["method"] for r in rows))
        tables.publish("wide", HEADING, render(rows, methods, meta, before, variants, sides),
                       None if args.no_doc else Path(args.doc))
        return 0

    entries = wide_entries()
    load_start = tables.load_average()
    started = time.perf_counter()
    rows, unproven = run(entries, testbed, args.methods, args.time_limit)
    meta = tables.run_record("table_wide.py", argv, load_start, started, testbed=tables.shown(testbed),
                             time_limit=args.time_limit, notes=args.note, min_ops=args.min_ops)
    before = json.loads(Path(args.before).read_text())["rows"] if args.before else []
    meta["before"] = args.before_label if args.before else None
    variants = (bound_variants(entries, testbed, rows, args.bound_variants)
                if args.bound_variants else [])
    meta["bound_seconds"] = args.bound_variants
    sides = which_side(rows, unproven, args.which_side) if args.which_side else []
    meta["side_seconds"] = args.which_side
    tables.publish("wide", HEADING, render(rows, args.methods, meta, before, variants, sides),
                   None if args.no_doc else Path(args.doc), Path(args.results),
                   {"meta": meta, "rows": rows, "bound_variants": variants, "which_side": sides})
    return 0


if __name__ == "__main__":
    sys.exit(main())
