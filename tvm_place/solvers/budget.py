"""Keeping to a time limit on large problems: what every method shares.

Two rules (issue 15, "time limits at scale"):

- a solver's model (CP-SAT, HiGHS, SCIP) is built through Python calls, one or more per variable
  and constraint; on 10,000 operators building one can take longer than the whole time limit.
  :func:`buildable` says whether a model of ``items`` variables and constraints can be built in
  half of the time it would get; a method skips one that cannot (it could prove nothing) and keeps
  its other answer;
- a method that has nothing better when its time runs out returns
  :func:`tvm_place.solvers.baselines.cheap_incumbent`, the ``greedy`` baseline's placement
  (linear time), rather than overrunning or failing; and a warm start from HEFT
  (:func:`tvm_place.solvers.baselines.heft_or_greedy`) is taken only where HEFT's own passes fit
  the time (:func:`heft_pass_seconds`).

Nothing here runs a solver, so every module may import it.
"""

from __future__ import annotations

from ..graph import PlacementProblem

#: Seconds building a model takes per variable or constraint (Python calls into the solvers' APIs:
#: 12 s for about 800,000 of them, measured on the 2-core development machine under load),
#: rounded up.
MODEL_SECONDS_PER_ITEM = 2e-5


#: Seconds of one HEFT pass (ranks, placement, schedule) per (operator + edge) x device, in
#: Python: about 6 s for 200,000 operators, 310,000 edges and 8 devices under load, rounded up.
HEFT_SECONDS_PER_ITEM = 1.5e-6
#: HEFT passes estimated under this many seconds run whatever the limit (a negligible overrun
#: for a much better warm start than greedy's).
HEFT_ALWAYS_SECONDS = 0.05


def buildable(items: int, seconds: float) -> bool:
    """Whether a model of about ``items`` variables and constraints can be built in half of
    ``seconds``: one that cannot leaves its solver no time to prove anything."""
    return items * MODEL_SECONDS_PER_ITEM <= 0.5 * seconds


def model_items(problem: PlacementProblem, device_pairs: bool = False) -> int:
    """The size of a placement program over every operator: a variable per (operator, device)
    and a constraint per (edge, device), as the exact methods' programs have at least;
    ``device_pairs``: a constraint per (edge, device pair) instead, as the latency programs
    have (a transfer delay when the two ends sit on different devices)."""
    D = problem.num_devices
    return problem.num_ops * D + len(problem.graph.edges) * (D * D if device_pairs else D)


def heft_pass_seconds(problem: PlacementProblem) -> float:
    """About how long HEFT's passes (or ETF's schedule) take on ``problem``, local search apart."""
    return HEFT_SECONDS_PER_ITEM * (problem.num_ops + len(problem.graph.edges)) * problem.num_devices
