"""Time the dp solver on the dnn-partitioning workloads, optionally side by side with a reference.

Each workload is solved in a fresh process (load the JSON, solve, check the split), so that the time
compares with a reference program that also starts, reads and solves. With
``--reference-command "TEMPLATE {file}"`` that command (run by the shell, ``{file}`` replaced by
the workload path) is timed on the same workloads, alternating with ours; a JSON ``maxLoad`` on its
standard output is reported as its optimum. Every time is the median of ``--repeat`` runs. The
report (machine, versions, date, per-workload times, ratios, optima) goes to ``--out``, and its
tables to the ``tarnawski`` block of docs/benchmarks.md (table 1 of issue 4); ``--block-only``
rewrites that block from an existing report without running anything.

Usage:
    python scripts/bench_dp.py [--repeat 3] [--reference-command "TEMPLATE {file}"]
                               [--reference-label TEXT] [--out docs/dp-benchmark.md]
    python scripts/bench_dp.py --block-only                     (report -> docs/benchmarks.md)
    python scripts/bench_dp.py --solve-one WORKLOAD.json       (one run; prints JSON)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "data" / "dnn-partitioning" / "throughput-inputs"

#: The 14 workloads the reference DP finished, with its optima (data/dnn-partitioning/README.md).
PUBLISHED_OPTIMA = json.loads((INPUTS.parent / "reference-optima.json").read_text())["optima"]

#: Workloads the reference DP did not finish (36,596 ideals; > 7 GB): ours only, 300 s limit.
UNFINISHED_BY_REFERENCE = ["LayerGraphs/inceptionv3_inference", "LayerGraphs/inceptionv3_training"]

#: Address-space cap for the reference process, so a runaway run cannot take the machine down.
REFERENCE_MEMORY_BYTES = 8 << 30


def solve_one(path: str) -> dict:
    """Load, solve and check one workload; the result as plain data."""
    from tvm_place.evaluate import evaluate, validate
    from tvm_place.formats import load_dnn_partitioning
    from tvm_place.solvers import solve

    problem = load_dnn_partitioning(path)
    started = time.perf_counter()
    placement = solve(problem, "throughput", "dp", time_limit=300)
    seconds = time.perf_counter() - started
    validate(problem, placement, contiguous=True)
    value = evaluate(problem, placement).max_load
    return {
        "value": value,
        "lower_bound": placement.lower_bound,
        "gap": placement.gap,
        "optimal": bool(placement.stats.get("optimal")),
        "solve_seconds": seconds,
        "ideals": placement.stats.get("ideals"),
        "pairs": placement.stats.get("block_pairs"),
        "accelerators": sum(d.kind != "cpu" for d in problem.devices),
    }


def _run_ours(path: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--solve-one", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (REFERENCE_MEMORY_BYTES, REFERENCE_MEMORY_BYTES))


def _run_reference(template: str, path: Path, timeout: float) -> tuple[float | None, float | None]:
    command = template.replace("{file}", shlex.quote(str(path)))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        return None, None
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return None, None
    try:
        optimum = float(json.loads(done.stdout)["maxLoad"])
    except (ValueError, KeyError, TypeError):
        optimum = None
    return seconds, optimum


def _machine() -> list[str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = next(
        (
            f"{int(line.split()[1]) / 2**20:.0f} GiB"
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "unknown",
    )
    import numpy

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {model}, {os.cpu_count()} cores, {memory} memory; {platform.platform()}",
        f"- versions: Python {platform.python_version()}, NumPy {numpy.__version__}, "
        f"tvm-place {commit or 'unknown'}",
    ]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solve-one", metavar="WORKLOAD", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--reference-command", help='shell template, e.g. "./dp < {file}"')
    parser.add_argument("--reference-label", default="", help="what the reference command is")
    parser.add_argument("--reference-timeout", type=float, default=600.0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "dp-benchmark.md"))
    parser.add_argument("--block-only", action="store_true",
                        help="only copy the tables of --out into docs/benchmarks.md")
    args = parser.parse_args()
    if args.solve_one:
        print(json.dumps(solve_one(args.solve_one)))
        return 0
    if args.block_only:
        write_benchmarks_block(Path(args.out))
        return 0

    load_before = os.getloadavg()
    ours: dict[str, list[float]] = {w: [] for w in PUBLISHED_OPTIMA}
    solver: dict[str, list[float]] = {w: [] for w in PUBLISHED_OPTIMA}
    reference: dict[str, list[float | None]] = {w: [] for w in PUBLISHED_OPTIMA}
    results: dict[str, dict] = {}
    reference_optimum: dict[str, float | None] = {}
    for run in range(args.repeat):
        for workload in PUBLISHED_OPTIMA:
            path = INPUTS / f"{workload}.json"
            seconds, results[workload] = _run_ours(path)
            ours[workload].append(seconds)
            solver[workload].append(results[workload]["solve_seconds"])
            line = f"[{run + 1}/{args.repeat}] {workload}: ours {seconds:.2f} s"
            if args.reference_command:
                ref_seconds, reference_optimum[workload] = _run_reference(
                    args.reference_command, path, args.reference_timeout
                )
                reference[workload].append(ref_seconds)
                line += f", reference {_seconds(ref_seconds)} s"
            print(line, flush=True)
    unfinished = {}
    for workload in UNFINISHED_BY_REFERENCE:
        seconds, unfinished[workload] = _run_ours(INPUTS / f"{workload}.json")
        unfinished[workload]["seconds"] = seconds
        print(f"{workload}: ours {seconds:.2f} s", flush=True)
    load_after = os.getloadavg()

    lines = [
        "# dp solver benchmark: dnn-partitioning workloads",
        "",
        f"Written by `scripts/bench_dp.py`. Each time is the median of {args.repeat} runs of a "
        "fresh process (start, read the workload, solve, check the split); \"solver\" is the "
        "median time inside `solve` alone. Ours and the reference run alternately on the same "
        "files.",
        "",
        "Ours is `tvm_place.solvers.dp` (NumPy, no compiled code): the same recurrence over ideals "
        "as the reference, with exact pruning by an upper bound from slicing one topological "
        "order, by the cheapest compute of a block, and by the work the unused devices can still "
        "carry; its docstring gives the details. On the smallest workloads our time is mostly "
        "the start of the Python interpreter and the import of NumPy (about 0.3 s).",
        "",
        *_machine(),
        f"- load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}",
    ]
    if args.reference_command:
        lines.append(
            f"- reference: {args.reference_label or 'user-supplied command'}, run as "
            f"`{args.reference_command}`"
        )
    lines += [
        "",
        "## The 14 workloads the reference DP finished",
        "",
        "| workload | k | published optimum | our optimum | rel. diff | ours (s) | solver (s) "
        "| reference (s) | reference / ours | reference optimum |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    total_ours = total_reference = 0.0
    complete = bool(args.reference_command)
    for workload, published in PUBLISHED_OPTIMA.items():
        result = results[workload]
        ours_median = statistics.median(ours[workload])
        times = [t for t in reference[workload] if t is not None]
        ref_median = statistics.median(times) if times and len(times) == args.repeat else None
        complete &= ref_median is not None
        total_ours += ours_median
        total_reference += ref_median or 0.0
        ratio = "—" if ref_median is None else f"{ref_median / ours_median:.2g}x"
        optimum = reference_optimum.get(workload)
        lines.append(
            f"| {workload} | {result['accelerators']} | {published:g} | {result['value']:.6g} | "
            f"{(result['value'] - published) / published:+.1e} | {ours_median:.2f} | "
            f"{statistics.median(solver[workload]):.2f} | {_seconds(ref_median)} | {ratio} | "
            f"{'—' if optimum is None else f'{optimum:.6g}'} |"
        )
    lines.append(
        f"| **total** | | | | | **{total_ours:.2f}** | | "
        f"**{_seconds(total_reference if complete else None)}** | "
        f"{f'**{total_reference / total_ours:.1f}x**' if complete else '—'} | |"
    )
    lines += [
        "",
        "## InceptionV3 (the reference DP did not finish in 20 minutes)",
        "",
        "Ours with a 300 s limit, one run. The lower bound is over contiguous splits; gap = "
        "(value - bound) / value.",
        "",
        "| workload | value | lower bound | gap | optimal | ideals | pairs | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload, result in unfinished.items():
        lines.append(
            f"| {workload} | {result['value']:.6g} | {result['lower_bound']:.6g} | "
            f"{result['gap']:.2%} | {result['optimal']} | {result['ideals']} | {result['pairs']} | "
            f"{result['seconds']:.2f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    write_benchmarks_block(Path(args.out))
    print(f"wrote {args.out} and its block of docs/benchmarks.md")
    return 0


def write_benchmarks_block(report: Path) -> None:
    """Table 1 of docs/benchmarks.md: the report's run facts and tables, as measured."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _tables

    text = report.read_text()
    facts = [line for line in text.splitlines() if line.startswith("- ")]
    tables = text[text.index("## The 14 workloads"):].replace("## ", "#### ")
    body = "\n".join([
        f"`python scripts/bench_dp.py --reference-command \"<their dp binary> < {{file}}\"` -> "
        f"[{report.name}]({report.name}) (full report). Ours against the authors' C++ DP, run "
        "alternately on the same files in one run; each time the median of 3 fresh processes.",
        "",
        *facts,
        "",
        tables.strip(),
    ])
    _tables.write_block("tarnawski", "## Tarnawski et al. reproduction (issue 4, table 1)", body)


if __name__ == "__main__":
    sys.exit(main())
