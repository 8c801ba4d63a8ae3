"""Lower bounds on the optimum of a placement problem, valid for every placement.

Both bounds relax transfers to zero and let each operator run on its fastest allowed device:

- throughput (max-load): no device can carry less than the heaviest single operator, and the
  devices together carry at least the sum of every operator's fastest time (DiviML's
  "sum of fastest op times / #devices");
- latency (makespan): the longest path through the graph with every operator at its fastest
  allowed time (DiviML's critical-path bound), and the same work bound as above.

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


def work_bound(problem: PlacementProblem) -> float:
    fastest = fastest_times(problem)
    return float(max(fastest.max(), fastest.sum() / problem.num_devices))


def critical_path_bound(problem: PlacementProblem) -> float:
    fastest = fastest_times(problem)
    finish = np.zeros(problem.num_ops)
    for u in problem.graph.topological_order:
        preds = problem.graph.predecessors[u]
        finish[u] = fastest[u] + (finish[preds].max() if preds else 0.0)
    return float(finish.max())


def lower_bound(problem: PlacementProblem, objective: str) -> float:
    """The best of the bounds above for ``objective`` (``"throughput"`` or ``"latency"``)."""
    if objective == "throughput":
        return work_bound(problem)
    return max(work_bound(problem), critical_path_bound(problem))
