"""Integer program for the throughput (max-load) objective over all placements, contiguous or not.

Reference: J. Tarnawski, A. Phanishayee, N. Devanur, D. Mahajan, F. Nina Paravecino, "Efficient
Algorithms for Device Placement of DNN Graph Operators", NeurIPS 2020 (arXiv 2006.16423), the
integer program for max-load minimisation (their "noncontig" variant: no contiguity constraints).

Notation follows the paper: ``x[u, d]`` places operator ``u`` on device ``d``; ``CommOut[u, d]``
says that ``u``'s output leaves device ``d``; ``CommIn[u, d]`` that it is received on ``d``;
``Load[d]`` is device ``d``'s time per input and ``MaxLoad`` their maximum. With ``c`` the compute
times, ``t`` the transfer times, ``m`` the memory and ``cap`` the capacities (see
:mod:`tvm_place.graph`)::

    minimise   MaxLoad
    subject to sum_d x[u, d] = 1                                    every operator u
               CommOut[u, d] >= x[u, d] - x[v, d]                   every edge (u, v), device d
               CommIn[u, d]  >= x[v, d] - x[u, d]                   every edge (u, v), device d
               Load[d] = sum_u c[u, d] x[u, d]
                       + sum_u t[u, d] (CommIn[u, d] + CommOut[u, d])   every device d
               Load[d] <= MaxLoad                                   every device d
               sum_u m[u] x[u, d] <= cap[d]                         every capped device d
               x[u, d] = x[w, d]                                    u, w in one colour class
               x[u, d] binary, x[u, d] = 0 where u may not run on d (support, pins)
               0 <= CommIn, CommOut <= 1

Where it departs from the paper's program: transfer times are per (value, device) instead of one
``cost(u)`` that accelerators pay and CPUs do not (the paper's case is ``t[u, cpu] = 0``); every
device may have a memory capacity and any operator may be pinned; members of a colour class share
one variable per device instead of equality constraints; ``x``, ``CommIn`` and ``CommOut`` exist
only where they can be non-zero (allowed devices, positive transfer times).

Large graphs: past :data:`PER_EDGE_ROWS` per-edge rows, building them alone would eat short time
limits, so each value and device gets one aggregated row instead, with ``C(u)`` the consumers of
``u`` and ``R(u, d)`` those that may run on ``d``, and ``CommIn``/``CommOut`` binary::

    |C(u)| CommOut[u, d] >= |C(u)| x[u, d] - sum_{v in C(u)} x[v, d]
    |R(u, d)| CommIn[u, d] >= sum_{v in R(u, d)} x[v, d] - |R(u, d)| x[u, d]

Same integer points, weaker relaxation.

Exactness: at an integral ``x``, ``CommOut[u, d]`` can be 0 only if every consumer of ``u`` runs on
``d`` or ``u`` does not, and ``CommIn[u, d]`` only if no consumer runs on ``d`` or ``u`` does, so
``Load[d]`` is at least the load :func:`tvm_place.evaluate.evaluate` charges, with equality at the
smallest feasible ``CommIn``/``CommOut``: the optimum of the program is the optimum over all
placements. The value returned is always the evaluator's, recomputed from the placement found.

Solver, chosen by measurement on ``throughput-inputs/LayerGraphs/bert24_inference`` (32 nodes, six
accelerators and a CPU, optimum 17.71472) on this project's shared 2-core machine. Time to prove
optimality: HiGHS through MathOpt 5-14 s (random seeds 0-4; 9-14 s for this module); CP-SAT on
the same program with costs scaled to integers and rounded down (so its bound stays valid) 25-85 s
(2 workers, seeds 0-2; 1 worker 35 s; 4 workers 114 s; 8 workers over 200 s); SCIP through
``pywraplp`` had not closed the gap (bound 17.53) after 300 s. The usual symmetry breaking for
identical devices (the lowest operator on each increases with the device index) slowed both
HiGHS (65 s) and CP-SAT (90 s), so the program has none. HiGHS runs with zero gap tolerances.

Memory: capacity rows are scaled to a right-hand side of 1, and HiGHS accepts rows violated by its
feasibility tolerance (1e-6), looser than the evaluator's ``MEMORY_TOLERANCE``; a placement that
overflows by that much is solved once more with the rows tightened by :data:`_MEMORY_MARGIN`.
(Tightening HiGHS's own tolerance instead makes it print debug lines on standard output.)

Warm start: ``initial`` is passed to HiGHS as a solution hint, and is the answer if the solver finds
nothing better. Measured on bert24, a hint from the contiguous DP (17.7899), or an objective
cutoff at that value, *slowed* HiGHS from 5-14 s to over 60-100 s without a proof (its cold search
restarts at the root and then closes the tree; with an incumbent it does not); so nothing passes
one by default.

Time limit: model building counts against ``time_limit`` (and stops at it); the solver gets what
remains. If it stops without any placement, the answer falls back to the warm start, else every
operator on the single best device that can hold them all, else the DP's contiguous split, else
HEFT's memory-aware greedy placement; the bound reported is still the solver's where it has one
(``Placement.lower_bound``, never above the value returned).

Size: ``n * D`` binaries, at most ``2 * n * D`` continuous variables and ``2 * m * D + n + 3 D``
rows for ``n`` operators, ``m`` edges and ``D`` devices.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, evaluate, validate
from ..graph import Placement, PlacementProblem
from . import bounds, budget
from .baselines import cheap_incumbent
from .common import reporter, require_objective, single_device
from .grouping import colocation_groups, feasible_devices
from .native_output import solver_stdout_to_stderr

#: Above this many per-edge CommIn/CommOut rows (``2 * m * D``) the program aggregates them into
#: one row per value and device (binary CommIn/CommOut): exact too, a weaker relaxation, but
#: built in a fraction of the time (MathOpt adds about 30-60 us per row on this machine).
PER_EDGE_ROWS = 12_000

#: The least time the DP fallback gets when the solver found no placement.
FALLBACK_SECONDS = 0.5

#: Seconds kept back from the solver's limit for reading the solution and the fallbacks.
_FINISH_RESERVE = 0.05

#: Capacity rows are scaled to a right-hand side of 1; HiGHS accepts rows violated by up to its
#: feasibility tolerance (1e-6), more than the evaluator's ``MEMORY_TOLERANCE``. A placement that
#: overflows by that much is re-solved once with the rows tightened by this margin.
_MEMORY_MARGIN = 2e-6


@dataclass
class MaxLoadProgram:
    """The integer program of the module docstring, built with MathOpt, with its variables."""

    model: object
    x: dict[tuple[int, int], object]
    comm_in: dict[tuple[int, int], object]
    comm_out: dict[tuple[int, int], object]
    load: list[object]
    max_load: object
    allowed: np.ndarray


def colocation_units(problem: PlacementProblem) -> tuple[list[int], list[list[int]]]:
    """Merge overlapping colour classes: ``(unit of each operator, members of each unit)``."""
    units = colocation_groups(problem)
    unit_of = [0] * problem.num_ops
    for g, group in enumerate(units):
        for u in group:
            unit_of[u] = g
    return unit_of, units


class BuildTimeout(Exception):
    """Building the program passed the deadline; the caller falls back to a heuristic."""


def check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise BuildTimeout(f"building the {what} program used up the time limit")


def build_max_load_program(
    problem: PlacementProblem, memory_margin: float = 0.0, deadline: float | None = None
) -> MaxLoadProgram:
    """The max-load integer program (module docstring) for ``problem``.

    Capacity rows read ``sum_u m[u] / cap[d] x[u, d] <= 1 - memory_margin``. Raises
    :class:`BuildTimeout` if building is still under way at ``deadline``.
    """
    from ortools.math_opt.python import mathopt

    n, num_devices = problem.num_ops, problem.num_devices
    allowed = feasible_devices(problem)
    compute = np.where(allowed, problem.compute_time, 0.0).tolist()
    transfer = problem.transfer_time.tolist()
    memory = problem.memory.tolist()
    capacity = problem.capacity
    successors = problem.graph.successors
    unit_of, units = colocation_units(problem)
    devices = range(num_devices)
    model = mathopt.Model(name=f"max_load[{problem.name}]")

    # x[u, d]: operator u runs on device d (one variable per colour class and device).
    unit_x = {
        (g, d): model.add_binary_variable(name=f"x[{group[0]},{d}]")
        for g, group in enumerate(units)
        for d in devices
        if allowed[group[0], d]
    }
    x = {(u, d): unit_x[unit_of[u], d] for u in range(n) for d in devices if allowed[u, d]}
    for g, group in enumerate(units):
        model.add_linear_constraint(
            mathopt.fast_sum(unit_x[g, d] for d in devices if (g, d) in unit_x) == 1,
            name=f"placed[{group[0]}]",
        )

    # CommOut[u, d], CommIn[u, d]: u's output leaves d, is received on d. One row per edge and
    # device (the paper's rows) while there are few; else one aggregated row per value and device.
    consumers = [[v for v in successors[u] if unit_of[v] != unit_of[u]] for u in range(n)]
    per_edge = 2 * num_devices * sum(map(len, consumers)) <= PER_EDGE_ROWS
    comm_out, comm_in = {}, {}
    for u in range(n):
        check_deadline(deadline, "max-load")
        for d in devices:
            if transfer[u][d] <= 0.0 or not consumers[u]:
                continue
            x_u = x.get((u, d), 0.0)
            if (u, d) in x:
                elsewhere = [1.0 - x.get((v, d), 0.0) for v in consumers[u]]
                if per_edge:
                    comm_out[u, d] = model.add_variable(lb=0.0, ub=1.0, name=f"CommOut[{u},{d}]")
                    for v, away in zip(consumers[u], elsewhere):
                        model.add_linear_constraint(comm_out[u, d] >= x_u + away - 1.0,
                                                    name=f"out[{u},{v},{d}]")
                else:
                    comm_out[u, d] = model.add_binary_variable(name=f"CommOut[{u},{d}]")
                    k = len(elsewhere)
                    model.add_linear_constraint(
                        k * comm_out[u, d] >= k * x_u + mathopt.fast_sum(elsewhere) - k,
                        name=f"out[{u},{d}]")
            receivers = [v for v in consumers[u] if (v, d) in x]
            if receivers and per_edge:
                comm_in[u, d] = model.add_variable(lb=0.0, ub=1.0, name=f"CommIn[{u},{d}]")
                for v in receivers:
                    model.add_linear_constraint(comm_in[u, d] >= x[v, d] - x_u,
                                                name=f"in[{u},{v},{d}]")
            elif receivers:
                comm_in[u, d] = model.add_binary_variable(name=f"CommIn[{u},{d}]")
                k = len(receivers)
                model.add_linear_constraint(
                    k * comm_in[u, d] >= mathopt.fast_sum(x[v, d] for v in receivers) - k * x_u,
                    name=f"in[{u},{d}]")

    # Load[d] <= MaxLoad; memory capacities.
    max_load = model.add_variable(lb=0.0, name="MaxLoad")
    load = []
    for d in devices:
        load_d = model.add_variable(lb=0.0, name=f"Load[{d}]")
        model.add_linear_constraint(
            load_d
            == mathopt.fast_sum(compute[u][d] * x[u, d] for u in range(n) if (u, d) in x)
            + mathopt.fast_sum(transfer[u][d] * var for (u, e), var in comm_in.items() if e == d)
            + mathopt.fast_sum(transfer[u][d] * var for (u, e), var in comm_out.items() if e == d),
            name=f"load[{d}]",
        )
        model.add_linear_constraint(load_d <= max_load, name=f"max_load[{d}]")
        load.append(load_d)
        on_d = [u for u in range(n) if (u, d) in x]
        if math.isfinite(capacity[d]) and sum(memory[u] for u in on_d) > capacity[d]:
            # Scaled to a right-hand side of 1 so the solver's tolerance is relative.
            model.add_linear_constraint(
                mathopt.fast_sum(memory[u] / capacity[d] * x[u, d] for u in on_d)
                <= 1.0 - memory_margin,
                name=f"memory[{d}]",
            )
    model.minimize(max_load)
    return MaxLoadProgram(model, x, comm_in, comm_out, load, max_load, allowed)


def hint_values(program: MaxLoadProgram, problem: PlacementProblem, device_of) -> dict:
    """Values of every variable of ``program`` at the placement ``device_of``."""
    values = {var: float(device_of[u] == d) for (u, d), var in program.x.items()}
    for (u, d), var in program.comm_out.items():
        values[var] = float(device_of[u] == d and any(device_of[v] != d
                                                       for v in problem.graph.successors[u]))
    for (u, d), var in program.comm_in.items():
        values[var] = float(device_of[u] != d and any(device_of[v] == d
                                                       for v in problem.graph.successors[u]))
    evaluation = evaluate(problem, np.asarray(device_of))
    for d, var in enumerate(program.load):
        values[var] = float(evaluation.load[d])
    values[program.max_load] = evaluation.max_load
    return values


def _fallback(problem: PlacementProblem, initial, deadline: float):
    """A placement when the solver found none: the warm start, every operator on one device, or
    the better of greedy's placement (linear time) and the DP's contiguous split (only where at
    least :data:`FALLBACK_SECONDS` are left: given those regardless, it overran the limit on
    large graphs whose program took all the time to build), else HEFT's memory-aware greedy
    placement. ``(None, None)`` if none of them finds one."""
    if initial is not None:
        return initial, "warm start"
    device_of = single_device(problem)
    if device_of is not None:
        return device_of, "all operators on one device"
    from . import dp, heft

    found = []
    cheap = cheap_incumbent(problem, "throughput")
    if cheap is not None:
        found.append((cheap.value, "greedy", cheap.device_of))
    seconds = deadline - time.perf_counter()
    if seconds >= FALLBACK_SECONDS:
        try:
            split = dp.solve(problem, "throughput", seconds)
            found.append((split.value, "dp (contiguous split)", split.device_of))
        except InfeasibleError:
            pass
    if found:
        _, how, device_of = min(found, key=lambda f: f[0])
        return device_of, how
    try:
        return heft.solve(problem, "latency", 0.0).device_of, "heft (greedy, memory-aware)"
    except InfeasibleError:
        return None, None


def _highs_progress(progress, started: float, time_limit: float):
    """A MathOpt message callback that turns HiGHS's branch-and-bound rows into progress calls."""

    def on_lines(lines: list[str]) -> None:
        for line in lines:
            fields = line.split()
            # A row ends "... BestBound BestSol Gap Cuts InLp Confl. LpIters Time".
            if len(fields) < 9 or not fields[-1].endswith("s") or not fields[-6].endswith("%"):
                continue
            try:
                bound, best = float(fields[-8]), float(fields[-7])
            except ValueError:
                continue
            elapsed = time.perf_counter() - started
            progress(f"ip: best {best:.6g}, bound {bound:.6g}",
                     min(1.0, elapsed / time_limit) if time_limit > 0 else None)

    return on_lines


def _solve_program(program: MaxLoadProgram, problem, seconds: float, initial, on_lines,
                   overhead: float = 0.0):
    """Run HiGHS on ``program`` for ``seconds``: ``(termination, device_of or None, bound, nodes)``;
    ``(None, None, -inf, 0)`` when less than ``overhead`` is left: handing a large program to
    HiGHS and its presolve are not interrupted by the time limit (a 3,200-operator program built
    in 1.6 s took 4.2 s with 0.4 s left), and they take about as long as building it."""
    from ortools.math_opt.python import mathopt

    if seconds <= max(0.0, overhead):
        return None, None, -math.inf, 0
    model_params = None
    if initial is not None:
        model_params = mathopt.ModelSolveParameters(solution_hints=[mathopt.SolutionHint(
            variable_values=hint_values(program, problem, initial))])
    params = mathopt.SolveParameters(
        time_limit=datetime.timedelta(seconds=seconds),
        relative_gap_tolerance=0.0,
        absolute_gap_tolerance=0.0,
    )
    with solver_stdout_to_stderr():
        result = mathopt.solve(program.model, mathopt.SolverType.HIGHS, params=params,
                               model_params=model_params, msg_cb=on_lines)
    device_of = None
    if result.has_primal_feasible_solution():
        values = result.variable_values()
        device_of = np.array([
            max((d for d in range(problem.num_devices) if (u, d) in program.x),
                key=lambda d: values[program.x[u, d]])
            for u in range(problem.num_ops)
        ], dtype=np.int64)
    return (result.termination.reason, device_of, result.termination.objective_bounds.dual_bound,
            result.solve_stats.node_count)


def _fits_memory(problem: PlacementProblem, device_of: np.ndarray) -> bool:
    used = np.bincount(device_of, weights=problem.memory, minlength=problem.num_devices)
    return bool((used <= problem.capacity * (1 + MEMORY_TOLERANCE)).all())


def solve(
    problem: PlacementProblem,
    objective: str,
    time_limit: float,
    progress: Callable[[str, float | None], None] | None = None,
    initial: np.ndarray | Placement | None = None,
) -> Placement:
    """Minimise the max device load over all placements with the integer program above.

    ``initial``: a valid placement (``device_of`` array or :class:`Placement`) to warm-start from;
    it is also returned if the solver finds nothing better in time.
    """
    require_objective("ip", objective, ("throughput",), "use method 'latency-ip' for latency")
    started = time.perf_counter()
    deadline = started + max(0.0, time_limit)
    from ortools.math_opt.python import mathopt

    report = reporter(progress)

    if isinstance(initial, Placement):
        initial = initial.device_of
    if initial is not None:
        initial = np.asarray(initial, dtype=np.int64)
        validate(problem, initial)

    stats = {"solver": "highs", "search_space": "all", "warm_start": initial is not None,
             "nodes": 0}
    on_lines = _highs_progress(progress, started, time_limit) if progress else None
    reason, device_of, bound = None, None, -math.inf
    try:
        if not budget.buildable(budget.model_items(problem), deadline - time.perf_counter()):
            raise BuildTimeout("the program is too large to build in the time left")
        program = build_max_load_program(problem, deadline=deadline)
        stats.update(build_seconds=time.perf_counter() - started,
                     variables=program.model.get_num_variables(),
                     constraints=program.model.get_num_linear_constraints())
        report(f"ip: built the program ({stats['variables']} variables, "
               f"{stats['constraints']} rows) in {stats['build_seconds']:.2f} s", 0.0)
        reason, device_of, bound, stats["nodes"] = _solve_program(
            program, problem, deadline - time.perf_counter() - _FINISH_RESERVE, initial, on_lines,
            stats["build_seconds"])
        if device_of is not None and not _fits_memory(problem, device_of):
            # HiGHS's tolerance let a capacity overflow by more than the evaluator allows: solve
            # once more with the capacity rows tightened (that program's bound is not kept).
            stats["memory_margin"] = _MEMORY_MARGIN
            program = build_max_load_program(problem, _MEMORY_MARGIN, deadline)
            _, device_of, _, nodes = _solve_program(
                program, problem, deadline - time.perf_counter() - _FINISH_RESERVE, initial,
                on_lines, stats["build_seconds"])
            stats["nodes"] += nodes
            if device_of is not None and not _fits_memory(problem, device_of):
                device_of = None
    except BuildTimeout as stop:
        stats["stopped"] = str(stop)

    if reason in (mathopt.TerminationReason.INFEASIBLE,
                  mathopt.TerminationReason.INFEASIBLE_OR_UNBOUNDED):
        raise InfeasibleError(
            f"no placement of the {problem.num_ops} operators on {problem.device_names} fits the "
            f"memory capacities ({problem.memory.sum():.4g} bytes in all, capacities "
            f"{problem.capacity.tolist()}) under the pins and colour classes; add devices, raise "
            "capacities or drop pins"
        )
    optimal = (reason == mathopt.TerminationReason.OPTIMAL and device_of is not None
               and "memory_margin" not in stats)
    stats["status"] = "time_limit" if reason is None else reason.name.lower()
    if device_of is not None and initial is not None:
        if evaluate(problem, initial).max_load < evaluate(problem, device_of).max_load:
            device_of, stats["returned"] = initial, "warm start (better than the solver's)"
    if device_of is None:
        device_of, stats["fallback"] = _fallback(problem, initial, deadline)
        optimal = False
        if device_of is None:
            raise InfeasibleError(
                f"the integer program found no placement within {time_limit:g} s, nor did the "
                "fallbacks (one device, greedy, the contiguous DP, HEFT); the memory capacities "
                "and pins may leave none: raise time_limit, capacities, or drop pins"
            )
    value = evaluate(problem, device_of).max_load
    lower_bound = min(value, max(bound, bounds.work_bound(problem)))
    stats.update(optimal=optimal, seconds=time.perf_counter() - started)
    report(f"ip: max load {value:.6g}, bound {lower_bound:.6g}", 1.0)
    return Placement(device_of=device_of, objective="throughput", value=value, lower_bound=lower_bound,
                     method="ip", stats=stats)
