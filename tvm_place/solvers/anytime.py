"""The rest of the time limit, where the exact program over ideals cannot finish (issue 17).

``dp`` stops early on wide graphs (too many ideals) with the best slicing of one topological
order. What it has left of its limit goes here, in the steps of ``STEPS``: the local search of
:mod:`tvm_place.solvers.chain_search` lowers the placement; where the devices are identical the
chain model of :mod:`tvm_place.solvers.bounds.contiguous` (Archer et al.'s whole chain in one
CP-SAT model, section 4 there), hinted with that placement, searches for a better chain (where
it does not apply, the local search runs again instead); then the cut-window bound of
:mod:`tvm_place.solvers.bounds.window` raises the proven bound with the rest of the time (its
relaxation needs the placement's value: a lower one makes more values "short", charged at both
ends, so it runs on the value the searches end with). Every step is valid whatever the others
do, so the answer is a contiguous placement no worse than the one given, and a bound on the
contiguous optimum.

Why these steps (issue 17, testbed/wide, NASNet-A): with the local search and the bound alone
the gaps stayed at 2.3% to 5.1%; which side held them was found by the chain model run long
(240 s, load about 8): on nasnet-a-mobile with 4 devices it found a chain of 0.8707 ms against
the search's 0.8911 ms, within 0.06% of the cut-window bound the search's value had given; with
the search's placement as hint, 30 s of it lowered nasnet-a-mobile and nasnet-a-large on 8
devices by 0.8% and 4.1%. So the incumbent, not the bound, was the weaker side there. Without a
hint CP-SAT found no chain under the search's value in 100 s on 8 devices. The chain model's own
proven bound is kept too (it rarely passes the cut-window bound on these graphs). Its share is
0.3 of the time then left (about 30 s of a 120 s limit): given 60 s instead of 30 s it found the
same chains on both 8-device problems, and with half the time left (48.8 s, load 2 to 3.8) its
last improvement came at 12.3 s (nasnet-a-mobile) and 16.8 s (nasnet-a-large), while the
cut-window bound after it needs more than a minute on nasnet-a-mobile 8 devices (issue 17,
wide17d: gap 0.98% after 60 s of CPU, 0.25% after 80 s, from 0.4995 ms). Before the chain model,
search, bound, search, bound at shares 0.4, 0.35, 0.6, 1.0 was measured: the second search
improved on none of the six problems. After the chain model a second search (0.25 of the time
then left, about 12 s) improved on none of the four NASNet-A problems either (issue 17, two
sessions' runs under the bench), so where the chain model runs its time goes to the bound, whose
pair charges keep raising it with more time (:mod:`tvm_place.solvers.bounds.window`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..evaluate import evaluate
from ..graph import PlacementProblem
from . import budget, chain_search
from .bounds import contiguous
from .bounds import window as window_bound
from .grouping import Groups, contract

#: The steps and their shares of the time then left, where the chain model applies and where
#: not (module docstring: after the chain model a second search improved nothing).
STEPS = {True: (("search", 0.15), ("chain", 0.3), ("bound", 1.0)),
         False: (("search", 0.15), ("search", 0.25), ("bound", 1.0))}
#: Relative gap under which the search stops: the placement is optimal as far as the bound's
#: bisection can tell.
CLOSED = 2 * window_bound.TOLERANCE


def hinted_chain(problem: PlacementProblem, device_of: np.ndarray, seconds: float,
                 groups: Groups, lower: float = 0.0) -> tuple[np.ndarray, dict]:
    """The chain model (:func:`~tvm_place.solvers.bounds.contiguous.chain_bound`, identical
    devices) for ``seconds``, hinted with the contiguous placement ``device_of`` and capped at
    its value, ``lower`` its objective's floor: ``(placement, run)``, the placement being the
    best chain CP-SAT found (``device_of`` where none) and ``run`` its ``seconds``, ``status``,
    proven ``bound`` and, where it found a chain, that chain's ``measured`` max-load."""
    order = chain_search.chain_order(problem, device_of)
    position = {d: b for b, d in enumerate(order)}
    hint = np.array([position[int(device_of[m[0]])] for m in groups.members])
    result = contiguous.chain_bound(problem, seconds, groups, floor=lower,
                                    target=evaluate(problem, device_of).max_load, hint=hint,
                                    probes=False)
    run = {"seconds": result.seconds, "status": result.status, "bound": result.value}
    if "block_of_group" not in result.details:
        return device_of, run
    found = np.asarray(order)[result.details["block_of_group"][groups.group_of]]
    run["measured"] = evaluate(problem, found).max_load
    return found, run


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

    def chain(seconds: float) -> None:
        nonlocal device_of, value, lower
        if seconds <= 0 or value <= lower * (1 + CLOSED):
            return
        found, run = hinted_chain(problem, device_of, seconds, groups, lower)
        if run.get("measured", math.inf) < value:
            device_of, value = found, run["measured"]
        record.setdefault("chain_models", []).append(run)
        if math.isfinite(run["bound"]):
            lower = max(lower, min(run["bound"], value))

    chain_model = (contiguous.chain_applies(problem, groups)
                   and contiguous.buildable(groups, left))
    for step, share in STEPS[chain_model]:
        {"search": search, "chain": chain, "bound": bound}[step](
            share * (deadline - time.perf_counter()))
    return device_of, value, lower
