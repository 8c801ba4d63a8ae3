"""Every lower bound of the solvers, and :func:`best_bound`, the one every answer is graded by.

- :mod:`.compute_only`: transfers relaxed to zero (work, speed shares, critical path); O(n D + m),
  valid for every placement, replicas included;
- :mod:`.device_aware`: DiviML's bound strengthened (each operator's feasible devices, the
  assignment LP's weights, unavoidable transfers, a device-aware critical path); valid for every
  placement without replicas;
- :mod:`.cut`: max-load with transfers charged, one max-flow per group; every placement without
  replicas (over contiguous ones on groups with contiguity cycles merged);
- :mod:`.contiguous`: bounds on the best contiguous split (combinatorial, MIP relaxations, the
  chain model, the heaviest block), which only the contiguous methods may claim;
- :mod:`.result`: :class:`BoundResult`, what a bound run under a time limit reports.

:func:`tvm_place.solvers.solve` raises every answer's bound to :func:`best_bound` for its method's
search space, so every placement states the same kind of gap whatever made it.
"""

from __future__ import annotations

import math
import time

from ...graph import PlacementProblem
from .compute_only import (
    critical_path_bound,
    fastest_times,
    lower_bound,
    replicated_times,
    speed_shares,
    work_bound,
)
from .cut import cut_bound
from .device_aware import device_aware_bound
from .result import BoundResult

def best_bound(problem: PlacementProblem, objective: str, replicas: bool, time_limit: float) -> float:
    """The best bound on ``objective`` over every placement (``replicas``: placements with
    replica groups too) that the bounds valid there prove within about ``time_limit`` seconds,
    each stopping at its share with a weaker, still valid, bound: :func:`lower_bound`; for
    latency :func:`device_aware_bound` (without replicas); for throughput without replicas
    :func:`cut_bound` on the groups every placement may be taken to keep whole.

    Why the device-aware bound only for latency (measured, the 2-core machine under load 7):
    on 198 small random problems (3-6 operators, memory caps, colour classes, unsupported
    operators) it raised the latency bound in 118 (median +21%, up to 3x: transfers that
    support, pins or memory make unavoidable on the critical path) and the throughput bound in
    none; on the 16 dnn-partitioning throughput workloads it equals :func:`lower_bound`; its LP
    weights only pay off where they fit in the time (layered 10,000 operators with pins and caps:
    +76% after 12 s, nothing in 0.01 s)."""
    started = time.perf_counter()
    bound = lower_bound(problem, objective, replicas)
    if replicas:
        return bound
    if objective == "latency":
        return max(bound, device_aware_bound(problem, objective, time_limit))
    cut = cut_bound(problem, max(0.0, time_limit - (time.perf_counter() - started)),
                    floor=bound).value
    return max(bound, cut) if math.isfinite(cut) else bound


__all__ = [
    "BoundResult",
    "best_bound",
    "critical_path_bound",
    "cut_bound",
    "device_aware_bound",
    "fastest_times",
    "lower_bound",
    "replicated_times",
    "speed_shares",
    "work_bound",
]
