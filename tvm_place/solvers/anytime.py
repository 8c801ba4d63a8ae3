"""The rest of the time limit, where the exact program over ideals cannot finish (issue 17).

``dp`` stops early on wide graphs (too many ideals) with the best slicing of one topological
order. What it has left of its limit goes here, in turns (``STEPS``): the local search of
:mod:`tvm_place.solvers.chain_search` lowers the placement, the cut-window bound of
:mod:`tvm_place.solvers.bounds.window` raises the proven bound (its relaxation needs the
placement's value: a lower one makes more values "short", charged at both ends), the local
search again, the bound again, until the gap closes or the time is spent. Both halves are valid whatever the other does, so the answer is a contiguous
placement no worse than the one given, and a bound on the contiguous optimum.
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

#: The steps and their shares of the time then left (the bound usually stops sooner: once the
#: chain of its program uses only refined intervals).
STEPS = (("search", 0.4), ("bound", 0.35), ("search", 0.6), ("bound", 1.0))
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

    bounded_at = []  # the values the bound ran with: again with the same one proves the same

    def bound(seconds: float) -> None:
        nonlocal lower
        if seconds <= 0 or value <= lower * (1 + CLOSED) or value in bounded_at:
            return
        bounded_at.append(value)
        proven, run = window_bound.window_bound(problem, seconds, value, groups, floor=lower)
        record.setdefault("window_bounds", []).append({**run, "value": proven})
        if math.isfinite(proven):
            lower = max(lower, min(proven, value))

    # Search, bound (its short values depend on the value found), search, bound again with the
    # value the second search found; each step a share of the time then left.
    for step, share in STEPS:
        (search if step == "search" else bound)(share * (deadline - time.perf_counter()))
    return device_of, value, lower
