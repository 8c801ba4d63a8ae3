"""Lower bounds on the optimum of a placement problem, valid for every placement.

Both bounds relax transfers to zero and let each operator run on its fastest allowed device:

- throughput (max-load): no device can carry less than the heaviest single operator, and the
  devices together carry at least the sum of every operator's fastest time (DiviML's
  "sum of fastest op times / #devices");
- latency (makespan): the longest path through the graph with every operator at its fastest
  allowed time (DiviML's critical-path bound), and the same work bound as above.

With replicas (DiviML's data parallelism, throughput) an operator replicated over a group ``S``
costs each member ``p[u, e] / |S|`` per input, so the single-operator term becomes
``min over S of max_{e in S} p[u, e] / |S|`` (``S`` the ``k`` fastest allowed devices, for the
best ``k``); the sum term still holds, since every input runs each operator once somewhere.

Time O(n * D + m).

Throughput also has a bound that charges transfers (:func:`cut_bound`): a device holding an
operator ``u`` carries at least ``min { f(S) : u in S }``, ``f`` the load rule with each cost at
its least over the devices, and that minimum is a minimum s-t cut; the bound is its largest
value over the operators (one max-flow each, within a time budget). The construction and its
proof are in :mod:`tvm_place.solvers.archer_bounds` (section 5), which runs the same
computation on its contracted groups. Not valid with replicas (a replicated operator's work is
split). Time O(n) max-flows on O(n) nodes and O(m) arcs, pruned (below).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import InfeasibleError
from ..graph import PlacementProblem


def fastest_times(problem: PlacementProblem) -> np.ndarray:
    """Each operator's shortest compute time over the devices it may run on."""
    allowed = problem.allowed()
    stranded = np.flatnonzero(~allowed.any(axis=1))
    if stranded.size:
        name = problem.graph.nodes[int(stranded[0])].name
        raise InfeasibleError(
            f"operator {name!r} can run on no device: it is unsupported on every device of "
            f"{problem.device_names} or pinned to one that does not support it; add a device "
            "that supports it or change the pin"
        )
    return np.where(allowed, problem.compute_time, np.inf).min(axis=1)


def work_bound(problem: PlacementProblem, replicas: bool = False) -> float:
    fastest = fastest_times(problem)
    heaviest = replicated_times(problem).max() if replicas else fastest.max()
    return float(max(heaviest, fastest.sum() / problem.num_devices))


def replicated_times(problem: PlacementProblem) -> np.ndarray:
    """Each operator's least per-input time on any member of a replica group of its allowed
    devices: ``min_k (k-th fastest time) / k``."""
    fastest_first = np.sort(np.where(problem.allowed(), problem.compute_time, np.inf), axis=1)
    return (fastest_first / np.arange(1, problem.num_devices + 1)).min(axis=1)


def critical_path_bound(problem: PlacementProblem) -> float:
    # Python floats in lists: a NumPy scalar step per operator took seconds on 200,000.
    fastest = fastest_times(problem).tolist()
    finish = [0.0] * problem.num_ops
    predecessors = problem.graph.predecessors
    for u in problem.graph.topological_order.tolist():
        preds = predecessors[u]
        finish[u] = fastest[u] + (max([finish[p] for p in preds]) if preds else 0.0)
    return float(max(finish))


def lower_bound(problem: PlacementProblem, objective: str, replicas: bool = False) -> float:
    """The best of the cheap bounds above for ``objective`` (``"throughput"`` or ``"latency"``);
    ``replicas``: valid for placements with replica groups too."""
    if objective == "throughput":
        return work_bound(problem, replicas)
    return max(work_bound(problem), critical_path_bound(problem))


def best_bound(problem: PlacementProblem, objective: str, replicas: bool, time_limit: float) -> float:
    """:func:`lower_bound`, and for throughput without replicas also :func:`cut_bound` within
    ``time_limit`` seconds: the bound every placement the product returns is graded by."""
    bound = lower_bound(problem, objective, replicas)
    if objective == "throughput" and not replicas:
        bound = max(bound, cut_bound(problem, time_limit))
    return bound


#: Costs are rounded down to multiples of ``unit = scale / CUT_RESOLUTION`` for the integer
#: max-flow, which only lowers the bound.
CUT_RESOLUTION = 1_000_000


def max_min_cut(group_of: np.ndarray, compute: np.ndarray, transfer: np.ndarray, comm: np.ndarray,
                unit: float, deadline: float, floor: float = 0.0) -> tuple[float, str, int]:
    """``max_g min_{S ∋ g} f(S)`` over groups of operators kept together (archer_bounds, 5).

    ``group_of[u]``: ``u``'s group; ``compute[g]``: the group's least compute; ``transfer[u]``:
    the least transfer time of ``u``'s output; ``comm``: unique pairs ``(u, h)`` where ``u`` has a
    consumer in group ``h != group_of[u]``. Groups are tried in decreasing order of ``f({g})``
    (an upper bound on their cut) until that falls to the best cut found or ``deadline``
    (``time.perf_counter()``) passes; ``floor``: a bound already held. Returns ``(bound,
    status, max-flows run)``, status ``"optimal"`` or ``"time_limit"`` (a valid bound either way).
    """
    from ortools.graph.python import max_flow

    G = len(compute)
    work = np.floor(compute / unit).astype(np.int64)
    cost = np.floor(transfer / unit).astype(np.int64)
    infinite = int(work.sum() + 2 * cost.sum() + 1)
    flow = max_flow.SimpleMaxFlow()
    source, sink = G, G + 1
    # The network is built in NumPy (O(n + m), one call per arc kind): a Python loop per arc
    # took longer than the bound's whole time share on 200,000 operators.
    pairs = np.unique(np.asarray(comm, dtype=np.int64).reshape(-1, 2), axis=0)
    pairs = pairs[cost[pairs[:, 0]] > 0]
    senders, pair_sender = np.unique(pairs[:, 0], return_inverse=True)
    pair_sender = pair_sender.reshape(-1)
    receive = G + 2 + 2 * np.arange(senders.size)  # one receive and one send node per sender
    send = receive + 1
    own = group_of[senders]
    single = work.copy()
    np.add.at(single, own, cost[senders])
    np.add.at(single, pairs[:, 1], cost[pairs[:, 0]])
    with_work = np.flatnonzero(work > 0)
    tails = np.concatenate([receive, own, pairs[:, 1], send[pair_sender], with_work])
    heads = np.concatenate([own, send, receive[pair_sender], pairs[:, 1],
                            np.full(with_work.size, sink)])
    # cut: a consumer in S and u not (receive -> g), u in S and a consumer not (g -> send)
    capacities = np.concatenate([cost[senders], cost[senders],
                                 np.full(2 * len(pairs), infinite), work[with_work]])
    if len(tails):
        flow.add_arcs_with_capacity(tails.astype(np.int32), heads.astype(np.int32),
                                    capacities.astype(np.int64))
    entry = flow.add_arcs_with_capacity(np.full(G, source, dtype=np.int32),
                                        np.arange(G, dtype=np.int32), np.zeros(G, dtype=np.int64))
    entry = np.asarray(entry).tolist()
    best = int(math.floor(floor / unit)) if floor > 0 else 0
    status, flows = "optimal", 0
    for g in np.argsort(-single, kind="stable").tolist():
        if single[g] <= best:
            break
        if time.perf_counter() > deadline:
            status = "time_limit"
            break
        flow.set_arc_capacity(entry[g], infinite)
        if flow.solve(source, sink) != flow.OPTIMAL:
            status = "time_limit"
            break
        best = max(best, int(flow.optimal_flow()))
        flows += 1
        flow.set_arc_capacity(entry[g], 0)
    return best * unit, status, flows


def cut_bound(problem: PlacementProblem, time_limit: float) -> float:
    """The max-min-cut bound on the max-load of every placement without replicas (module
    docstring), for the colour classes (operators that share a device), within ``time_limit``
    seconds; at least :func:`work_bound`."""
    known = work_bound(problem)
    if problem.num_ops == 0 or not (problem.transfer_time > 0).any():
        return known
    deadline = time.perf_counter() + time_limit
    group_of = np.empty(problem.num_ops, dtype=np.int64)
    for g, members in enumerate(problem.colocation_groups()):
        group_of[members] = g
    num_groups = int(group_of.max()) + 1
    compute = np.zeros((num_groups, problem.num_devices))
    np.add.at(compute, group_of, np.where(problem.allowed(), problem.compute_time, np.inf))
    least = compute.min(axis=1)
    if not np.isfinite(least).all():
        return known  # a class no device can hold: solve() reports that as infeasible
    edges = problem.graph.edges
    comm = np.stack([edges[:, 0], group_of[edges[:, 1]]], axis=1) if len(edges) else np.zeros((0, 2))
    comm = np.unique(comm[group_of[comm[:, 0]] != comm[:, 1]], axis=0) if len(comm) else comm
    unit = (known if known > 0 else float(problem.transfer_time.max())) / CUT_RESOLUTION
    value, _, _ = max_min_cut(group_of, least, problem.transfer_time.min(axis=1), comm, unit,
                              deadline, floor=known)
    return max(known, value)
