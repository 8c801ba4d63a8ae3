"""DiviML's throughput program with replicas: pipeline stages that may run data-parallel.

Reference: Y. Ghannane, M. S. Abdelfattah, "DiviML: A Module-based Heuristic for Mapping Neural
Networks onto Heterogeneous Platforms", arXiv 2308.00127 (2023), throughput formulation with
replicas (data parallelism). Re-derived for the cost rules of :mod:`tvm_place.evaluate`: a group
``S`` of devices may hold a stage together, each member running all of the stage's operators on
every ``|S|``-th input (round-robin), so each member's load per input is ``1 / |S|`` of what the
stage costs it alone. :mod:`tvm_place.solvers.diviml` is the same program with singleton groups.

Variables (``i`` an operator, ``S`` a non-empty group of devices, ``k`` a device):

- ``z[S]`` (binary): group ``S`` is formed; every device is in at most one formed group;
- ``x[i, S]`` (binary): operator ``i`` runs on group ``S`` (exactly one), only if ``S`` is formed,
  every member supports and is allowed to run ``i`` and the colour class of ``i`` stays together;
- ``s[i, S]`` / ``r[i, S]``: the value of ``i`` leaves / enters group ``S`` (0 or 1 at the optimum);
- ``T``: the bottleneck load per input.

::

    minimise T
    sum_S x[i, S] = 1;   x[i, S] <= z[S];   sum_{S contains k} z[S] <= 1
    s[i, S] >= x[i, S] - x[j, S],  r[i, S] >= x[j, S] - x[i, S]            (edge i -> j)
    |S| T >= sum_i p[i, k] x[i, S] + t[i, k] (s[i, S] + r[i, S])           (S, every k in S)
    sum_i m[i] x[i, S] <= min_{k in S} capacity[k]

Replicas only raise throughput: a single input still runs on one member, so latency is not
improved, and the method solves throughput only. Solved by CP-SAT with the integer scaling of
:mod:`~tvm_place.solvers.diviml`: on 60 of the test suite's random problems (3-10 operators,
2-4 devices) the same program took SCIP 10.0 s in all (3.5 s at most), CP-SAT 1.6 s (0.14 s at
most after the first call). The warm start is the better of pure data parallelism (the whole
model on the best single group) and DiviML's HEFT start without replicas.

Complexity: ``G`` candidate groups (:func:`device_groups`: ``2^D - 1`` for ``D`` different
devices, far fewer where devices are identical), so ``n G`` binaries and ``O(m G)`` inequalities;
the method refuses more than :data:`MAX_GROUPS` groups. NP-hard (it contains the program without
replicas).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from ..errors import InfeasibleError, UnknownMethodError
from ..evaluate import MEMORY_TOLERANCE, evaluate
from ..graph import Placement, PlacementProblem
from . import bounds, budget
from .diviml import (
    MEMORY_UNITS,
    SAFETY_SECONDS,
    SAFETY_SHARE,
    TIME_UNITS,
    WARM_START_SECONDS,
    WARM_START_SHARE,
    WARM_START_WITHIN,
    _floor,
    _solver,
    _status,
    warm_start,
)
from .common import reporter, require_objective
from .grouping import feasible_devices
from .ip import BuildTimeout, check_deadline
from .native_output import solver_stdout_to_stderr

#: The most candidate groups the program takes (2^6 - 1 = 63 for six different devices).
MAX_GROUPS = 128


def device_groups(problem: PlacementProblem) -> list[tuple[int, ...]]:
    """The candidate replica groups, singletons first.

    Within a class of identical devices only consecutive runs are taken: any set of disjoint
    groups can be renumbered, class by class, so that each group's members of that class are
    consecutive, without changing a load. A group is then one run (or none) from each class:
    ``prod (k (k + 1) / 2 + 1) - 1`` groups for classes of ``k`` devices, ``2^D - 1`` when all
    devices differ.
    """
    per_class = [[()] + [tuple(members[i:j]) for i in range(len(members))
                         for j in range(i + 1, len(members) + 1)]
                 for members in problem.identical_devices()]
    count = math.prod(len(runs) for runs in per_class) - 1
    if count > MAX_GROUPS:
        raise UnknownMethodError(
            f"diviml-replicas would weigh {count} device groups on {problem.num_devices} devices "
            f"(at most {MAX_GROUPS}: about 6 different devices, or more identical ones); use "
            "'diviml-milp' (no replicas)"
        )
    groups = {tuple(sorted(sum(runs, ()))) for runs in itertools.product(*per_class)} - {()}
    return sorted(groups, key=lambda group: (len(group), group))


def group_choices(problem: PlacementProblem, groups) -> dict[int, list[int]]:
    """For each operator, the indices of the groups it may run on: every member allows it (and
    its colour class) and the smallest member's memory holds it. Time O(n D G) in NumPy, and a
    Python step per distinct answer and per operator."""
    allowed = feasible_devices(problem)
    limit = problem.capacity * (1 + MEMORY_TOLERANCE)
    member = np.zeros((len(groups), problem.num_devices), dtype=bool)
    for g, group in enumerate(groups):
        member[g, list(group)] = True
    smallest = np.array([limit[list(group)].min() for group in groups])
    fits = ((~allowed).astype(np.int64) @ member.T.astype(np.int64) == 0) \
        & (problem.memory[:, None] <= smallest[None, :])
    rows, inverse = np.unique(fits, axis=0, return_inverse=True)
    lists = [np.flatnonzero(row).tolist() for row in rows]
    return {u: lists[i] for u, i in enumerate(inverse.reshape(-1).tolist())}


def group_loads(problem: PlacementProblem, groups, group_of: np.ndarray) -> float:
    """The evaluator's bottleneck load of ``group_of`` (a group index per operator)."""
    return evaluate(problem, as_placement(groups, group_of)).max_load


def as_placement(groups, group_of: np.ndarray, value: float = math.inf,
                 lower_bound: float = 0.0, stats: dict | None = None) -> Placement:
    """A group index per operator as a placement: each on its group's first device, the groups
    of several devices as replicas."""
    return Placement(
        device_of=np.array([groups[g][0] for g in group_of], dtype=np.int64),
        replicas=sorted({groups[g] for g in group_of if len(groups[g]) > 1}),
        objective="throughput", value=value, lower_bound=lower_bound, method="diviml-replicas",
        stats=stats or {},
    )


def data_parallel_start(problem: PlacementProblem, groups, choices) -> np.ndarray | None:
    """The whole model on the one group that serves it fastest (pure data parallelism), as a
    group index per operator; ``None`` if no group may hold every operator (memory, support)."""
    limit = problem.capacity * (1 + MEMORY_TOLERANCE)
    shared = [g for g in set.intersection(*(set(c) for c in choices.values()))
              if problem.memory.sum() <= limit[list(groups[g])].min()]
    if not shared:
        return None
    best = min(shared, key=lambda g: (group_loads(problem, groups, np.full(problem.num_ops, g)), g))
    return np.full(problem.num_ops, best)


def replicas_milp(problem: PlacementProblem, groups, choices, deadline: float,
                  hint: np.ndarray | None, known_bound: float, progress=None):
    """Build and solve the program of the module docstring with CP-SAT by ``deadline``
    (``time.perf_counter()`` seconds); returns ``(status, group_of, bound, stats)``,
    ``group_of`` ``None`` when no solution was found. Raises :class:`~.ip.BuildTimeout` if
    building alone passes the deadline.

    Times are scaled to integers as in :mod:`~tvm_place.solvers.diviml` (rounded down, so the
    program's optimum is at most the real one, times the scale, plus the one unit that rounding
    ``T`` up to an integer adds); the bound returned allows for both."""
    from ortools.sat.python import cp_model

    compute, transfer, memory = problem.compute_time, problem.transfer_time, problem.memory
    ops = range(problem.num_ops)
    reference = (group_loads(problem, groups, hint) if hint is not None
                 else sum(max(compute[u, groups[g][0]] for g in choices[u]) for u in ops))
    scale = TIME_UNITS / reference if reference > 0 else 1.0
    time_units = np.floor(compute * scale), np.floor(transfer * scale)

    model = cp_model.CpModel()
    z = [model.new_bool_var(f"z[{group}]") for group in groups]
    x = {(u, g): model.new_bool_var(f"x[{u},{groups[g]}]") for u in ops for g in choices[u]}
    members: list[list[int]] = [[] for _ in groups]
    for u in ops:
        model.add_exactly_one(x[u, g] for g in choices[u])
        for g in choices[u]:
            members[g].append(u)
            model.add_implication(x[u, g], z[g])
    for k in range(problem.num_devices):
        model.add_at_most_one(z[g] for g, group in enumerate(groups) if k in group)
    for colour in problem.colour_classes:
        for u in colour[1:]:
            for g in set(choices[u]) | set(choices[colour[0]]):
                model.add(x.get((u, g), 0) == x.get((colour[0], g), 0))
    check_deadline(deadline, "replicas")

    # s[u, S] / r[u, S]: the value of u leaves / enters S, forced by each edge's two ends.
    sends: list[dict] = [{} for _ in groups]
    receives: list[dict] = [{} for _ in groups]
    for u, v in problem.graph.edges.tolist():
        for g in set(choices[u]) | set(choices[v]):
            here, there = x.get((u, g)), x.get((v, g))
            if here is not None:
                if u not in sends[g]:
                    sends[g][u] = model.new_bool_var(f"s[{u},{groups[g]}]")
                model.add_bool_or(sends[g][u], here.Not(), *([] if there is None else [there]))
            if there is not None:
                if u not in receives[g]:
                    receives[g][u] = model.new_bool_var(f"r[{u},{groups[g]}]")
                model.add_bool_or(receives[g][u], there.Not(), *([] if here is None else [here]))
    check_deadline(deadline, "replicas")

    horizon = 2 * TIME_UNITS * max(1, problem.num_ops)
    T = model.new_int_var(max(0, _floor(known_bound, scale) - 1), horizon, "T")
    compute_units, transfer_units = time_units
    for g, group in enumerate(groups):
        if not members[g]:
            continue
        room = problem.capacity[list(group)].min()
        if math.isfinite(room) and memory[members[g]].sum() > room:
            mem_scale = MEMORY_UNITS / memory[members[g]].sum()
            model.add(cp_model.LinearExpr.weighted_sum(
                [x[u, g] for u in members[g]],
                [int(round(memory[u] * mem_scale)) for u in members[g]])
                <= math.floor(room * (1 + MEMORY_TOLERANCE / 2) * mem_scale))
        variables = ([x[u, g] for u in members[g]] + list(sends[g].values())
                     + list(receives[g].values()))
        for k in group:
            weights = (compute_units[members[g], k].astype(np.int64).tolist()
                       + transfer_units[list(sends[g]), k].astype(np.int64).tolist()
                       + transfer_units[list(receives[g]), k].astype(np.int64).tolist())
            model.add(len(group) * T >= cp_model.LinearExpr.weighted_sum(variables, weights))
        check_deadline(deadline, "replicas")
    model.minimize(T)
    if hint is not None:
        for (u, g), var in x.items():
            model.add_hint(var, int(hint[u] == g))

    time_limit = deadline - time.perf_counter()
    solver, callback = _solver(time_limit, progress, "diviml-replicas", scale, problem.num_ops)
    started = time.perf_counter()
    with solver_stdout_to_stderr():
        code = solver.solve(model, callback)
    status = _status(solver, code)
    stats = {"solver_seconds": time.perf_counter() - started, "groups": len(groups),
             "booleans": len(x) + len(z), "scale": scale}
    if status == "infeasible":
        return status, None, math.inf, stats
    bound = max(0.0, (solver.best_objective_bound - 1) / scale) if status != "unknown" else 0.0
    if status not in ("optimal", "feasible"):
        return "time_limit", None, bound, stats
    group_of = np.array([next(g for g in choices[u] if solver.value(x[u, g])) for u in ops])
    return ("optimal" if status == "optimal" else "time_limit"), group_of, bound, stats


def solve(problem: PlacementProblem, objective: str, time_limit: float, progress=None) -> Placement:
    """Place ``problem`` for throughput with replica groups, optimally within ``time_limit``.

    On the time limit the best placement found (or the data-parallel warm start) is returned with
    the best bound proven; ``stats["status"]`` says ``"optimal"`` or ``"time_limit"``.
    """
    require_objective("diviml-replicas", objective, ("throughput",),
                      "replicas do not shorten one input's latency")
    started = time.perf_counter()
    report = reporter(progress)
    groups = device_groups(problem)
    choices = group_choices(problem, groups)
    stranded = [u for u, c in choices.items() if not c]
    if stranded:
        raise InfeasibleError(
            f"operator {problem.graph.names[stranded[0]]!r} fits on no device under its memory "
            f"capacity; raise a capacity or add a device"
        )
    known = bounds.lower_bound(problem, "throughput", replicas=True)
    single = {group[0]: g for g, group in enumerate(groups) if len(group) == 1}
    starts = [data_parallel_start(problem, groups, choices)]
    listed = warm_start(problem, min(WARM_START_SECONDS, WARM_START_SHARE * time_limit),
                        WARM_START_WITHIN * time_limit)
    if listed is not None:
        starts.append(np.array([single[d] for d in listed.device_of]))
    starts = [c for c in starts if c is not None]
    warm = min(starts, key=lambda c: group_loads(problem, groups, c)) if starts else None
    report(f"diviml-replicas: {len(groups)} groups, data-parallel start "
           f"{'none' if warm is None else f'{group_loads(problem, groups, warm):.6g}'}", 0.0)
    deadline = started + time_limit - SAFETY_SHARE * time_limit - SAFETY_SECONDS
    try:
        # A variable per (operator, group) and constraints per edge: skip what cannot be built.
        items = budget.model_items(problem) * max(1, len(groups)) // problem.num_devices
        if not budget.buildable(items, deadline - time.perf_counter()):
            raise BuildTimeout("the program is too large to build in the time left")
        status, group_of, bound, stats = replicas_milp(problem, groups, choices, deadline, warm,
                                                       known, progress)
    except BuildTimeout:
        status, group_of, bound, stats = "time_limit", None, 0.0, {"built": False}
    if status == "infeasible":
        raise InfeasibleError(
            f"no placement of {problem.num_ops} operators on {problem.device_names}, with or "
            "without replicas, fits the memory capacities, pins and colour classes (proven by the "
            "integer program); raise capacities, add devices, or relax pins and colour classes"
        )
    candidates = [c for c in (group_of, warm) if c is not None]
    if not candidates:
        raise InfeasibleError(
            f"no feasible placement was found within {time_limit:g} s; raise the time limit"
        )
    best = min(candidates, key=lambda c: group_loads(problem, groups, c))
    value = group_loads(problem, groups, best)
    report(f"diviml-replicas: throughput {value:.6g}, bound {max(bound, known):.6g}", 1.0)
    return as_placement(
        groups, best, value=value, lower_bound=min(value, max(bound, known)),
        stats={"status": status, "optimal": status == "optimal",
               "solution_from": "program" if best is group_of else "warm_start",
               "seconds": time.perf_counter() - started, **stats},
    )
