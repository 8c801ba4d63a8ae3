"""DiviML's exact integer programs for latency and throughput, and its lower bound.

Reference: Y. Ghannane, M. S. Abdelfattah, "DiviML: A Module-based Heuristic for Mapping Neural
Networks onto Heterogeneous Platforms", arXiv 2308.00127 (2023). The paper gives an exact mixed
integer program for each objective, a theoretical lower bound to grade heuristics, and a
module-by-module "splitting" heuristic (:mod:`tvm_place.solvers.diviml_split`). The authors' repository
(github.com/abdelfattah-lab/diviml) holds no code; these programs are re-derived from the paper's
description for the cost model of :mod:`tvm_place.graph`, with the paper's variable names.

Variables, as in the paper (``i`` an operator, ``k`` a device):

- ``x[i, k]`` (binary): operator ``i`` runs on device ``k``; exactly one per operator, only on the
  devices ``i`` may use (support, pins, memory, the devices its whole colour class may share);
- latency: ``S[i]``, ``C[i]`` the start and completion of ``i``, ``C_max`` the makespan;
- throughput: ``s[i, k]`` / ``r[i, k]`` (0/1 at the optimum): the value of ``i`` is sent from /
  received on device ``k``; ``T`` the bottleneck (maximum) device load.

**Latency** (:func:`latency_milp`), exactly :func:`tvm_place.evaluate.evaluate`'s model::

    minimise C_max
    C_max >= C[i]                                   (i with no successor)
    C[i] = S[i] + sum_k p[i, k] x[i, k]
    S[j] >= C[i]                                    (edge i -> j)
    S[j] >= C[i] + t[i, k] + t[i, l]  if x[i, k] and x[j, l], k != l   (transfer delay)
    no two operators of one device overlap                               (disjunctive)
    sum_i m[i] x[i, k] <= capacity[k]

Transfers delay the consumer but occupy no device, as in the evaluator. The paper writes the
disjunction with ordering binaries and big-M constants on the pairs of operators not joined by a
path; here it is CP-SAT's ``NoOverlap`` over optional intervals ``[S[i], C[i])`` present iff
``x[i, k]`` (the same constraint, propagated rather than relaxed). Intervals of size zero count
for ``NoOverlap``, matching the evaluator, in which a zero-time operator still waits for its
device. The placement returned carries ``order``: the operators sorted by start, then
completion, then topological position, a topological order in which each device's sequence is
the solver's; :func:`~tvm_place.evaluate.evaluate` with that order gives at most the solver's
makespan, and the value reported is the evaluator's.

**Throughput** (:func:`throughput_milp`), the evaluator's load rule (sender pays once per value,
each receiving device once per value)::

    minimise T
    T >= sum_i p[i, k] x[i, k] + sum_i t[i, k] (s[i, k] + r[i, k])     (every device k)
    s[i, k] >= x[i, k] - x[j, k],  r[i, k] >= x[j, k] - x[i, k]         (edge i -> j)
    sum_i m[i] x[i, k] <= capacity[k]

Minimisation drives ``s`` and ``r`` down to the evaluator's indicators. DiviML's throughput
program may also replicate a stage over several devices (data parallelism): that variant is
:mod:`tvm_place.solvers.replicas` (method ``diviml-replicas``); this one places each operator once.

**Backends, chosen by measurement** (:data:`BACKEND_NOTE`): latency with CP-SAT, throughput with
SCIP (both from OR-Tools).

*Integer times (CP-SAT).* CP-SAT needs integers: every duration and delay is multiplied by a
scale (so that the reference horizon is about :data:`TIME_UNITS` units) and rounded *down*. For
any placement and order the scaled makespan (a longest path) is then at most ``scale`` times the
real one, so the solver's bound divided by the scale (rounded down) is a valid lower bound on the
real optimum; the solution is re-timed in floating point by the evaluator, off the real optimum
by at most a few units of ``1 / scale`` per operator on the critical chain. Memory sizes are
scaled per device to about 2**46 units and the capacity given half of the evaluator's relative
slack, which absorbs the rounding for graphs of up to about 70,000 operators.

*Floating point (SCIP).* Times are scaled so that the reference load is :data:`LOAD_UNITS`, which
puts SCIP's absolute tolerances near 1e-9 of the objective; its bound is reported less
:data:`SCIP_BOUND_SLACK` (relative) for those tolerances. ``s`` and ``r`` are continuous: with
``x`` integral their minimal values are 0 or 1.

**Time limit.** The warm start gets a tenth of the time (at most 2 s), the solver what is left
less a margin; on the limit the best solution found (or the warm start, whichever is better) is
returned with the best bound proven.

**Lower bound**: DiviML grades heuristics against ``max(critical path with every operator on its
fastest device, sum of fastest times / #devices)``;
:func:`tvm_place.solvers.bounds.device_aware.device_aware_bound` computes valid strengthenings of
both terms (unavoidable transfers, heterogeneous devices and memory), with their proofs.

Complexity: the latency program has ``n D`` booleans, ``2 n`` integers, ``n D`` optional intervals
and ``m D^2`` conditional precedences; the throughput program ``n D`` binaries, at most ``2 n D``
continuous variables and ``2 m D`` inequalities. Both problems are NP-hard; model building is
``O(n D + m D^2)``, the bound one LP (GLOP) of ``n D`` variables plus ``O(m D^2)``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, evaluate
from ..graph import OBJECTIVES, Placement, PlacementProblem
from .baselines import cheap_incumbent, heft_or_greedy
from .bounds.device_aware import (
    device_aware_bound,
    subproblem_latency_bound,
    subproblem_throughput_bound,
)
from .budget import buildable, model_items
from .common import reporter, require_objective
from .grouping import feasible_devices
from .native_output import solver_stdout_to_stderr

#: The reference horizon (a known solution's value, or a safe upper bound) maps to about this
#: many integer time units; rounding then costs at most ~1e-9 of it per operator.
TIME_UNITS = 2**30

#: The throughput program (SCIP, floating point) scales times so that the reference load is this
#: many units: SCIP's absolute tolerances (1e-6) are then ~1e-9 of it.
LOAD_UNITS = 1000.0

#: Weights of the device-filling objective (``target``) of :func:`throughput_milp`: a unit of load
#: over the target costs as much as this many units of transfer; compute breaks ties.
OVERFLOW_WEIGHT = 10.0
COMPUTE_WEIGHT = 1.0

#: SCIP's dual bound is trusted up to this relative slack (its tolerances).
SCIP_BOUND_SLACK = 1e-6

#: Seconds between two progress messages relayed from SCIP's log.
PROGRESS_PERIOD = 1.0

#: Memory is scaled per device so that the largest sum in a capacity constraint is this many units.
MEMORY_UNITS = 2**46

#: The warm start (HEFT with local search) gets this share of the time limit, and at most
#: :data:`WARM_START_SECONDS`.
WARM_START_SHARE = 0.1
WARM_START_SECONDS = 2.0
#: HEFT is the warm start only where its passes fit in this share of the time limit (greedy's
#: placement is, elsewhere).
WARM_START_WITHIN = 0.4

#: The share of the time limit the device-aware bound may take in :func:`solve` (it returns a
#: weaker bound rather than overrun).
BOUND_SHARE = 0.2

#: The solver stops this share of the time limit (plus :data:`SAFETY_SECONDS`) before the deadline,
#: leaving room to read and re-time the solution.
SAFETY_SHARE = 0.03
SAFETY_SECONDS = 0.05

#: What the backend choice rests on (time to proven optimality, 30 s limit, this 2-core machine;
#: random DAGs of 12-24 operators and residual chains of 40-200 operators, 3 devices).
BACKEND_NOTE = (
    "latency: CP-SAT (NoOverlap, integer times) proved optimality in 0.1-3 s where SCIP with the "
    "paper's big-M disjunctions took 5-8 s on 12-16 operators and hit the 30 s limit on 24-40; "
    "throughput: SCIP proved optimality on 60- and 120-operator chains in 25 s where CP-SAT "
    "(4-8 workers) hit the limit with a 2% gap (CP-SAT won on 24-operator random DAGs, 0.4 s vs "
    "4.5 s); HiGHS was on par with SCIP but writes to stdout"
)


#: Subproblems up to this many operators get :data:`SMALL_WORKERS` CP-SAT workers: on those the
#: portfolio's start-up costs more than it finds (measured on 24-operator modules). One, not two:
#: with two interleaved workers GPT-2 small's and ViT-B/16's 27-operator split modules on two CPUs
#: ran to their 2 s limit each (optimal from the start, 19 conflicts) where one worker proves them
#: in 0.02-0.35 s, the same optimum and placement.
SMALL_OPS = 64
SMALL_WORKERS = 1


def _workers(num_ops: int) -> int:
    """CP-SAT search workers: its portfolio needs several even on a small machine, except for
    small subproblems."""
    if num_ops <= SMALL_OPS:
        return SMALL_WORKERS
    return max(4, min(8, os.cpu_count() or 1))


# -- subproblems --------------------------------------------------------------------------------


@dataclass
class Subproblem:
    """A part of a problem to place, the rest of it already placed (the whole problem by default).

    ``ops``: the operators to place. ``inputs``: producers outside ``ops`` whose values ``ops``
    consume, each with its device (latency and throughput) and ``input_finish`` its completion
    time (latency). ``ready[k]``: when device ``k`` is first free (latency). ``background[k]``:
    load device ``k`` already carries (throughput); the transfers of an input value are charged
    here, so each input's consumers must all lie in ``ops``, and the transfers of a value of
    ``ops`` consumed outside ``ops`` are not charged here. ``capacity[k]``: memory left on ``k``.
    ``fixed``: operators of ``ops`` whose device is imposed.
    """

    ops: list[int]
    inputs: dict[int, int] = field(default_factory=dict)
    input_finish: dict[int, float] = field(default_factory=dict)
    ready: np.ndarray | None = None
    background: np.ndarray | None = None
    capacity: np.ndarray | None = None
    fixed: dict[int, int] = field(default_factory=dict)

    @classmethod
    def whole(cls, problem: PlacementProblem) -> "Subproblem":
        return cls(ops=problem.graph.topological_order.tolist())


@dataclass
class MilpResult:
    """What one solve gives: ``status`` is ``"optimal"``, ``"feasible"``, ``"infeasible"`` or
    ``"unknown"`` (no solution in time). ``device_of`` maps each operator of the subproblem to
    its device; ``order`` lists them by start (latency); ``value`` is the solver's objective in
    real units (approximate: integer-scaled); ``bound`` a valid lower bound on the subproblem's
    optimum; ``start``/``finish`` the solver's times in real units (latency)."""

    status: str
    device_of: dict[int, int] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    value: float = math.inf
    bound: float = 0.0
    start: dict[int, float] = field(default_factory=dict)
    finish: dict[int, float] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _floor(value: float, scale: float) -> int:
    return int(math.floor(value * scale))


def _choices(problem: PlacementProblem, sub: Subproblem,
             allowed: np.ndarray) -> dict[int, list[int]]:
    """Devices each operator of ``sub`` may take (``allowed``, the remaining memory, ``fixed``)."""
    capacity = problem.capacity if sub.capacity is None else sub.capacity
    limit = np.maximum(capacity, 0.0) * (1 + MEMORY_TOLERANCE)
    choices = {}
    for u in sub.ops:
        ok = allowed[u] & (problem.memory[u] <= limit)
        if u in sub.fixed:
            d = sub.fixed[u]
            ok = ok & (np.arange(problem.num_devices) == d)
        choices[u] = np.flatnonzero(ok).tolist()
    return choices


def _colour_and_memory(problem: PlacementProblem, sub: Subproblem, choices, x, add, total,
                       integer: bool) -> None:
    """Colour-class and memory constraints over the assignment ``x`` (either program).

    ``add`` posts a constraint, ``total`` sums expressions. Members of a colour class inside
    ``sub.ops`` share their device. Memory is scaled per device: to integers of about
    :data:`MEMORY_UNITS` (CP-SAT; the capacity gets half the evaluator's relative slack, which
    absorbs the rounding), or so that the capacity is about 1e6 (SCIP, whose absolute
    feasibility tolerance of 1e-6 is then far below that slack).
    """
    inside = set(sub.ops)
    for colour in problem.colour_classes:
        members = [u for u in colour if u in inside]
        for u in members[1:]:
            for k in set(choices[u]) | set(choices[members[0]]):
                a, b = x.get((u, k)), x.get((members[0], k))
                if a is not None and b is not None:
                    add(a == b)
                else:  # one of the two may not use k: neither may
                    add(1 * (a if b is None else b) == 0)
    capacity = problem.capacity if sub.capacity is None else sub.capacity
    for k in range(problem.num_devices):
        on_k = [u for u in sub.ops if (u, k) in x]
        held = float(problem.memory[on_k].sum())
        if not math.isfinite(capacity[k]) or held <= capacity[k]:
            continue  # cannot overflow
        room = max(capacity[k], 0.0) * (1 + MEMORY_TOLERANCE / 2)
        if integer:
            scale = MEMORY_UNITS / max(held, 1e-300)
            add(total(int(round(problem.memory[u] * scale)) * x[u, k] for u in on_k)
                <= math.floor(room * scale))
        else:
            scale = 1e6 / (capacity[k] if capacity[k] > 0 else held)
            add(total(float(problem.memory[u] * scale) * x[u, k] for u in on_k) <= room * scale)


def _solver(time_limit: float, progress, label: str, scale: float, num_ops: int):
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    solver.parameters.num_workers = _workers(num_ops)
    # Among equal optima CP-SAT's parallel workers return whichever finished first, so a small
    # subproblem (solved to optimality) gave another order at the same value from run to run.
    # Interleaved search is deterministic whatever the workers: the plan is byte-identical.
    solver.parameters.interleave_search = num_ops <= SMALL_OPS
    solver.parameters.relative_gap_limit = 0.0
    solver.parameters.absolute_gap_limit = 0.5  # integer objective: a gap below 1 is optimal
    callback = None
    if progress is not None:
        started = time.perf_counter()

        class _Report(cp_model.CpSolverSolutionCallback):
            def on_solution_callback(self) -> None:
                elapsed = time.perf_counter() - started
                progress(
                    f"{label}: solution {self.objective_value / scale:.6g}, "
                    f"bound {self.best_objective_bound / scale:.6g} after {elapsed:.2f} s",
                    min(1.0, elapsed / max(time_limit, 1e-9)),
                )

        callback = _Report()
    return solver, callback


def _status(solver, code) -> str:
    from ortools.sat.python import cp_model

    return {
        cp_model.OPTIMAL: "optimal",
        cp_model.FEASIBLE: "feasible",
        cp_model.INFEASIBLE: "infeasible",
        cp_model.MODEL_INVALID: "invalid",
    }.get(code, "unknown")


def _bound(solver, scale: float) -> float:
    """The solver's proven bound in real units, rounded down."""
    value = solver.best_objective_bound / scale
    return math.nextafter(value, -math.inf) if value > 0 else 0.0


# -- latency ---------------------------------------------------------------------------------------


def latency_milp(
    problem: PlacementProblem,
    sub: Subproblem,
    allowed: np.ndarray,
    time_limit: float,
    hint: np.ndarray | None = None,
    hint_order: np.ndarray | None = None,
    progress=None,
    known_bound: float = 0.0,
) -> MilpResult:
    """DiviML's latency program over ``sub`` (see the module docstring): minimise the makespan.

    ``allowed`` is :func:`feasible_devices`; ``hint``/``hint_order`` (a device per operator of the
    whole problem, and a topological order) warm-start the solver; ``known_bound`` is a valid
    lower bound on the subproblem's optimum, if one is known.

    The program also gets ``C_max >= floor(scale * B) - (2 |ops| + 2)`` for ``B`` the larger of
    ``known_bound`` and :func:`subproblem_latency_bound`, and stops once its solution is within
    ``2 |ops| + 2`` units of its bound. Valid: each integer term of a path is less than one unit
    below the scaled real term, and a path has at most ``2 |ops| + 2`` terms (operators, edges,
    a ready time or an input), so every schedule's integer makespan is at least that. The stop
    rule leaves the result within ``(2 |ops| + 2) / scale`` (~``2 |ops|`` billionths of the
    reference horizon) of the optimum; where the bound is tight (chains) it ends the search at
    once instead of proving it by branching.
    """
    from ortools.sat.python import cp_model

    entered = time.perf_counter()
    n_devices = problem.num_devices
    preds = problem.graph.predecessors
    succs = problem.graph.successors
    compute, transfer = problem.compute_time, problem.transfer_time
    ops = list(sub.ops)
    inside = set(ops)
    choices = _choices(problem, sub, allowed)
    ready = np.zeros(n_devices) if sub.ready is None else np.asarray(sub.ready, dtype=float)
    for p in sub.inputs:
        if p not in sub.input_finish:
            raise ValueError(f"input {p} of the latency subproblem has no finish time")
    if any(not ds for ds in choices.values()):
        return MilpResult("infeasible")

    def delay(u: int, d: int, e: int) -> float:
        return 0.0 if d == e else float(transfer[u, d] + transfer[u, e])

    # Reference horizon: the hint's makespan, else a schedule-independent upper bound.
    offset = max([float(ready.max())] + [sub.input_finish[p] + float(transfer[p].max()) * 2
                                         for p in sub.inputs])
    generic = offset + sum(max(compute[u, k] for k in choices[u]) for u in ops) + sum(
        2.0 * float(transfer[u].max()) for u in ops for v in succs[u] if v in inside)
    hint_devices = None
    if hint is not None and all(int(hint[u]) in choices[u] for u in ops):
        hint_devices = {u: int(hint[u]) for u in ops}
    reference = generic
    if hint_devices is not None:
        reference = _retime(problem, sub, hint_devices, hint_order, ready, 1.0, integer=False)[2]
    scale = TIME_UNITS / reference if reference > 0 else 1.0

    p_int = {(u, k): _floor(compute[u, k], scale) for u in ops for k in choices[u]}
    hint_schedule = None
    if hint_devices is not None:
        hint_schedule = _retime(problem, sub, hint_devices, hint_order, ready, scale, integer=True,
                                durations=p_int)
    # The schedule-independent bound, plus a unit per operator for rounding: the hint's own
    # makespan is no safe horizon, since rounded delays can make the hint itself overrun it.
    horizon = _floor(generic, scale) + len(ops) + 1

    model = cp_model.CpModel()
    x = {(u, k): model.new_bool_var(f"x[{u},{k}]") for u in ops for k in choices[u]}
    S = {u: model.new_int_var(0, horizon, f"S[{u}]") for u in ops}
    C = {u: model.new_int_var(0, horizon, f"C[{u}]") for u in ops}
    C_max = model.new_int_var(0, horizon, "C_max")
    for u in ops:
        model.add_exactly_one(x[u, k] for k in choices[u])
    _colour_and_memory(problem, sub, choices, x, model.add, sum, integer=True)

    # Duration by device, and no overlap on a device (zero-length intervals count). C is tied to
    # S by one linear row, not by the intervals' ends: with several optional intervals sharing
    # S and C but differing in size, CP-SAT 9.15's presolve proved a wrong optimum (a random
    # 4-operator problem of the test suite: 16.95 "optimal" where 15.53 is feasible).
    on_device: list[list] = [[] for _ in range(n_devices)]
    for u in ops:
        model.add(C[u] == S[u] + sum(p_int[u, k] * x[u, k] for k in choices[u]))
        for k in choices[u]:
            on_device[k].append(model.new_optional_fixed_size_interval_var(
                S[u], p_int[u, k], x[u, k], f"I[{u},{k}]"))
            ready_k = _floor(ready[k], scale)
            if ready_k > 0:
                model.add(S[u] >= ready_k).only_enforce_if(x[u, k])
    for k in range(n_devices):
        if len(on_device[k]) > 1:
            model.add_no_overlap(on_device[k])

    # Precedence, with the transfer delay when the two ends sit on different devices.
    for v in ops:
        for u in preds[v]:
            if u in inside:
                model.add(S[v] >= C[u])
                for d in choices[u]:
                    for e in choices[v]:
                        wait = _floor(delay(u, d, e), scale)
                        if d != e and wait > 0:
                            model.add(S[v] >= C[u] + wait).only_enforce_if([x[u, d], x[v, e]])
            elif u in sub.inputs:
                d = sub.inputs[u]
                arrival = {e: _floor(sub.input_finish[u] + delay(u, d, e), scale)
                           for e in choices[v]}
                low = min(arrival.values())
                model.add(S[v] >= low)
                for e, at in arrival.items():
                    if at > low:
                        model.add(S[v] >= at).only_enforce_if(x[v, e])
            else:
                raise ValueError(
                    f"operator {u} feeds the subproblem but is neither in it nor an input")
    for u in ops:
        if not any(v in inside for v in succs[u]):
            model.add(C_max >= C[u])
    slack = 2 * len(ops) + 2
    bound = max(known_bound, subproblem_latency_bound(problem, sub, choices))
    if _floor(bound, scale) - slack > 0:
        model.add(C_max >= _floor(bound, scale) - slack)
    model.minimize(C_max)

    if hint_schedule is not None:
        starts, finishes, makespan = hint_schedule
        for (u, k), var in x.items():
            model.add_hint(var, hint_devices[u] == k)
        for u in ops:
            model.add_hint(S[u], starts[u])
            model.add_hint(C[u], finishes[u])
        model.add_hint(C_max, makespan)

    remaining = time_limit - (time.perf_counter() - entered)
    solver, callback = _solver(remaining, progress, "diviml-milp latency", scale, len(ops))
    solver.parameters.absolute_gap_limit = float(slack)
    started = time.perf_counter()
    code = solver.solve(model, callback)
    status = _status(solver, code)
    stats = {
        "solver_status": status, "solver_seconds": time.perf_counter() - started,
        "scale": scale, "booleans": len(x), "conflicts": solver.num_conflicts,
    }
    if status not in ("optimal", "feasible"):
        return MilpResult(status, stats=stats)
    device_of = {u: next(k for k in choices[u] if solver.boolean_value(x[u, k])) for u in ops}
    start = {u: solver.value(S[u]) for u in ops}
    finish = {u: solver.value(C[u]) for u in ops}
    position = np.empty(problem.num_ops, dtype=np.int64)
    position[problem.graph.topological_order] = np.arange(problem.num_ops)
    order = sorted(ops, key=lambda u: (start[u], finish[u], position[u]))
    return MilpResult(
        status,
        device_of=device_of,
        order=order,
        value=solver.objective_value / scale,
        bound=_bound(solver, scale),
        start={u: t / scale for u, t in start.items()},
        finish={u: t / scale for u, t in finish.items()},
        stats=stats,
    )


def _retime(problem, sub: Subproblem, devices: dict[int, int], order, ready, scale, integer,
            durations=None):
    """The evaluator's recurrence over ``sub`` for a fixed placement and order (restricted to
    ``sub.ops``), in real units or in floored integer units; returns
    (starts, finishes, makespan)."""
    inside = set(sub.ops)
    if order is None:
        order = problem.graph.topological_order
    sequence = [int(u) for u in order if int(u) in inside]
    transfer = problem.transfer_time
    conv = (lambda t: _floor(t, scale)) if integer else (lambda t: t)
    free = [conv(float(r)) for r in ready]
    start, finish = {}, {}
    for v in sequence:
        e = devices[v]
        t = free[e]
        for u in problem.graph.predecessors[v]:
            if u in inside:
                d = devices[u]
                wait = 0 if d == e else conv(float(transfer[u, d] + transfer[u, e]))
                arrival = finish[u] + wait
            else:
                d = sub.inputs[u]
                arrival = conv(sub.input_finish[u] + (0.0 if d == e else
                                                      float(transfer[u, d] + transfer[u, e])))
            t = max(t, arrival)
        start[v] = t
        finish[v] = t + (durations[v, e] if integer else float(problem.compute_time[v, e]))
        free[e] = finish[v]
    return start, finish, max(finish.values(), default=0)


# -- throughput ----------------------------------------------------------------------------------


def throughput_milp(
    problem: PlacementProblem,
    sub: Subproblem,
    allowed: np.ndarray,
    time_limit: float,
    hint: np.ndarray | None = None,
    progress=None,
    known_bound: float = 0.0,
    target: float | None = None,
    total_weight: float = 0.0,
) -> MilpResult:
    """DiviML's throughput program over ``sub`` without replicas (see the module docstring):
    minimise the largest device load, ``background`` included. Solved by SCIP (through
    OR-Tools' MathOpt) with times scaled so that the reference load is :data:`LOAD_UNITS`.

    ``known_bound`` (a valid lower bound on the subproblem's optimum) and
    :func:`subproblem_throughput_bound` enter as ``T >= bound (1 - 1e-9)``, so that the search
    stops as soon as a solution meets them.

    With ``target`` (used by :mod:`~tvm_place.solvers.diviml_split` to fill devices like bins, module
    after module) the objective is instead ``OVERFLOW_WEIGHT * sum_k over[k] + transfers +
    COMPUTE_WEIGHT * compute``, ``over[k] >= background[k] + load[k] - target``: keep every
    device within ``target`` at the least communication, on the fastest devices; ``value`` is
    then that objective, and ``bound`` 0. ``total_weight > 0`` adds that multiple of the total
    load (all devices) to the bottleneck objective, a tie-breaker towards less work."""
    from ortools.math_opt.python import mathopt

    entered = time.perf_counter()
    n_devices = problem.num_devices
    succs = problem.graph.successors
    compute, transfer = problem.compute_time, problem.transfer_time
    ops = list(sub.ops)
    choices = _choices(problem, sub, allowed)
    background = (np.zeros(n_devices) if sub.background is None
                  else np.asarray(sub.background, dtype=float))
    if any(not ds for ds in choices.values()):
        return MilpResult("infeasible")
    charged = charged_values(problem, sub)

    hint_devices = None
    if hint is not None and all(int(hint[u]) in choices[u] for u in ops):
        hint_devices = {u: int(hint[u]) for u in ops}
    reference = float(background.max()) + sum(max(compute[u, k] for k in choices[u]) for u in ops)
    if hint_devices is not None:
        reference = float(_loads(problem, sub, hint_devices, charged, background).max())
    scale = LOAD_UNITS / reference if reference > 0 else 1.0

    model = mathopt.Model(name="diviml-throughput")
    x = {(u, k): model.add_binary_variable(name=f"x[{u},{k}]") for u in ops for k in choices[u]}
    for u in ops:
        model.add_linear_constraint(mathopt.fast_sum(x[u, k] for k in choices[u]) == 1)
    _colour_and_memory(problem, sub, choices, x, model.add_linear_constraint, mathopt.fast_sum,
                       integer=False)

    def placed(u: int, k: int):
        """x[u, k] as a variable or a constant (inputs sit on a known device)."""
        if u in sub.inputs:
            return float(sub.inputs[u] == k)
        return x.get((u, k), 0.0)

    load_terms: list[list] = [[] for _ in range(n_devices)]
    compute_terms, transfer_terms = [], []
    for (u, k), var in x.items():
        load_terms[k].append(float(compute[u, k]) * scale * var)
        compute_terms.append(load_terms[k][-1])
    s, r = {}, {}
    for u in charged:
        for v in succs[u]:
            for k in range(n_devices):
                t = float(transfer[u, k]) * scale
                here, there = placed(u, k), placed(v, k)
                if t == 0.0:
                    continue
                if not isinstance(here, float) or here:  # u may sit on k: sends if v is elsewhere
                    if (u, k) not in s:
                        s[u, k] = model.add_variable(lb=0.0, ub=1.0, name=f"s[{u},{k}]")
                        load_terms[k].append(t * s[u, k])
                        transfer_terms.append(load_terms[k][-1])
                    model.add_linear_constraint(s[u, k] >= here - there)
                if not isinstance(there, float) or there:  # v may sit on k: k receives if u is not
                    if (u, k) not in r:
                        r[u, k] = model.add_variable(lb=0.0, ub=1.0, name=f"r[{u},{k}]")
                        load_terms[k].append(t * r[u, k])
                        transfer_terms.append(load_terms[k][-1])
                    model.add_linear_constraint(r[u, k] >= there - here)
    if target is None:
        bound = max(known_bound, subproblem_throughput_bound(problem, sub, choices))
        T = model.add_variable(lb=bound * scale * (1 - 1e-9), name="T")
        for k in range(n_devices):
            model.add_linear_constraint(
                T >= float(background[k]) * scale + mathopt.fast_sum(load_terms[k]))
        model.minimize(T + total_weight * mathopt.fast_sum(
            term for terms in load_terms for term in terms))
    else:
        over = [model.add_variable(lb=0.0, name=f"over[{k}]") for k in range(n_devices)]
        for k in range(n_devices):
            model.add_linear_constraint(over[k] >= float(background[k] - target) * scale
                                        + mathopt.fast_sum(load_terms[k]))
        model.minimize(OVERFLOW_WEIGHT * mathopt.fast_sum(over) + mathopt.fast_sum(transfer_terms)
                       + COMPUTE_WEIGHT * mathopt.fast_sum(compute_terms))

    model_params = None
    if hint_devices is not None:
        values = {var: float(hint_devices[u] == k) for (u, k), var in x.items()}
        model_params = mathopt.ModelSolveParameters(
            solution_hints=[mathopt.SolutionHint(variable_values=values)])
    built = time.perf_counter() - entered
    if time_limit - built < built:
        # SCIP's take-over of the program ignores the time limit and lasts about as long as
        # building it did (2.5 s over a 2 s limit at 3,200 operators): no time for it.
        return MilpResult("unknown", stats={"solver_status": "skipped", "build_seconds": built})
    params = mathopt.SolveParameters(
        time_limit=timedelta(seconds=max(0.01, time_limit - built)),
        relative_gap_tolerance=0.0,
        absolute_gap_tolerance=LOAD_UNITS * 1e-9,
        threads=1,
    )
    started = time.perf_counter()
    last_report = [started]

    def log(lines) -> None:
        now = time.perf_counter()
        lines = [line.strip() for line in lines if line.strip()]
        if progress is not None and lines and now - last_report[0] >= PROGRESS_PERIOD:
            last_report[0] = now
            progress(f"diviml-milp throughput (SCIP): {lines[-1]}",
                     min(1.0, (now - started) / max(time_limit, 1e-9)))

    with solver_stdout_to_stderr():
        result = mathopt.solve(model, mathopt.SolverType.GSCIP, params=params,
                               model_params=model_params, msg_cb=log)
    reason = result.termination.reason
    found = result.has_primal_feasible_solution()
    if reason == mathopt.TerminationReason.OPTIMAL:
        status = "optimal"
    elif reason in (mathopt.TerminationReason.INFEASIBLE,
                    mathopt.TerminationReason.INFEASIBLE_OR_UNBOUNDED):
        status = "infeasible"
    else:
        status = "feasible" if found else "unknown"
    stats = {
        "solver_status": status, "solver_seconds": time.perf_counter() - started,
        "scale": scale, "variables": len(x) + len(s) + len(r),
        "nodes": int(result.solve_stats.node_count),
    }
    if status not in ("optimal", "feasible"):
        return MilpResult(status, stats=stats)
    solution = result.variable_values()
    device_of = {u: max(choices[u], key=lambda k: solution[x[u, k]]) for u in ops}
    bound = result.best_objective_bound()
    # SCIP's bound holds up to its tolerances (1e-6 absolute on values of ~LOAD_UNITS).
    bound = max(0.0, bound / scale * (1 - SCIP_BOUND_SLACK)) if math.isfinite(bound) else 0.0
    if target is not None or total_weight:
        bound = 0.0
    return MilpResult(
        status,
        device_of=device_of,
        order=list(ops),
        value=result.objective_value() / scale,
        bound=bound,
        stats=stats,
    )


def charged_values(problem: PlacementProblem, sub: Subproblem) -> list[int]:
    """Values whose transfers the throughput program of ``sub`` charges: those of ``sub.ops``
    consumed only inside it, and the inputs (all their consumers are inside by contract)."""
    inside = set(sub.ops)
    succs = problem.graph.successors
    charged = [u for u in sub.ops if succs[u] and all(v in inside for v in succs[u])]
    return charged + list(sub.inputs)


def module_loads(problem: PlacementProblem, sub: Subproblem, devices: dict[int, int]) -> np.ndarray:
    """The device loads ``sub`` adds under ``devices`` (its compute and the transfers of
    :func:`charged_values`), without ``background``."""
    return _loads(problem, sub, devices, charged_values(problem, sub),
                  np.zeros(problem.num_devices))


def _loads(problem, sub: Subproblem, devices: dict[int, int], charged, background) -> np.ndarray:
    """Device loads of ``sub`` under ``devices`` (with the transfers of ``charged`` values),
    ``background`` included."""
    loads = np.array(background, dtype=float)
    where = {**devices, **sub.inputs}
    for u, k in devices.items():
        loads[k] += problem.compute_time[u, k]
    for u in charged:
        d = where[u]
        receivers = {where[v] for v in problem.graph.successors[u]} - {d}
        if receivers:
            loads[d] += problem.transfer_time[u, d]
        for e in receivers:
            loads[e] += problem.transfer_time[u, e]
    return loads


# -- the method ------------------------------------------------------------------------------------


def warm_start(problem: PlacementProblem, time_limit: float, within: float = math.inf):
    """HEFT's placement and order (the solver's hint; ``time_limit`` seconds of its local
    search), or greedy's where HEFT's passes would not fit in ``within`` seconds
    (:func:`~tvm_place.solvers.baselines.heft_or_greedy`); ``None`` if neither finds a placement
    that fits memory (the program may still find one)."""
    return heft_or_greedy(problem, time_limit, within)


def solve(problem: PlacementProblem, objective: str, time_limit: float, progress=None) -> Placement:
    """Place ``problem`` optimally for ``objective`` with DiviML's program within ``time_limit``.

    On the time limit the best placement found is returned with the best bound proven
    (``stats["status"]`` says ``"optimal"`` or ``"time_limit"``).
    """
    require_objective("diviml-milp", objective, OBJECTIVES)
    started = time.perf_counter()
    deadline = started + max(0.0, time_limit)
    report = reporter(progress)

    allowed = feasible_devices(problem)
    warm = warm_start(problem, min(WARM_START_SECONDS, WARM_START_SHARE * time_limit),
                      WARM_START_WITHIN * time_limit)
    report(f"diviml-milp: warm start {'none' if warm is None else f'{warm.value:.6g}'}", 0.0)
    known = device_aware_bound(problem, objective, BOUND_SHARE * time_limit)
    budget = deadline - time.perf_counter() - SAFETY_SHARE * time_limit - SAFETY_SECONDS
    sub = Subproblem.whole(problem)
    hint = None if warm is None else warm.device_of
    if not buildable(model_items(problem, device_pairs=objective == "latency"), budget):
        # Building the program alone would overrun: the warm start (else greedy) answers.
        result = MilpResult("unknown", stats={"skipped": "the program is too large to build in "
                                                         f"{max(budget, 0.0):.3g} s"})
        if warm is None:
            warm = cheap_incumbent(problem, objective)
    elif objective == "latency":
        result = latency_milp(problem, sub, allowed, budget, hint,
                              None if warm is None else warm.order, progress, known)
    else:
        result = throughput_milp(problem, sub, allowed, budget, hint, progress, known)
    if result.status == "infeasible":
        raise InfeasibleError(
            f"no placement of {problem.num_ops} operators on {problem.device_names} fits the "
            "memory capacities, pins and colour classes (proven by the integer program); raise "
            "capacities, add devices, or relax pins and colour classes"
        )

    candidates = []
    if result.status in ("optimal", "feasible"):
        device_of = np.array([result.device_of[u] for u in range(problem.num_ops)])
        order = np.array(result.order) if objective == "latency" else None
        candidates.append((evaluate(problem, device_of, order).objective(objective), 0,
                           device_of, order))
    if warm is not None:
        order = warm.order if objective == "latency" else None
        candidates.append((evaluate(problem, warm.device_of, order).objective(objective), 1,
                           warm.device_of, order))
    if not candidates:
        raise InfeasibleError(
            f"no feasible placement of {problem.num_ops} operators on {problem.device_names} was "
            f"found within {time_limit:g} s (the program neither found one nor proved there is "
            "none; the memory capacities, pins or colour classes are tight); raise the time "
            "limit, the capacities, or relax pins"
        )
    value, source, device_of, order = min(candidates, key=lambda c: (c[0], c[1]))
    bound = max(result.bound, known)
    report(f"diviml-milp: {objective} {value:.6g}, bound {bound:.6g}", 1.0)
    return Placement(
        device_of=device_of,
        objective=objective,
        value=value,
        lower_bound=min(value, bound),
        method="diviml-milp",
        order=order,
        stats={
            "status": "optimal" if result.status == "optimal" else "time_limit",
            "optimal": result.status == "optimal",
            "solver": "cp-sat" if objective == "latency" else "scip",
            "solution_from": "program" if source == 0 else "warm_start",
            "warm_start_value": None if warm is None else float(
                evaluate(problem, warm.device_of,
                         warm.order if objective == "latency" else None).objective(objective)),
            "replicas": False,
            "seconds": time.perf_counter() - started,
            **result.stats,
        },
    )
