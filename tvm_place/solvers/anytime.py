"""The rest of the time limit, where the exact program over ideals cannot finish (issue 17).

``dp`` stops early on wide graphs (too many ideals) with the best slicing of one topological
order. What it has left of its limit goes here, in two steps (``STEPS``): the local search of
:mod:`tvm_place.solvers.chain_search` lowers the placement, then the cut-window bound of
:mod:`tvm_place.solvers.bounds.window` raises the proven bound with the rest of the time (its
relaxation needs the placement's value: a lower one makes more values "short", charged at both
ends, so it runs on the value the search ends with). Both halves are valid whatever the other
does, so the answer is a contiguous placement no worse than the one given, and a bound on the
contiguous optimum.

Why this split (issue 17, testbed/wide, 120 s at load 8 to 17): with search, bound, search,
bound at shares 0.4, 0.35, 0.6, 1.0 the second search improved on none of the six problems, so
the second bound (same value, same proof) never ran, and the first stopped after 3 to 22 s with
every interval of its chain refined; the bound now halves its CP-SAT windows while time is left
(:mod:`tvm_place.solvers.bounds.window`), so the time the second search used goes to it.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..evaluate import evaluate
from ..graph import PlacementProblem
from . import budget, chain_search
from .bounds import window as window_bound
from .grouping import contract

#: The steps and their shares of the time then left.
STEPS = (("search", 0.4), ("bound", 1.0))
#: Relative gap under which the search stops: the placement is optimal as far as the bound's
#: bisection can tell.
CLOSED = 2 * window_bound.TOLERANCE


def refine(problem: PlacementProblem, device_of: np.ndarray, lower: float, deadline: float,
           stats: dict) -> tuple[np.ndarray, float, float]:
    """``(device_of, value, lower)`` after using the time until ``deadline``
    (``time.perf_counter()``) on the contiguous placement ``device_of`` and the bound ``lower``
    (module docstring); what each step did goes into ``stats["anytime"]``."""
    value = evaluate(problem, device_of).max_load
    left = deadline - time.perf_counter()
    record: dict = {}
    stats["anytime"] = record
    if left <= 0 or not budget.buildable(problem.num_ops + len(problem.graph.edges), left):
        record["skipped"] = f"{left:.3g} s left: too little for this graph"
        return device_of, value, lower
    groups = contract(problem)

    def search(seconds: float) -> None:
        nonlocal device_of, value
        if seconds <= 0 or value <= lower * (1 + CLOSED):
            return
        found, run = chain_search.improve(problem, device_of, seconds, groups=groups,
                                          stop_at=lower * (1 + CLOSED))
        measured = evaluate(problem, found).max_load
        record.setdefault("searches", []).append({**run, "measured": measured})
        if measured < value:
            device_of, value = found, measured

    def bound(seconds: float) -> None:
        nonlocal lower
        if seconds <= 0 or value <= lower * (1 + CLOSED):
            return
        proven, run = window_bound.window_bound(problem, seconds, value, groups, floor=lower)
        record.setdefault("window_bounds", []).append({**run, "value": proven})
        if math.isfinite(proven):
            lower = max(lower, min(proven, value))

    for step, share in STEPS:
        (search if step == "search" else bound)(share * (deadline - time.perf_counter()))
    return device_of, value, lower
