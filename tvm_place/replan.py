"""Re-planning from a run: a new placement solved on the costs a run measured.

:meth:`PlacedModule.rebalance <tvm_place.runtime.placed.PlacedModule.rebalance>` calls
:func:`rebalance`. The run's measurements (:mod:`tvm_place.runtime.feedback`) correct the costs
(:mod:`tvm_place.cost.correction`); the placement is then re-solved on them: by Tavarageri et
al.'s runtime rebalancing (:func:`tvm_place.solvers.comm_balanced.rebalance`, moving few
operators from the current placement; ``method="rebalance"``) or from scratch by a solver method
(default ``"dp"`` for throughput: the exact contiguous split, what a pipeline runs best).
"""

from __future__ import annotations

import dataclasses

from .cost.correction import corrected_compute, with_copy_overheads
from .errors import TvmPlaceError
from .evaluate import evaluate
from .graph import Placement, PlacementProblem
from .runtime.feedback import device_factors, measured_op_times, transfer_overheads
from .runtime.stats import StreamStats
from .solvers import comm_balanced, solve


def measured_problem(problem: PlacementProblem, placement: Placement,
                     stats: StreamStats) -> PlacementProblem:
    """``problem`` on the costs the run ``stats`` measured: each device's operators scaled by its
    measured / predicted compute, each copy half charged the run's excess per half on its device
    (what :func:`rebalance` re-solves). Priced on it, the placement's schedule is the run's own
    where the runtime ran the schedule the evaluator prices."""
    with_copies = with_copy_overheads(problem, transfer_overheads(problem, placement, stats))
    corrected, _ = corrected_compute(with_copies, placement.device_of,
                                     measured_op_times(problem, placement, stats))
    return corrected


def rebalance(problem: PlacementProblem, placement: Placement, stats: StreamStats,
              method: str | None = None, objective: str = "throughput",
              time_limit: float = 10.0) -> Placement:
    """A new placement from the measured stage and copy times.

    ``method="rebalance"``: :func:`tvm_place.solvers.comm_balanced.rebalance` from the current
    placement; a solver method name (``"dp"``, ``"auto"``, ...) re-solves the corrected problem
    from scratch; default ``"dp"`` for throughput, ``"rebalance"`` for latency. The result's
    ``stats`` hold the device factors, the copy overheads, and the old placement's value on the
    corrected costs (``value_before``).
    """
    if not stats.compute:
        raise TvmPlaceError("the run measured no stage; run a stream first (placed.run_stream)")
    if method is None:
        method = "dp" if objective == "throughput" else "rebalance"
    measured = measured_op_times(problem, placement, stats)
    overheads = transfer_overheads(problem, placement, stats)
    with_copies = with_copy_overheads(problem, overheads)
    current = placement
    if placement.objective != objective or placement.order is not None:
        value = evaluate(with_copies, placement.device_of).objective(objective)
        current = dataclasses.replace(placement, objective=objective, value=value,
                                      lower_bound=min(value, placement.lower_bound), order=None,
                                      stats=dict(placement.stats))
    if method == "rebalance":
        result = comm_balanced.rebalance(with_copies, current, measured, time_limit=time_limit)
    else:
        corrected = measured_problem(problem, placement, stats)
        result = solve(corrected, objective, method, time_limit)
        result.stats["value_before"] = evaluate(corrected, placement.device_of).objective(objective)
        result.stats["moved_ops"] = int((result.device_of != placement.device_of).sum())
    result.stats["device_factor"] = [float(f) for f in device_factors(problem, placement, stats)]
    result.stats["copy_overhead"] = [float(o) for o in overheads]
    result.stats["measured_max_stage"] = stats.max_stage_seconds
    return result
