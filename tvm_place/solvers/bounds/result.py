"""The record of a bound that runs under a time limit: its value and how it was obtained."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BoundResult:
    """A proven lower bound and how it was obtained.

    ``value``: valid lower bound on the optimum it bounds (``0.0`` when nothing was proven,
    ``inf`` when the relaxation is infeasible). ``status``: ``"optimal"`` (every model solved to
    optimality), ``"time_limit"`` (some model stopped early: its dual bound was used),
    ``"partial"`` (some positions never ran; the others' bound is used), ``"target"`` (stopped on
    reaching a placement's value), ``"skipped"``, ``"infeasible"``. ``mips``: models solved.
    """

    value: float
    status: str
    seconds: float
    mips: int = 0
    details: dict = field(default_factory=dict)
