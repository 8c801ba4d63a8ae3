"""Lower bounds from compute alone, valid for every placement: the cheap bounds every answer has.

They relax transfers to zero and let each operator run on its fastest allowed device:

- throughput (max-load): no device can carry less than the heaviest single operator, and the
  devices together carry at least the sum of every operator's fastest time (DiviML's
  "sum of fastest op times / #devices"), sharpened for slow devices: device ``d`` runs any
  operator ``u`` at least ``fastest[u] / share[d]`` long, ``share[d] = max_u fastest[u] /
  compute[u, d]`` (over the operators it may run, ``<= 1``), so ``sum_d share[d] load[d] >=
  sum_u fastest[u]`` and the max-load is at least ``sum_u fastest[u] / sum_d share[d]``
  (:func:`work_bound`; the bound dp used alone for a contiguous split it stopped early);
- latency (makespan): the longest path through the graph with every operator at its fastest
  allowed time (DiviML's critical-path bound), and the same work bound as above.

With replicas (DiviML's data parallelism, throughput) an operator replicated over a group ``S``
costs each member ``p[u, e] / |S|`` per input, so the single-operator term becomes
``min over S of max_{e in S} p[u, e] / |S|`` (``S`` the ``k`` fastest allowed devices, for the
best ``k``); the sum terms still hold, since every input runs each operator once somewhere and
a member of a group ``S`` runs ``p[u, d] / |S| >= fastest[u] / (|S| share[d])`` of it.

Time O(n * D + m).
"""

from __future__ import annotations

import numpy as np

from ...errors import InfeasibleError
from ...graph import PlacementProblem


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
    """The heaviest operator and the work shared out over the devices' speed shares (module
    docstring); ``replicas``: valid for placements with replica groups too."""
    fastest = fastest_times(problem)
    heaviest = replicated_times(problem).max() if replicas else fastest.max()
    total = float(fastest.sum())
    capacity = float(speed_shares(problem, fastest).sum())
    return float(max(heaviest, total / capacity if capacity > 0 else 0.0))


def speed_shares(problem: PlacementProblem, fastest: np.ndarray) -> np.ndarray:
    """``(D,)``: ``share[d] = max fastest[u] / compute[u, d]`` over the operators ``d`` may run
    at a positive time (0 where none): ``fastest[u] <= share[d] * compute[u, d]`` for every
    operator ``d`` may run."""
    allowed = problem.allowed() & (problem.compute_time > 0)
    ratio = np.divide(fastest[:, None], problem.compute_time,
                      out=np.zeros(problem.compute_time.shape), where=allowed)
    return ratio.max(axis=0, initial=0.0)


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
