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
  non-contiguous optimum (n <= 400), else the multilevel ``comm-balanced`` partitioner;
- latency: greedy, heft and etf, then the exact ``diviml-milp`` while the graph is small enough
  for it to prove anything (n <= 60), else DiviML's ``split`` heuristic, which solves module by
  module.
"""

from __future__ import annotations

import time

from ..errors import InfeasibleError, TvmPlaceError
from ..graph import Placement, PlacementProblem
from . import bounds

#: Largest graph on which the exact latency MILP is tried.
EXACT_LATENCY_MAX_OPS = 60
#: Largest graph on which the throughput integer program is tried.
EXACT_THROUGHPUT_MAX_OPS = 400


def plan(problem: PlacementProblem, objective: str) -> list[tuple[str, float]]:
    """``(method, share of the remaining time)`` in the order the portfolio runs them."""
    n = problem.num_ops
    if objective == "throughput":
        steps = [("greedy", 0.05), ("fastest-device", 0.05), ("pipedream", 0.05), ("dp", 0.5),
                 ("slicegraph", 0.5)]
        steps.append(("ip", 1.0) if n <= EXACT_THROUGHPUT_MAX_OPS else ("comm-balanced", 1.0))
        return steps
    steps = [("greedy", 0.05), ("heft", 0.1), ("etf", 0.1)]
    if n <= EXACT_LATENCY_MAX_OPS:
        steps.append(("diviml-milp", 1.0))
    else:
        steps.append(("split", 1.0))
    return steps


#: Seconds under which a step is not started (it could not even read the problem).
MIN_STEP_SECONDS = 0.01


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
    for method, share in plan(problem, objective):
        if method not in METHODS:
            continue
        if contiguous_optimum_found and METHODS[method].search_space == "contiguous":
            continue  # nothing over contiguous splits can beat a proven contiguous optimum
        remaining = deadline - time.perf_counter()
        # The first step (greedy) always runs: without it there may be no answer at all.
        if remaining <= MIN_STEP_SECONDS and best is not None:
            break
        if progress is not None:
            progress(f"auto: running {method}", None)
        try:
            placement = solve_with(problem, objective, method, max(remaining * share,
                                                                   MIN_STEP_SECONDS), progress)
        except TvmPlaceError as err:
            # No placement from this method (none in its search space, none found in its share
            # of the time, or a problem it does not take): the others may still find one.
            failures.append(f"{method}: {err}")
            runs.append({"method": method, "failed": str(err)[:200]})
            continue
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
