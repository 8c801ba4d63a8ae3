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
contiguous optimum. :func:`improve`, the search and the hinted chain model without the bound, is
slicegraph's last step (its bounds are its own).

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
#: :func:`improve`'s steps: up to half the time to the local search, the rest to the chain
#: model; the search stops after this many kicks in a row without a better chain.
IMPROVE_STEPS = {True: (("search", 0.5), ("chain", 1.0)), False: (("search", 1.0),)}
IMPROVE_PATIENCE = 300
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


class _Steps:
    """A contiguous placement, its value and a bound, and the steps that improve them (module
    docstring); what each step did goes into ``record``."""

    def __init__(self, problem: PlacementProblem, device_of: np.ndarray, lower: float,
                 groups: Groups, record: dict, seed: int = 0, patience: int | None = None):
        self.problem, self.groups, self.record = problem, groups, record
        self.device_of, self.lower = device_of, lower
        self.value = evaluate(problem, device_of).max_load
        self.seed, self.patience = seed, patience

    def closed(self) -> bool:
        return self.value <= self.lower * (1 + CLOSED)

    def search(self, seconds: float) -> None:
        if seconds <= 0 or self.closed():
            return
        found, run = chain_search.improve(self.problem, self.device_of, seconds, seed=self.seed,
                                          groups=self.groups, stop_at=self.lower * (1 + CLOSED),
                                          patience=self.patience)
        measured = evaluate(self.problem, found).max_load
        self.record.setdefault("searches", []).append({**run, "measured": measured})
        if measured < self.value:
            self.device_of, self.value = found, measured

    def chain(self, seconds: float) -> None:
        if seconds <= 0 or self.closed() or not contiguous.buildable(self.groups, seconds):
            return
        found, run = hinted_chain(self.problem, self.device_of, seconds, self.groups, self.lower)
        if run.get("measured", math.inf) < self.value:
            self.device_of, self.value = found, run["measured"]
        self.record.setdefault("chain_models", []).append(run)
        if math.isfinite(run["bound"]):
            self.lower = max(self.lower, min(run["bound"], self.value))

    def bound(self, seconds: float) -> None:
        if seconds <= 0 or self.closed():
            return
        proven, run = window_bound.window_bound(self.problem, seconds, self.value, self.groups,
                                                floor=self.lower)
        self.record.setdefault("window_bounds", []).append({**run, "value": proven})
        if math.isfinite(proven):
            self.lower = max(self.lower, min(proven, self.value))

    def run(self, steps: dict, deadline: float,
            chain_model: bool = True) -> tuple[np.ndarray, float, float]:
        chain_model = (chain_model and contiguous.chain_applies(self.problem, self.groups)
                       and contiguous.buildable(self.groups, deadline - time.perf_counter()))
        for step, share in steps[chain_model]:
            getattr(self, step)(share * (deadline - time.perf_counter()))
        return self.device_of, self.value, self.lower


def _start(problem: PlacementProblem, deadline: float, record: dict) -> bool:
    left = deadline - time.perf_counter()
    if left <= 0 or not budget.buildable(problem.num_ops + len(problem.graph.edges), left):
        record["skipped"] = f"{left:.3g} s left: too little for this graph"
        return False
    return True


def refine(problem: PlacementProblem, device_of: np.ndarray, lower: float, deadline: float,
           stats: dict) -> tuple[np.ndarray, float, float]:
    """``(device_of, value, lower)`` after using the time until ``deadline``
    (``time.perf_counter()``) on the contiguous placement ``device_of`` and the bound ``lower``
    (module docstring); what each step did goes into ``stats["anytime"]``."""
    record: dict = {}
    stats["anytime"] = record
    if not _start(problem, deadline, record):
        return device_of, evaluate(problem, device_of).max_load, lower
    return _Steps(problem, device_of, lower, contract(problem), record).run(STEPS, deadline)


def improve(problem: PlacementProblem, device_of: np.ndarray, lower: float, deadline: float,
            groups: Groups, record: dict, seed: int = 0,
            chain_model: bool = True) -> tuple[np.ndarray, float, float]:
    """``refine`` without the bound, for a solver with bounds of its own (slicegraph): the local
    search, stopped after ``IMPROVE_PATIENCE`` kicks in a row without a better chain, then the
    chain model hinted with its placement (``IMPROVE_STEPS``; not where ``chain_model`` is
    false), on the contiguous placement ``device_of`` until ``deadline``. Without the chain
    model, the result depends on ``seed`` alone when the search stops before the deadline.
    Returns ``(device_of, value, lower)``, ``lower`` raised only by the chain model's own bound;
    what each step did goes into ``record``."""
    if not _start(problem, deadline, record):
        return device_of, evaluate(problem, device_of).max_load, lower
    steps = _Steps(problem, device_of, lower, groups, record, seed, IMPROVE_PATIENCE)
    return steps.run(IMPROVE_STEPS, deadline, chain_model)
