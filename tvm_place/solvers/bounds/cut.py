r"""The cut bound on the max-load of every placement without replicas: transfers charged.

With the least costs over the devices, ``c*[g] = min_{d fits g} c[g, d]`` for each group ``g``
of operators kept together (:mod:`tvm_place.solvers.grouping`) and ``t*[u] = min_d t[u, d]``,
let ``f(S)`` be the evaluator's load rule for a set ``S`` of groups with those costs::

    f(S) = sum_{g in S} c*[g] + sum_{u in S, some consumer not in S} t*[u]
                              + sum_{u not in S, some consumer in S} t*[u]

For each group ``g``: ``OPT >= min { f(S) : g in S }``, so ``OPT >= max_g min_{S ∋ g} f(S)``.
*Validity.* In an optimal placement let ``S`` be the groups on ``g``'s device ``d``: its load is
``load_d(S) >= f(S)`` term by term (each cost at least its least over devices), and ``<= OPT``.
The argument uses no contiguity, only that groups stay whole: it holds over every placement for
the groups of :func:`~tvm_place.solvers.grouping.contract` without contiguity cycles, and over
contiguous placements with them. Not valid with replicas (a replicated operator's work is split).

*Computing it.* ``min_{S ∋ g} f(S)`` is a minimum s-t cut (``S`` the source side): an arc
``h -> sink`` of capacity ``c*[h]`` per group; per sender ``u`` (of group ``g(u)``, with
consumers in groups ``H_u``) a node ``a_u`` with arcs ``h -> a_u`` (infinite, ``h in H_u``) and
``a_u -> g(u)`` of capacity ``t*[u]`` (cut exactly when some consumer group is in ``S`` and
``g(u)`` is not: the receive, paid once however many consumers), and a node ``b_u`` with
``g(u) -> b_u`` of capacity ``t*[u]`` and ``b_u -> h`` (infinite; cut exactly when ``g(u)`` is
in ``S`` and some consumer group is not: the send); ``source -> g`` is infinite.
One max-flow per group (OR-Tools' ``SimpleMaxFlow``, integer capacities: costs rounded down to
``scale / CUT_RESOLUTION``, which only lowers the bound); groups are taken in decreasing
order of ``f({g})``, an upper bound on their cut, and the search stops when that falls to the
best cut found or the time is up (a valid bound either way). ``O(G)`` max-flows on ``O(G + n)``
nodes and ``O(P)`` arcs (``P`` sending pairs). It is strong where a group cannot shed its
transfers by taking its neighbours along (large activations around cheap operators: DenseNet's
concatenations), and it never exceeds ``f(V)``: total work.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ...graph import PlacementProblem
from ..grouping import Groups, contract
from .result import BoundResult

#: Costs are rounded down to multiples of ``unit = scale / CUT_RESOLUTION`` for the integer
#: max-flow, which only lowers the bound.
CUT_RESOLUTION = 1_000_000


def cut_bound(problem: PlacementProblem, time_limit: float, groups: Groups | None = None,
              floor: float = 0.0) -> BoundResult:
    """``max_g min_{S ∋ g} f(S)`` (module docstring) within ``time_limit`` seconds (the groups
    not reached then are left out: still a valid bound). ``groups``: the groups kept together,
    by default :func:`~tvm_place.solvers.grouping.contract` without contiguity cycles (valid for
    every placement); ``floor``: a bound already held (groups whose single-group load is no
    higher are skipped; the value returned is at least about ``floor``, rounded down to the
    cut's unit). ``value`` is ``inf`` (status ``"infeasible"``) where some group fits no
    device."""
    started = time.perf_counter()
    groups = contract(problem, contiguous=False) if groups is None else groups
    compute = groups.least_compute(problem)
    if not np.isfinite(compute).all():
        return BoundResult(math.inf, "infeasible", time.perf_counter() - started)
    transfer = problem.transfer_time.min(axis=1)
    if not len(groups.comm) or not (transfer > 0).any():
        # Nothing to cut: f(S) is the compute of S, least for S = {g}.
        return BoundResult(max(float(compute.max(initial=0.0)), floor), "optimal",
                           time.perf_counter() - started)
    scale = max(compute.max(initial=0.0), compute.sum() / problem.num_devices, floor)
    scale = scale if scale > 0 else float(transfer.max())
    value, status, flows = max_min_cut(groups.group_of, compute, transfer, groups.comm,
                                       scale / CUT_RESOLUTION, started + time_limit, floor)
    return BoundResult(value, status, time.perf_counter() - started, 0, {"max_flows": flows})


def max_min_cut(group_of: np.ndarray, compute: np.ndarray, transfer: np.ndarray, comm: np.ndarray,
                unit: float, deadline: float, floor: float = 0.0) -> tuple[float, str, int]:
    """``max_g min_{S ∋ g} f(S)`` over groups of operators kept together (module docstring).

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
