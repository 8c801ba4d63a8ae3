"""Exact makespan program for the latency objective (CP-SAT), after Tarnawski et al.'s latency IP.

Reference: J. Tarnawski, A. Phanishayee, N. Devanur, D. Mahajan, F. Nina Paravecino, "Efficient
Algorithms for Device Placement of DNN Graph Operators", NeurIPS 2020 (arXiv 2006.16423), the
latency integer program (its ``q`` subgraphs per accelerator are from their Appendix A).

Their program cuts each accelerator's work into up to ``q`` contiguous subgraphs run one after
another; a subgraph starts once all of its inputs are ready and runs for its compute plus all of its
transfers in and out; CPU nodes run on unboundedly many cores in parallel. That is *not* the model
of :func:`tvm_place.evaluate.evaluate` (each device, CPUs included, runs its operators one at a
time; a value crossing from ``d`` to ``e`` arrives ``t[u, d] + t[u, e]`` after it was produced;
transfers delay the consumer but occupy no device), so a q-subgraph program would neither reach that
model's optimum nor report its value. This module is an exact disjunctive program for the
evaluator's model instead; it keeps the paper's variables where they carry over (``x`` placement,
``Latency``, ``TotalLatency``) and its big-M precedence rows become CP-SAT enforcement literals.

Notation: ``x[u, d]`` places ``u`` on ``d``; ``Start[u]``, ``Latency[u]`` are ``u``'s start and
finish (``Latency`` is the paper's name); ``Cross[u, v]`` says edge ``(u, v)`` joins two devices;
``TotalLatency`` is the makespan. With ``p`` compute times, ``t`` transfer times::

    minimise   TotalLatency
    subject to sum_d x[u, d] = 1                                    every operator u
               Latency[u] = Start[u] + sum_d p[u, d] x[u, d]        every operator u
               NoOverlap({[Start[u], Latency[u]) : x[u, d]})        every device d
               Start[v] >= Latency[u]                               every edge (u, v)
               Cross[u, v] >= x[u, d] - x[v, d]                     every edge (u, v), device d
               Cross[u, v] => Start[v] >= Latency[u]
                              + sum_d t[u, d] x[u, d] + sum_e t[u, e] x[v, e]   every edge
               TotalLatency >= Latency[u]                           every sink u
               sum_u m[u] x[u, d] <= cap[d]; colour classes share x; x = 0 where not allowed

The no-overlap constraint orders each device's intervals; CP-SAT's intervals of size zero count
in it too, so a zero-time operator cannot sit inside another's run, as in the evaluator.

Exactness. Costs are scaled by ``S`` and rounded *down* to integers (CP-SAT is integral). For a
fixed placement and order the evaluator's recurrence is the earliest schedule satisfying these
rows, and any schedule satisfying them, sorted by start (then finish, then topological position),
is an order whose earliest schedule starts no operator later; so the program's optimum is the
floored problem's optimum ``F*``. Flooring only shortens schedules, so ``F* <= S * T*`` and CP-SAT's
bound divided by ``S`` is a valid lower bound on the true optimum ``T*``; the schedule returned
is re-timed by the evaluator, and exceeds ``T*`` by less than ``3 n / S`` (each of at most ``3 n``
cost terms on a chain lost under ``1 / S``). ``S`` maps the horizon to :data:`RESOLUTION`.

Warm start and fallback: HEFT (:mod:`tvm_place.solvers.heft`) runs first for a small share of the
time; its placement and order, re-timed with the integer costs, are the solution hint, and the
answer if CP-SAT finds no schedule within the time limit. ``initial`` (a ``device_of`` array or a
:class:`Placement`, its ``order`` used if set) replaces HEFT as the hint.

Equal optima: where CP-SAT proves its answer optimal, the schedule returned is the first one of
makespan at most that optimum that a single worker with a fixed seed finds
(:func:`_canonical_schedule`), so the plan does not depend on how the parallel workers raced.

Size: ``n * D`` booleans and optional intervals, ``m`` crossing literals, ``m * (D + 2)`` rows.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, evaluate, validate
from ..graph import Placement, PlacementProblem
from . import bounds, budget
from .baselines import cheap_incumbent, heft_or_greedy
from .common import reporter, require_objective
from .grouping import feasible_devices
from .ip import BuildTimeout, check_deadline, colocation_units

#: The horizon (an upper bound on the makespan) is scaled to this many integer time units.
RESOLUTION = 10**9

#: Share of the time limit HEFT gets for the warm start, and its cap in seconds.
HEFT_SHARE, HEFT_SECONDS = 0.1, 2.0
#: HEFT is the warm start only where its passes fit in this share of the limit (else greedy).
HEFT_WITHIN = 0.4

#: Memory is scaled so each capacity is this many units (rounded so no fit is lost to rounding
#: beyond the evaluator's tolerance; see :func:`_memory_units`).
MEMORY_UNITS = 10**12

#: CP-SAT workers: all cores, at most this many.
MAX_WORKERS = 8

#: The canonical schedule's search (:func:`_canonical_schedule`) gets this many times the
#: parallel solve's seconds, and at least this many seconds.
CANONICAL_SHARE, CANONICAL_SECONDS = 2.0, 1.0

#: Seconds kept back from the solver's limit for reading the solution.
_FINISH_RESERVE = 0.05


def integer_schedule(problem, device_of, order, duration, transfer):
    """The evaluator's recurrence over integer costs: ``(start, finish)`` lists of ints."""
    start = [0] * problem.num_ops
    finish = [0] * problem.num_ops
    free = [0] * problem.num_devices
    for u in order:
        d = device_of[u]
        ready = free[d]
        for w in problem.graph.predecessors[u]:
            e = device_of[w]
            arrival = finish[w] if e == d else finish[w] + transfer[w][e] + transfer[w][d]
            ready = max(ready, arrival)
        start[u] = ready
        finish[u] = free[d] = ready + duration[u][d]
    return start, finish


def _memory_units(problem: PlacementProblem, allowed: np.ndarray):
    """Integer memory and capacities for CP-SAT: ``(memory[u], capacity[d] or None)``.

    Sizes are rounded up and capacities down after scaling capacity ``d`` to ``MEMORY_UNITS``, but
    a capacity is given the evaluator's relative slack first, so a placement the evaluator accepts
    is lost only if it overflows by more than ``n / MEMORY_UNITS`` of a capacity minus that slack.
    """
    memory, capacity = [], []
    for d, cap in enumerate(problem.capacity.tolist()):
        total = float(problem.memory[allowed[:, d]].sum())
        if not math.isfinite(cap) or total <= cap:
            capacity.append(None)
            memory.append(None)
            continue
        scale = MEMORY_UNITS / max(cap, 1e-300)
        memory.append([math.ceil(m * scale) for m in problem.memory.tolist()])
        capacity.append(math.floor(cap * (1 + MEMORY_TOLERANCE) * scale))
    return memory, capacity


def build_makespan_program(
    problem: PlacementProblem, scale: float, horizon: int, deadline: float | None = None
):
    """The makespan program of the module docstring, costs scaled by ``scale`` and floored.

    Returns ``(model, variables)``; ``variables`` maps the paper's names to CP-SAT variables.
    Raises :class:`~tvm_place.solvers.ip.BuildTimeout` if still building at ``deadline``.
    """
    from ortools.sat.python import cp_model

    n, num_devices = problem.num_ops, problem.num_devices
    allowed = feasible_devices(problem)
    unit_of, units = colocation_units(problem)
    devices = range(num_devices)
    p = np.floor(np.where(allowed, problem.compute_time, 0.0) * scale).astype(np.int64).tolist()
    t = np.floor(problem.transfer_time * scale).astype(np.int64).tolist()
    model = cp_model.CpModel()
    model.name = f"makespan[{problem.name}]"

    # x[u, d]: operator u runs on device d (one literal per colour class and device).
    unit_x = {
        (g, d): model.new_bool_var(f"x[{group[0]},{d}]")
        for g, group in enumerate(units)
        for d in devices
        if allowed[group[0], d]
    }
    x = {(u, d): unit_x[unit_of[u], d] for u in range(n) for d in devices if allowed[u, d]}
    for g, group in enumerate(units):
        model.add_exactly_one(unit_x[g, d] for d in devices if (g, d) in unit_x)

    # Start[u], Latency[u]; one optional interval per allowed device; no overlap on a device.
    start = [model.new_int_var(0, horizon, f"Start[{u}]") for u in range(n)]
    latency = [model.new_int_var(0, horizon, f"Latency[{u}]") for u in range(n)]
    runs_on: list[list] = [[] for _ in devices]
    for u in range(n):
        on = [d for d in devices if (u, d) in x]
        model.add(latency[u] == start[u] + sum(p[u][d] * x[u, d] for d in on))
        for d in on:
            runs_on[d].append(model.new_optional_fixed_size_interval_var(
                start[u], p[u][d], x[u, d], f"run[{u},{d}]"))
    for d in devices:
        model.add_no_overlap(runs_on[d])

    # Precedence, and the transfer delay when an edge joins two devices.
    cross = {}
    for i, (u, v) in enumerate(problem.graph.edges.tolist()):
        if i % 256 == 0:
            check_deadline(deadline, "makespan")
        model.add(start[v] >= latency[u])
        if unit_of[u] == unit_of[v] or not any(t[u]):
            continue
        cross[u, v] = model.new_bool_var(f"Cross[{u},{v}]")
        for d in devices:
            if (u, d) in x:  # x[u, d] and not x[v, d] => Cross[u, v]
                model.add_bool_or([~x[u, d], cross[u, v]] + ([x[v, d]] if (v, d) in x else []))
        send = sum(t[u][d] * x[u, d] for d in devices if (u, d) in x)
        receive = sum(t[u][e] * x[v, e] for e in devices if (v, e) in x)
        model.add(start[v] >= latency[u] + send + receive).only_enforce_if(cross[u, v])

    # Memory capacities.
    memory, capacity = _memory_units(problem, allowed)
    for d in devices:
        if capacity[d] is not None:
            model.add(sum(memory[d][u] * x[u, d] for u in range(n) if (u, d) in x)
                      <= capacity[d])

    total_latency = model.new_int_var(0, horizon, "TotalLatency")
    for u in range(n):
        if not problem.graph.successors[u]:
            model.add(total_latency >= latency[u])
    model.minimize(total_latency)
    variables = {"x": x, "Start": start, "Latency": latency, "Cross": cross,
                 "TotalLatency": total_latency, "p": p, "t": t}
    return model, variables


def _read_schedule(problem: PlacementProblem, solver, variables) -> tuple[np.ndarray, np.ndarray]:
    """The placement and execution order of a CP-SAT solution: operators sorted by start, then
    finish, then topological position."""
    x, start, finish = variables["x"], variables["Start"], variables["Latency"]
    device_of = np.array([
        next(d for d in range(problem.num_devices) if (u, d) in x and solver.value(x[u, d]))
        for u in range(problem.num_ops)
    ], dtype=np.int64)
    position = np.empty(problem.num_ops, dtype=np.int64)
    position[problem.graph.topological_order] = np.arange(problem.num_ops)
    order = np.array(sorted(range(problem.num_ops), key=lambda u: (
        solver.value(start[u]), solver.value(finish[u]), position[u])), dtype=np.int64)
    return device_of, order


def _canonical_schedule(problem, model, variables, optimum: int, deadline: float,
                        solve_seconds: float):
    """One optimal schedule whatever the parallel search returned, or ``None`` if not found in
    time: the first schedule of makespan at most ``optimum`` (the proven integer optimum) that a
    single CP-SAT worker with a fixed seed finds, no objective.

    Why: where several placements or orders are optimal, which one the parallel workers return
    depends on how their threads race, so the same problem gave another plan from run to run
    (the saved BERT/T4 problem of tests/problems: 3 orders in 8 solves), which breaks golden plans
    and byte-identical builds. A single worker is deterministic but far slower to *prove* an
    optimum; *finding* a schedule at a proven value is the cheap part (measured on that problem
    and random 14- and 24-operator DAGs: at most the parallel solve's time). It gets at most twice
    the parallel solve's time (1 s at least) within the limit; past that the parallel answer
    stands, optimal but not canonical (``stats["canonical"]`` is False).
    """
    from ortools.sat.python import cp_model

    seconds = min(deadline - time.perf_counter() - _FINISH_RESERVE,
                  max(CANONICAL_SECONDS, CANONICAL_SHARE * solve_seconds))
    if seconds <= 0:
        return None
    model.add(variables["TotalLatency"] <= optimum)
    model.clear_objective()
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_time_in_seconds = seconds
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return _read_schedule(problem, solver, variables)


def _add_hint(model, variables, problem, device_of, order) -> None:
    """Hint CP-SAT with ``device_of`` run in ``order``, timed with the program's integer costs."""
    p, t = variables["p"], variables["t"]
    start, finish = integer_schedule(problem, device_of, order, p, t)
    placed = {var.index: (var, int(device_of[u] == d)) for (u, d), var in variables["x"].items()}
    for var, value in placed.values():  # colour classes share their literals
        model.add_hint(var, value)
    for u in range(problem.num_ops):
        model.add_hint(variables["Start"][u], start[u])
        model.add_hint(variables["Latency"][u], finish[u])
    for (u, v), var in variables["Cross"].items():
        model.add_hint(var, int(device_of[u] != device_of[v]))
    model.add_hint(variables["TotalLatency"], max(finish))


def _horizon(problem: PlacementProblem, allowed: np.ndarray, known: float | None) -> float:
    """An upper bound on the optimal makespan: a known schedule's, or every operator one after
    another at its slowest allowed time, each after its slowest possible input transfer."""
    slowest = np.where(allowed, problem.compute_time, 0.0).max(axis=1)
    serial = float(slowest.sum() + 2 * problem.transfer_time.max(axis=1).sum())
    return min(serial, known) if known is not None else serial


def _heft_start(problem, seconds: float, within: float = math.inf):
    """HEFT's placement (greedy's where HEFT's passes would not fit in ``within`` seconds), or
    ``None``."""
    return heft_or_greedy(problem, seconds, within)


def solve(
    problem: PlacementProblem,
    objective: str,
    time_limit: float,
    progress: Callable[[str, float | None], None] | None = None,
    initial: np.ndarray | Placement | None = None,
) -> Placement:
    """Minimise the makespan over all placements and execution orders (module docstring)."""
    require_objective("latency-ip", objective, ("latency",), "use method 'ip' for throughput")
    started = time.perf_counter()
    deadline = started + max(0.0, time_limit)
    from ortools.sat.python import cp_model

    report = reporter(progress)

    allowed = feasible_devices(problem)  # raises InfeasibleError for an operator with nowhere to go
    stats: dict = {"solver": "cp-sat", "search_space": "all"}

    # Warm start: the caller's placement, else HEFT's.
    if isinstance(initial, Placement):
        initial_order = initial.order
        initial = initial.device_of
    else:
        initial_order = None
    if initial is not None:
        initial = np.asarray(initial, dtype=np.int64)
        if initial_order is None:
            initial_order = problem.graph.topological_order
        validate(problem, initial, initial_order)
        warm = (initial, np.asarray(initial_order), "initial")
    else:
        heft_seconds = min(HEFT_SECONDS, HEFT_SHARE * max(0.0, time_limit))
        placement = _heft_start(problem, heft_seconds, HEFT_WITHIN * time_limit)
        warm = None if placement is None else (placement.device_of, placement.order,
                                               placement.method)
    warm_latency = None
    if warm is not None:
        warm_latency = evaluate(problem, warm[0], warm[1]).latency
        stats.update(warm_start=warm[2], warm_start_latency=warm_latency)
        report(f"latency-ip: warm start ({warm[2]}) latency {warm_latency:.6g}", 0.0)

    # The horizon bounds every time variable; the scale maps it to RESOLUTION units.
    horizon = _horizon(problem, allowed, warm_latency)
    scale = RESOLUTION / horizon if horizon > 0 else 1.0
    solver = cp_model.CpSolver()
    try:
        if not budget.buildable(budget.model_items(problem), deadline - time.perf_counter()):
            raise BuildTimeout("the program is too large to build in the time left")
        model, variables = build_makespan_program(
            problem, scale, RESOLUTION + 3 * problem.num_ops, deadline)
        if warm is not None:
            _add_hint(model, variables, problem, warm[0], warm[1])
        stats.update(scale=scale, build_seconds=time.perf_counter() - started)
        solver.parameters.max_time_in_seconds = max(
            0.0, deadline - time.perf_counter() - _FINISH_RESERVE)
    except BuildTimeout as stop:
        stats["stopped"] = str(stop)
        solver.parameters.max_time_in_seconds = 0.0
    solver.parameters.num_workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))

    class _Progress(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            elapsed = time.perf_counter() - started
            report(f"latency-ip: makespan {self.objective_value / scale:.6g}, "
                   f"bound {self.best_objective_bound / scale:.6g}",
                   min(1.0, elapsed / time_limit) if time_limit > 0 else None)

    status, solved = cp_model.UNKNOWN, False
    if solver.parameters.max_time_in_seconds > 0:
        status = solver.solve(model, _Progress() if progress is not None else None)
        solved = True
    if status in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
        if status == cp_model.MODEL_INVALID:
            raise AssertionError(f"latency-ip built an invalid model: {model.validate()}")
        raise InfeasibleError(
            f"no placement of the {problem.num_ops} operators on {problem.device_names} fits the "
            f"memory capacities ({problem.memory.sum():.4g} bytes in all, capacities "
            f"{problem.capacity.tolist()}) under the pins and colour classes; add devices, raise "
            "capacities or drop pins"
        )
    stats.update(status=solver.status_name(status).lower() if solved else "time_limit",
                 nodes=solver.num_branches if solved else 0,
                 conflicts=solver.num_conflicts if solved else 0)

    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE) and warm is None:
        cheap = cheap_incumbent(problem, "latency")  # HEFT found none either
        if cheap is not None:
            warm, warm_latency = (cheap.device_of, cheap.order, "greedy"), cheap.value
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = solver.best_objective_bound / scale
        optimal = status == cp_model.OPTIMAL
        device_of, order = _read_schedule(problem, solver, variables)
        if optimal:
            canonical = _canonical_schedule(problem, model, variables, int(solver.objective_value),
                                            deadline, time.perf_counter() - started)
            stats["canonical"] = canonical is not None
            if canonical is not None:
                device_of, order = canonical
    elif warm is not None:
        device_of, order, stats["fallback"] = warm[0], warm[1], warm[2]
        bound = solver.best_objective_bound / scale if solved else -math.inf
        optimal = False
    else:
        raise InfeasibleError(
            f"latency-ip found no placement within {time_limit:g} s, nor did HEFT; the memory "
            "capacities and pins may leave none: raise time_limit, capacities, or drop pins"
        )
    value = evaluate(problem, device_of, order).latency
    if warm is not None and warm_latency < value:
        device_of, order, value = warm[0], warm[1], warm_latency
        stats["returned"] = f"warm start ({warm[2]}), better than the solver's"
    if not math.isfinite(bound) or bound < 0:
        bound = 0.0
    lower_bound = min(value, max(bound, bounds.lower_bound(problem, "latency")))
    stats.update(optimal=optimal, seconds=time.perf_counter() - started)
    report(f"latency-ip: latency {value:.6g}, bound {lower_bound:.6g}", 1.0)
    return Placement(device_of=device_of, objective="latency", value=value, lower_bound=lower_bound,
                     method="latency-ip", order=order, stats=stats)
