"""Placement solvers behind one entry point, :func:`solve`.

Each method lives in its own module as ``solve(problem, objective, time_limit, progress) ->
Placement``. :func:`solve` runs the chosen one, re-checks its answer with the one validator and
evaluator, and raises the lower bound to the best it can prove, so every result states objective,
bound and gap the same way whatever solver made it.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass
from typing import Callable

from ..cores import all_cores
from ..errors import InfeasibleError, UnknownMethodError
from ..evaluate import evaluate
from ..graph import Placement, PlacementProblem, check_objective
from . import bounds
from .common import Progress, require_objective


@dataclass(frozen=True)
class Method:
    """A registered solver: where it lives, what it solves, and what it guarantees.

    ``exact``: the objectives for which, when it finishes within its time limit, it returns the
    optimum of ``search_space``: ``"all"`` placements, ``"contiguous"`` pipelines only, or
    ``"replicated"``: all placements and replica groups (data parallelism, throughput only).
    """

    module: str
    objectives: tuple[str, ...]
    summary: str
    function: str = "solve"
    exact: tuple[str, ...] = ()
    search_space: str = "all"


METHODS: dict[str, Method] = {
    "dp": Method(
        "dp", ("throughput",), "Tarnawski et al. 2020: exact DP over contiguous splits",
        exact=("throughput",), search_space="contiguous",
    ),
    "ip": Method(
        "ip", ("throughput",), "Tarnawski et al. 2020: integer program over all placements (HiGHS)",
        exact=("throughput",),
    ),
    "latency-ip": Method(
        "latency_ip", ("latency",),
        "exact makespan program (CP-SAT) after Tarnawski et al.'s latency IP", exact=("latency",),
    ),
    "diviml-milp": Method(
        "diviml", ("throughput", "latency"),
        "DiviML 2023: exact MILP (CP-SAT latency, SCIP throughput without replicas)",
        exact=("throughput", "latency"),
    ),
    "diviml-replicas": Method(
        "replicas", ("throughput",),
        "DiviML 2023: exact throughput MILP with replica groups (data parallelism; SCIP)",
        exact=("throughput",), search_space="replicated",
    ),
    "split": Method(
        "diviml_split", ("throughput", "latency"), "DiviML 2023: modularity-based splitting heuristic",
    ),
    "slicegraph": Method(
        "slicegraph", ("throughput",),
        "Archer et al. 2024: SliceGraph DP over topological orders searched by BRKGA, MIP bounds",
        search_space="contiguous",
    ),
    "heft": Method("heft", ("latency",), "HEFT list scheduling (Topcuoglu et al. 2002) + local search"),
    "comm-balanced": Method(
        "comm_balanced", ("throughput", "latency"),
        "Tavarageri et al. 2019: multilevel communication-minimising balanced partitioning",
    ),
    "fastest-device": Method(
        "baselines", ("throughput", "latency"), "baseline: everything on the best single device",
        function="fastest_device",
    ),
    "greedy": Method(
        "baselines", ("throughput", "latency"),
        "baseline: fill devices in topological order by speed share", function="greedy",
    ),
    "etf": Method(
        "baselines", ("latency",), "baseline: earliest-time-first list scheduling (Hwang 1989)",
        function="etf",
    ),
    "pipedream": Method(
        "baselines", ("throughput",),
        "baseline: PipeDream-style DP slicing one linear order into stages", function="pipedream",
        search_space="contiguous",
    ),
    "auto": Method(
        "portfolio", ("throughput", "latency"),
        "portfolio: heuristics first, then exact methods within the time limit; best of all",
    ),
}

#: The share of a solve's time limit :func:`bounds.best_bound` may take (its bounds stop early,
#: with a valid bound).
BOUND_SHARE = 0.02


def method_function(method: str) -> Callable[..., Placement]:
    """The raw solver function of a registered method (no re-check; prefer :func:`solve`)."""
    entry = METHODS[method]
    return getattr(importlib.import_module(f"{__name__}.{entry.module}"), entry.function)


def solve(
    problem: PlacementProblem,
    objective: str = "throughput",
    method: str = "auto",
    time_limit: float = 60.0,
    progress: Progress | None = None,
) -> Placement:
    """Place ``problem``'s operators for ``objective`` with ``method`` in ``time_limit`` seconds.

    The solve runs on every core the process could use when tvm-place was imported
    (:func:`tvm_place.cores.all_cores`), whatever the calling thread's mask now: TVM narrows it
    after a kernel, and the mask cannot tell that from a narrowing of the caller's own (pin
    the process before importing tvm-place to keep solves on fewer cores)."""
    check_objective(objective)
    if method not in METHODS:
        raise UnknownMethodError(
            f"unknown method {method!r}; available: {sorted(METHODS)}"
        )
    entry = METHODS[method]
    require_objective(method, objective, entry.objectives)
    started = time.perf_counter()
    # On every core of the process: after TVM's first kernel (a folded constant, a measured
    # cost) the calling thread is pinned to one core, and the solvers' threads (CP-SAT's
    # workers) would inherit that one core.
    with all_cores():
        general_bound = bounds.best_bound(problem, objective, entry.search_space == "replicated",
                                          BOUND_SHARE * time_limit)
        # The bound's time (parts of it are built before their deadline is watched) counts in
        # the limit.
        left = max(time_limit - (time.perf_counter() - started), (1 - BOUND_SHARE) * time_limit)
        placement = method_function(method)(problem, objective, left, progress)
    seconds = time.perf_counter() - started
    if not math.isfinite(placement.value):
        raise InfeasibleError(
            f"no feasible placement of {problem.num_ops} operators on {problem.device_names} "
            "under the memory capacities and pins; add devices, raise capacities or drop pins"
        )
    evaluation = evaluate(problem, placement)
    value = evaluation.objective(objective)
    if not math.isclose(value, placement.value, rel_tol=1e-6, abs_tol=1e-12):
        raise AssertionError(
            f"solver {method!r} reported {placement.value} but the evaluator measures {value}"
        )
    placement.value = value
    placement.lower_bound = min(value, max(placement.lower_bound, general_bound))
    placement.device_names = problem.device_names
    placement.operators = list(problem.graph.names)
    placement.stats.setdefault("seconds", seconds)
    placement.stats.setdefault("search_space", entry.search_space)
    return placement
