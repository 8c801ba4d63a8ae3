r"""DiviML's lower bound, strengthened: bounds that know where each operator may go.

Reference: Y. Ghannane, M. S. Abdelfattah, "DiviML: A Module-based Heuristic for Mapping Neural
Networks onto Heterogeneous Platforms", arXiv 2308.00127 (2023), which grades heuristics against
``max(critical path with every operator on its fastest device, sum of fastest times /
#devices)``. :func:`device_aware_bound` computes valid strengthenings of both terms (unavoidable
transfers, heterogeneous devices and memory; proofs in its docstring), valid for every placement
without replicas, for either objective; :func:`subproblem_latency_bound` and
:func:`subproblem_throughput_bound` are the same terms over a part of a problem whose rest is
placed (DiviML's programs use them to stop early).

Time O(n D^2 + m D^2) besides one LP (GLOP) of ``n D`` variables, skipped where it cannot be built
in its time.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ...evaluate import MEMORY_TOLERANCE
from ...graph import PlacementProblem, check_objective
from ..budget import buildable
from ..grouping import feasible_devices


def device_aware_bound(problem: PlacementProblem, objective: str,
                       time_limit: float = math.inf) -> float:
    """A lower bound on the optimum of ``objective`` over every valid placement (and order).

    DiviML's bound is ``max(CP, W)``: ``CP`` the critical path with every operator at its fastest
    time, ``W`` the sum of fastest times over the number of devices (both in
    :mod:`~tvm_place.solvers.bounds.compute_only`). This function returns the maximum of the
    terms below, each at least as strong as its DiviML counterpart; ``A[u]`` is
    :func:`~tvm_place.solvers.grouping.feasible_devices` (support, pins, memory, colour classes),
    a superset of the devices ``u`` can take in a valid placement.

    1. *Largest operator*: every operator runs somewhere, and a device's load (throughput) and
       the makespan (latency) are at least its compute time: ``max_u min_{k in A[u]} p[u, k]``.
    2. *Weighted work* (latency and throughput), for any weights ``w >= 0`` with ``sum w = 1`` and
       memory prices ``mu >= 0``::

           LB(w, mu) = sum_u min_{k in A[u]} (w[k] p[u, k] + mu[k] m[u] + c_u(k))
                       - sum_k mu[k] capacity[k] (1 + tolerance)

       where ``c_u(k) = 0`` for latency. Proof: for a valid placement with device ``k(u)`` per
       operator, the objective ``z`` is at least every device's busy time (latency: a device runs
       its operators one at a time within the makespan; throughput: load >= compute), so
       ``z >= sum_k w[k] load[k] >= sum_u w[k(u)] p[u, k(u)] (+ transfers)``; adding
       ``sum_k mu[k] (used[k] - capacity[k] (1 + tolerance)) <= 0`` and taking each operator's
       minimum over ``A[u]`` gives ``LB``. With ``w = 1/D, mu = 0`` it is DiviML's ``W``; the
       weights used are the duals of the fractional assignment LP (GLOP), which makes it the LP
       bound (heterogeneous speeds and memory included); any dual error only weakens it, because
       it is recomputed from ``w`` and ``mu`` exactly as written.
       *Unavoidable transfers* (throughput): if ``u`` has a successor ``v`` with ``A[u]`` and
       ``A[v]`` disjoint, ``u``'s value must leave its device ``k``: the sender pays
       ``t[u, k]`` and some device ``e != k`` allowed to such a ``v`` receives it, paying
       ``t[u, e]``, once per value. So ``c_u(k) = w[k] t[u, k] + min_{e in R_u, e != k} w[e]
       t[u, e]`` (``R_u``: the devices allowed to those successors) is charged to distinct load
       terms for distinct ``u``, and ``LB`` stays valid.
    3. *Device-aware critical path* (latency): ``f(v, e) = p[v, e] + max_{u in pred(v)}
       min_{d in A[u]} (f(u, d) + delay(u, d, e))`` with ``delay = 0`` if ``d = e`` else
       ``t[u, d] + t[u, e]``; ``LB = max_v min_{e in A[v]} f(v, e)``. Proof, by induction in
       topological order: in any schedule of the evaluator's model, ``finish(v) >= f(v, k(v))``:
       ``v`` starts no earlier than each input arrives, ``finish(u) + delay(u, k(u), k(v)) >=
       f(u, k(u)) + delay >= min_d (...)``, then runs ``p[v, k(v)]``. The makespan is at least
       every finish. With all delays zero it is DiviML's ``CP``; it adds every transfer that
       support, pins, memory or colour classes make unavoidable.

    Within ``time_limit`` seconds (about: the LP gets a share and is skipped where it cannot be
    built in it; the critical path stops at the deadline with the part computed, still valid as
    each ``f`` is): a weaker bound, never an invalid one. Time O(n D^2 + m D^2) besides the LP.

    Raises :class:`InfeasibleError` (from :func:`~tvm_place.solvers.grouping.feasible_devices`)
    if some operator has no device.
    """
    check_objective(objective)
    deadline = time.perf_counter() + time_limit
    allowed = feasible_devices(problem)
    p = np.where(allowed, problem.compute_time, np.inf)
    best = max(float(p.min(axis=1).max()),
               _weighted_work(problem, allowed, objective, 0.5 * time_limit))
    if objective == "latency":
        best = max(best, device_critical_path(problem, allowed, problem.graph.topological_order,
                                              deadline=deadline))
    return best


def device_critical_path(problem: PlacementProblem, allowed: np.ndarray, ops, inputs=None,
                         input_finish=None, ready=None, deadline: float = math.inf) -> float:
    """Term 3 of :func:`device_aware_bound` (the device-aware critical path) over the operators
    ``ops`` (``allowed[u]``: the devices ``u`` may take, ``(n, D)`` bool), with ``inputs`` (producers outside
    ``ops``, each with its device), their ``input_finish`` times and the devices' ``ready``
    times. Past ``deadline`` (``time.perf_counter()``) the path stops at the operators timed so
    far: each ``f`` bounds its operator's finish alone, so the maximum so far is a valid bound."""
    transfer = problem.transfer_time
    n_devices = problem.num_devices
    inputs = inputs or {}
    input_finish = input_finish or {}
    same = np.eye(n_devices, dtype=bool)
    ready0 = np.zeros(n_devices) if ready is None else np.asarray(ready, dtype=float)
    position = np.empty(problem.num_ops, dtype=np.int64)
    position[problem.graph.topological_order] = np.arange(problem.num_ops)
    ops = [int(u) for u in ops]
    inside = set(ops)
    f: dict[int, np.ndarray] = {}
    latest = 0.0
    for step, v in enumerate(sorted(ops, key=position.__getitem__)):
        if step % 1024 == 0 and time.perf_counter() > deadline:
            break
        arrival = ready0.copy()
        for u in problem.graph.predecessors[v]:
            delays = np.where(same, 0.0, transfer[u][:, None] + transfer[u][None, :])
            if u in inside:
                # arrive[d, e] = f(u, d) + delay(u, d, e); rows of devices u may not use stay inf.
                arrival = np.maximum(arrival, (f[u][:, None] + delays).min(axis=0))
            elif u in inputs:
                arrival = np.maximum(arrival, input_finish.get(u, 0.0) + delays[inputs[u]])
        f[v] = np.where(allowed[v], problem.compute_time[v] + arrival, np.inf)
        latest = max(latest, float(f[v].min()))
    return latest


def subproblem_latency_bound(problem: PlacementProblem, sub, choices,
                             deadline: float = math.inf) -> float:
    """:func:`device_critical_path` over a :class:`tvm_place.solvers.diviml.Subproblem` ``sub``
    (its operators, inputs' arrivals and devices' ready times), and DiviML's work term over it:
    each device is busy at most the makespan, so ``sum of fastest times / D`` bounds it."""
    allowed = np.zeros((problem.num_ops, problem.num_devices), dtype=bool)
    for u in sub.ops:
        allowed[u, choices[u]] = True
    latest = device_critical_path(problem, allowed, sub.ops, sub.inputs, sub.input_finish,
                                  sub.ready, deadline)
    fastest = [min(problem.compute_time[u, k] for k in choices[u]) for u in sub.ops]
    return max(latest, float(sum(fastest)) / problem.num_devices)


def subproblem_throughput_bound(problem: PlacementProblem, sub, choices) -> float:
    """DiviML's work terms over a :class:`tvm_place.solvers.diviml.Subproblem` ``sub`` with its
    ``background`` loads: the bottleneck is at least
    the largest background, the mean of (background + fastest times) over the devices, and for
    each operator the least of (background + its time) over its devices."""
    n_devices = problem.num_devices
    background = (np.zeros(n_devices) if sub.background is None
                  else np.asarray(sub.background, dtype=float))
    fastest = [min(problem.compute_time[u, k] for k in choices[u]) for u in sub.ops]
    single = max((min(background[k] + problem.compute_time[u, k] for k in choices[u])
                  for u in sub.ops), default=0.0)
    return max(float(background.max()), (float(background.sum()) + float(sum(fastest))) / n_devices,
               float(single))


def _weighted_work(problem: PlacementProblem, allowed: np.ndarray, objective: str,
                   time_limit: float = math.inf) -> float:
    w, mu = _work_duals(problem, allowed, time_limit)
    capacity = problem.capacity
    finite = np.isfinite(capacity)
    mu = np.where(finite, mu, 0.0)
    p = problem.compute_time
    cost = np.where(allowed, w[None, :] * np.where(allowed, p, 0.0)
                    + mu[None, :] * problem.memory[:, None], np.inf)
    edges = problem.graph.edges
    if objective == "throughput" and len(edges):
        transfer = problem.transfer_time
        # The receivers of each value that must leave its device (edges whose ends share no
        # device), gathered in NumPy: a Python pass over every edge took seconds at scale.
        src, dst = edges[:, 0], edges[:, 1]
        apart = ~(allowed[src] & allowed[dst]).any(axis=1)
        receivers_of = np.zeros_like(allowed)
        np.logical_or.at(receivers_of, src[apart], allowed[dst[apart]])
        senders = np.flatnonzero(receivers_of.any(axis=1))
        if senders.size:
            # min over the receivers e != k of w[e] t[u, e], for every k at once: the least
            # receiver's cost, or the second least where the least is k itself.
            recv = np.where(receivers_of[senders], w[None, :] * transfer[senders], np.inf)
            by_cost = np.argsort(recv, axis=1)
            rows = np.arange(senders.size)
            least = recv[rows, by_cost[:, 0]]
            second = recv[rows, by_cost[:, 1]] if recv.shape[1] > 1 else np.full_like(least, np.inf)
            other = np.where(np.arange(recv.shape[1])[None, :] == by_cost[:, :1],
                             second[:, None], least[:, None])
            charge = w[None, :] * transfer[senders] + np.where(np.isfinite(other), other, 0.0)
            cost[senders] += np.where(allowed[senders], charge, 0.0)
    total = float(cost.min(axis=1).sum())
    total -= float((mu[finite] * capacity[finite] * (1 + MEMORY_TOLERANCE)).sum())
    # Guard the float sums against rounding up.
    return max(0.0, total * (1 - 1e-12))


def _work_duals(problem: PlacementProblem, allowed: np.ndarray,
                time_limit: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """Device weights ``w`` (summing to 1) and memory prices ``mu`` from the fractional
    assignment LP ``min T: sum_k y[u, k] = 1, sum_u p[u, k] y[u, k] <= T, memory``; uniform
    weights if the LP cannot be built and solved within ``time_limit``. Any ``w >= 0`` summing
    to 1, ``mu >= 0`` give a valid bound; the LP's make it tightest."""
    n_devices = problem.num_devices
    uniform = (np.full(n_devices, 1.0 / n_devices), np.zeros(n_devices))
    started = time.perf_counter()
    if not buildable(3 * problem.num_ops * n_devices, time_limit):
        return uniform
    try:
        from ortools.linear_solver import pywraplp
    except ImportError:  # pragma: no cover - ortools is a dependency
        return uniform
    lp = pywraplp.Solver.CreateSolver("GLOP")
    if lp is None:  # pragma: no cover
        return uniform
    T = lp.NumVar(0.0, lp.infinity(), "T")
    y = {}
    for u in range(problem.num_ops):
        row = lp.Constraint(1.0, 1.0)
        for k in np.flatnonzero(allowed[u]).tolist():
            y[u, k] = lp.NumVar(0.0, 1.0, "")
            row.SetCoefficient(y[u, k], 1.0)
    work, memory = [], []
    capacity = problem.capacity
    for k in range(n_devices):
        row = lp.Constraint(-lp.infinity(), 0.0)
        row.SetCoefficient(T, -1.0)
        for u in range(problem.num_ops):
            if (u, k) in y:
                row.SetCoefficient(y[u, k], float(problem.compute_time[u, k]))
        work.append(row)
        if math.isfinite(capacity[k]):
            row = lp.Constraint(-lp.infinity(), float(capacity[k]) * (1 + MEMORY_TOLERANCE))
            for u in range(problem.num_ops):
                if (u, k) in y:
                    row.SetCoefficient(y[u, k], float(problem.memory[u]))
            memory.append((k, row))
    lp.Minimize(T)
    if math.isfinite(time_limit):
        left = time_limit - (time.perf_counter() - started)
        if left <= 0.01:
            return uniform
        lp.SetTimeLimit(max(1, int(left * 1000)))
    if lp.Solve() not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return uniform
    w = np.array([abs(row.dual_value()) for row in work])
    if not np.isfinite(w).all() or w.sum() <= 0:
        return uniform
    w = w / w.sum()
    mu = np.zeros(n_devices)
    for k, row in memory:
        mu[k] = abs(row.dual_value())
    mu[~np.isfinite(mu)] = 0.0
    return w, mu
