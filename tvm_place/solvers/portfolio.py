"""The ``auto`` method: a portfolio of the registered solvers, chosen by problem size and objective.

Cheap heuristics run first, so an answer exists at once; then exact methods get the rest of the
time limit, largest-first where they are likely to finish. The result is the best placement any of
them found, with the best lower bound any of them proved *for all placements* (a bound proved only
over contiguous splits is kept in ``stats["contiguous_lower_bound"]``, since it does not bound the
non-contiguous placements the portfolio also searches). The portfolio stops early once a
placement meets that bound.

``greedy`` runs first, whatever the size: it is linear, finds a placement wherever filling the
devices in order (or, failing that, a packing search) does, and so the portfolio never returns
worse than greedy and never fails where greedy succeeds. A method that fails (finds no placement
in its share of the time, or has none in its search space, e.g. no contiguous split under the
pins) is recorded in ``stats["runs"]`` and skipped; the portfolio fails only when every method
did.

Plans (``n`` operators, ``D`` devices):

- throughput: greedy, fastest-device, pipedream, then dp (exact over contiguous splits), slicegraph
  only when dp could not prove its optimum, and the integer program ``ip`` for its bound and the
  non-contiguous optimum (n <= 400); beyond, greedy, DiviML's program (or its HEFT warm start),
  the multilevel ``comm-balanced`` partitioner, then the contiguous methods;
- latency: greedy, heft and etf, then the exact ``diviml-milp`` while the graph is small enough
  for it to prove anything (n <= 60), else DiviML's ``split`` heuristic, which solves module by
  module.

Each step gets its share of the time left, but at least :func:`least_seconds` (what it takes
whatever its limit, in units of greedy's own time), and is skipped when that is more than is
left: on 200,000 operators most methods need seconds just to read the problem.
"""

from __future__ import annotations

import time

from ..errors import InfeasibleError, TvmPlaceError
from ..graph import Placement, PlacementProblem
from . import bounds, budget

#: Largest graph on which the exact latency MILP is tried.
EXACT_LATENCY_MAX_OPS = 60
#: Largest graph on which the throughput integer program is tried.
EXACT_THROUGHPUT_MAX_OPS = 400


def plan(problem: PlacementProblem, objective: str) -> list[tuple[str, float]]:
    """``(method, share of the remaining time)`` in the order the portfolio runs them."""
    n = problem.num_ops
    if objective == "throughput":
        if n > EXACT_THROUGHPUT_MAX_OPS:
            # Large graphs: DiviML's program (HEFT's placement where the program is too large
            # to build: 20% under greedy's max load at 10,000 operators) and the partitioner
            # first; the contiguous methods then only slice runs of operators.
            return [("greedy", 0.05), ("diviml-milp", 0.3), ("comm-balanced", 0.6),
                    ("fastest-device", 0.05), ("pipedream", 0.05), ("dp", 0.5),
                    ("slicegraph", 1.0)]
        return [("greedy", 0.05), ("fastest-device", 0.05), ("pipedream", 0.05), ("dp", 0.5),
                ("slicegraph", 0.5), ("ip", 1.0)]
    steps = [("greedy", 0.05), ("heft", 0.1), ("etf", 0.1)]
    if n <= EXACT_LATENCY_MAX_OPS:
        steps.append(("diviml-milp", 1.0))
    else:
        steps.append(("split", 1.0))
    return steps


#: Seconds under which a step is not started (it could not even read the problem).
MIN_STEP_SECONDS = 0.01

#: Methods that run a list-scheduling pass (HEFT's or ETF's) or a warm start from one whatever
#: their limit; and linear passes (greedy's time) the others take at least, where more than one:
#: the multilevel partitioner's levels, the contiguous methods' slicing of runs (measured at
#: 10,000 and 200,000 operators).
LIST_SCHEDULING = ("heft", "etf", "latency-ip", "diviml-milp", "split")
LINEAR_PASSES = {"comm-balanced": 3.0, "pipedream": 1.5, "dp": 1.5, "slicegraph": 1.5}
#: Linear passes kept back at the end for evaluating and bounding the answer (``solve``'s).
FINISH_PASSES = 0.5


def least_seconds(problem: PlacementProblem, method: str, linear: float) -> float:
    """About the least time ``method`` takes on ``problem`` whatever its limit (reading it,
    bounds, a first answer), given ``linear``: the seconds greedy took (one linear pass). The
    portfolio gives a step at least that, and skips one that would not fit in what is left: on
    200,000 operators a share of the limit is below that for most methods."""
    if method in LIST_SCHEDULING:
        return max(budget.heft_pass_seconds(problem), linear)
    return LINEAR_PASSES.get(method, 1.0) * linear


def solve(problem: PlacementProblem, objective: str, time_limit: float, progress=None) -> Placement:
    from . import METHODS
    from . import solve as solve_with

    deadline = time.perf_counter() + time_limit
    best: Placement | None = None
    bound_all = bounds.lower_bound(problem, objective)  # raises for operators with no device
    bound_contiguous = bound_all
    runs = []
    failures = []
    contiguous_optimum_found = False
    linear = None
    for method, share in plan(problem, objective):
        if method not in METHODS:
            continue
        if contiguous_optimum_found and METHODS[method].search_space == "contiguous":
            continue  # nothing over contiguous splits can beat a proven contiguous optimum
        remaining = deadline - time.perf_counter()
        # The first step (greedy) always runs: without it there may be no answer at all.
        least = MIN_STEP_SECONDS if linear is None else max(
            MIN_STEP_SECONDS, least_seconds(problem, method, linear))
        if remaining <= least and best is not None:
            runs.append({"method": method, "skipped": f"needs about {least:.3g} s, "
                                                      f"{max(remaining, 0.0):.3g} s left"})
            continue
        if progress is not None:
            progress(f"auto: running {method}", None)
        step_started = time.perf_counter()
        try:
            placement = solve_with(problem, objective, method,
                                   min(remaining, max(remaining * share, least)), progress)
        except TvmPlaceError as err:
            # No placement from this method (none in its search space, none found in its share
            # of the time, or a problem it does not take): the others may still find one.
            failures.append(f"{method}: {err}")
            runs.append({"method": method, "failed": str(err)[:200]})
            continue
        finally:
            if linear is None:  # the first step, greedy: one linear pass, the unit of cost
                linear = time.perf_counter() - step_started
                deadline -= FINISH_PASSES * linear
        runs.append(
            {
                "method": method,
                "value": placement.value,
                "lower_bound": placement.lower_bound,
                "seconds": placement.stats.get("seconds"),
                "search_space": placement.stats.get("search_space"),
            }
        )
        if METHODS[method].search_space == "contiguous":
            bound_contiguous = max(bound_contiguous, placement.lower_bound)
            exact = objective in METHODS[method].exact and placement.stats.get("optimal", False)
            contiguous_optimum_found |= exact
        else:
            bound_all = max(bound_all, placement.lower_bound)
        if best is None or placement.value < best.value:
            best = placement
        if best.value <= bound_all * (1 + 1e-9):
            break
    if best is None:
        raise InfeasibleError(
            "no method found a feasible placement: " + "; ".join(failures)
            if failures
            else f"no method finished within the time limit of {time_limit} s; raise it"
        )
    return Placement(
        device_of=best.device_of,
        objective=objective,
        value=best.value,
        lower_bound=min(best.value, bound_all),
        method=f"auto:{best.method}",
        order=best.order,
        stats={
            "search_space": "all",
            "contiguous_lower_bound": max(bound_contiguous, bound_all),
            "runs": runs,
            "best_method": best.method,
        },
    )
