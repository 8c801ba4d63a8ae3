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
"""

from __future__ import annotations

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
    fastest = fastest_times(problem)
    finish = np.zeros(problem.num_ops)
    for u in problem.graph.topological_order:
        preds = problem.graph.predecessors[u]
        finish[u] = fastest[u] + (finish[preds].max() if preds else 0.0)
    return float(finish.max())


def lower_bound(problem: PlacementProblem, objective: str, replicas: bool = False) -> float:
    """The best of the bounds above for ``objective`` (``"throughput"`` or ``"latency"``);
    ``replicas``: valid for placements with replica groups too."""
    if objective == "throughput":
        return work_bound(problem, replicas)
    return max(work_bound(problem), critical_path_bound(problem))
