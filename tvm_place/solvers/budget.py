"""Keeping to a time limit on large problems: what every method shares.

Two rules (issue 15, "time limits at scale"):

- a solver's model (CP-SAT, HiGHS, SCIP) is built through Python calls, one or more per variable
  and constraint; on 10,000 operators building one can take longer than the whole time limit.
  :func:`buildable` says whether a model of ``items`` variables and constraints can be built in
  half of the time it would get; a method skips one that cannot (it could prove nothing) and keeps
  its other answer;
- a method that has nothing better when its time runs out returns :func:`cheap_incumbent`, the
  ``greedy`` baseline's placement (linear time), rather than overrunning or failing; and a warm
  start from HEFT (:func:`heft_or_greedy`) is taken only where HEFT's own passes fit the time.
"""

from __future__ import annotations

from ..errors import InfeasibleError
from ..graph import Placement, PlacementProblem

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


def cheap_incumbent(problem: PlacementProblem, objective: str) -> Placement | None:
    """The ``greedy`` placement (time O(n D + m), plus a packing search where filling in order
    runs out of memory), or ``None`` where it finds none."""
    from .baselines import greedy

    try:
        return greedy(problem, objective, 0.0)
    except InfeasibleError:
        return None


def heft_or_greedy(problem: PlacementProblem, search_seconds: float,
                   within: float) -> Placement | None:
    """HEFT's placement with ``search_seconds`` of local search where its passes fit in
    ``within`` seconds, else :func:`cheap_incumbent`'s (latency); ``None`` where neither finds
    one. The warm start of the exact latency methods and DiviML's."""
    from . import heft

    if heft_pass_seconds(problem) <= max(within, HEFT_ALWAYS_SECONDS):
        try:
            return heft.solve(problem, "latency", search_seconds)
        except InfeasibleError:
            pass
    return cheap_incumbent(problem, "latency")


def heft_pass_seconds(problem: PlacementProblem) -> float:
    """About how long HEFT's passes (or ETF's schedule) take on ``problem``, local search apart."""
    return HEFT_SECONDS_PER_ITEM * (problem.num_ops + len(problem.graph.edges)) * problem.num_devices
