"""What the solver modules share: the objective check, progress reports, one-device placement,
and devices grouped into types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UnknownMethodError
from ..evaluate import MEMORY_TOLERANCE
from ..graph import PlacementProblem
from .bounds.compute_only import fastest_times, speed_shares

#: A progress callback receives a short message and, where known, the fraction done.
Progress = Callable[[str, float | None], None]


def require_objective(method: str, objective: str, objectives: tuple[str, ...],
                      hint: str = "use method='auto'") -> None:
    """Raise :class:`UnknownMethodError` unless ``method`` solves ``objective`` (one of
    ``objectives``); ``hint``: how to fix it."""
    if objective not in objectives:
        raise UnknownMethodError(
            f"method {method!r} solves {list(objectives)}, not {objective!r}; {hint}"
        )


def _ignore(message: str, fraction: float | None) -> None:
    """A progress callback that drops every report."""


def reporter(progress: Progress | None) -> Progress:
    """``progress``, or a callback that drops every report where there is none, so that a solver
    reports without checking for ``None`` each time."""
    return _ignore if progress is None else progress


def single_device(problem: PlacementProblem) -> np.ndarray | None:
    """Every operator on the one device where they run fastest together (both objectives: one
    device moves no data), if one may run and hold them all; ``None`` where none may. Time
    O(n D)."""
    fits = problem.allowed().all(axis=0) & (
        problem.memory.sum() <= problem.capacity * (1 + MEMORY_TOLERANCE)
    )
    if not fits.any():
        return None
    total = np.where(fits, np.where(np.isfinite(problem.compute_time), problem.compute_time, 0.0)
                     .sum(axis=0), np.inf)
    return np.full(problem.num_ops, int(total.argmin()), dtype=np.int64)


@dataclass
class DeviceTypes:
    """Devices no placement can tell apart (equal compute, transfer, capacity and allowed
    columns: :meth:`~tvm_place.graph.PlacementProblem.identical_devices`) as *types*, one column
    per type in the ``(n, T)`` arrays: what the contiguous programs (dp, slicegraph) count
    devices by.

    ``compute`` is 0 where the type may not run the operator (``allowed`` says so);
    ``cheapest[u]`` is ``u``'s least compute over the devices, and ``cheapest[u] <= share[t] *
    compute[u, t]`` wherever type ``t`` may run ``u``
    (:func:`~tvm_place.solvers.bounds.compute_only.speed_shares`).
    """

    devices: list[list[int]]
    compute: np.ndarray
    transfer: np.ndarray
    allowed: np.ndarray
    capacity: np.ndarray
    cheapest: np.ndarray
    share: np.ndarray

    @classmethod
    def of(cls, problem: PlacementProblem) -> "DeviceTypes":
        """The types of ``problem``'s devices; raises :class:`~tvm_place.errors.InfeasibleError`
        for an operator no device may run. Time O(n D)."""
        devices = problem.identical_devices()
        first = [ds[0] for ds in devices]
        allowed = problem.allowed()[:, first]
        cheapest = fastest_times(problem)
        return cls(
            devices=devices,
            compute=np.where(allowed, problem.compute_time[:, first], 0.0),
            transfer=problem.transfer_time[:, first],
            allowed=allowed,
            capacity=problem.capacity[first],
            cheapest=cheapest,
            share=speed_shares(problem, cheapest)[first],
        )

    @property
    def counts(self) -> np.ndarray:
        """How many devices each type has."""
        return np.array([len(ds) for ds in self.devices], dtype=np.int64)
