"""The ``tvm-place`` command line.

``tvm-place solve FILE`` places a problem file (tvm-place JSON or a dnn-partitioning workload) and
prints one JSON object; bad input exits with code 2 and a one-paragraph message (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import TvmPlaceError

SOLVE_EXAMPLES = """examples:
  tvm-place solve data/dnn-partitioning/throughput-inputs/LayerGraphs/bert24_inference.json \\
      --format dnn-partitioning --objective throughput --method dp --output split.json
  tvm-place solve problem.json --objective latency --method heft --time-limit 10
"""


def _solve(args: argparse.Namespace) -> int:
    from . import solvers
    from .formats import dnn_split, load_dnn_partitioning, load_problem

    if args.format == "dnn-partitioning":
        problem = load_dnn_partitioning(args.file)
    else:
        problem = load_problem(args.file)
    progress = None if args.quiet else _stderr_progress
    placement = solvers.solve(problem, args.objective, args.method, args.time_limit, progress)
    if args.output:
        if args.format == "dnn-partitioning":
            written = dnn_split(problem, placement)
        else:
            written = placement.to_dict()
        Path(args.output).write_text(json.dumps(written, indent=1))
    summary = {
        "problem": problem.name,
        "objective": placement.objective,
        "value": placement.value,
        "lower_bound": placement.lower_bound,
        "gap": placement.gap,
        "method": placement.method,
        "seconds": placement.stats.get("seconds"),
        "search_space": placement.stats.get("search_space"),
        "output": args.output,
    }
    print(json.dumps(summary))
    return 0


def _stderr_progress(message: str, fraction: float | None = None) -> None:
    done = "" if fraction is None else f" ({fraction:.0%})"
    print(f"[tvm-place] {message}{done}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    from .solvers import METHODS

    parser = argparse.ArgumentParser(prog="tvm-place", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)
    solve = commands.add_parser(
        "solve",
        help="place a problem file and print the result as JSON",
        epilog=SOLVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    solve.add_argument("file", help="problem file")
    solve.add_argument(
        "--format", choices=["tvm-place", "dnn-partitioning"], default="tvm-place",
        help="file format (default: tvm-place JSON, docs/problem-format.md)",
    )
    solve.add_argument("--objective", choices=["throughput", "latency"], default="throughput")
    solve.add_argument("--method", default="auto", help=f"one of auto, {', '.join(sorted(METHODS))}")
    solve.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    solve.add_argument("--output", help="write the placement here (a split file for dnn-partitioning)")
    solve.add_argument("--quiet", action="store_true", help="no progress on stderr")
    solve.set_defaults(run=_solve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TvmPlaceError as err:
        if args.debug:
            raise
        print(f"tvm-place: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
