"""Costs corrected by what a run measured (Tavarageri et al. 2019's runtime feedback).

A run measures each device's stage times and each copy's halves; a device whose operators ran
``f`` times slower than predicted gets every cost on it scaled by ``f`` (:func:`corrected_compute`),
and a fixed cost per copy half that the run paid beyond the predicted transfer time is added to
that device's transfer times (:func:`with_copy_overheads`). The corrected problem is what
re-planning (:mod:`tvm_place.replan`) and :func:`tvm_place.solvers.comm_balanced.rebalance` solve.

Plain data: no TVM, no runtime objects (the runtime turns its measurements into these arrays).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InvalidGraphError
from ..graph import PlacementProblem


def corrected_compute(problem: PlacementProblem, device_of, measured_compute_time):
    """``problem`` with compute times corrected by measurements, and the per-device factors.

    ``measured_compute_time`` is ``(n,)``: each operator's measured time on its device in
    ``device_of``, or ``(n, D)``: measured times per device; ``nan`` marks an operator not
    measured. Per device, the factor is measured / predicted over the operators measured there;
    a measured time replaces the prediction, every other finite cost on the device is scaled by
    the factor.
    """
    device_of = np.asarray(device_of, dtype=np.int64)
    n, num_devices = problem.num_ops, problem.num_devices
    measured = np.asarray(measured_compute_time, dtype=np.float64)
    if measured.shape == (n,):
        full = np.full((n, num_devices), np.nan)
        full[np.arange(n), device_of] = measured
        measured = full
    elif measured.shape != (n, num_devices):
        raise InvalidGraphError(
            f"measured_compute_time has shape {measured.shape}; expected ({n},) (each operator "
            f"on its current device) or ({n}, {num_devices}) (per device), nan where not measured"
        )
    predicted = problem.compute_time
    given = np.isfinite(measured) & np.isfinite(predicted)
    if (measured[given] < 0).any():
        raise InvalidGraphError("measured_compute_time holds a negative time")
    factor = np.ones(num_devices)
    for d in range(num_devices):
        rows = given[:, d]
        expected = predicted[rows, d].sum()
        if rows.any() and expected > 0:
            factor[d] = measured[rows, d].sum() / expected
    corrected = np.where(np.isfinite(predicted), predicted * factor[None, :], np.inf)
    corrected[given] = measured[given]
    return dataclasses.replace(problem, compute_time=corrected), factor


def with_copy_overheads(problem: PlacementProblem, overheads) -> PlacementProblem:
    """``problem`` with ``overheads[d]`` seconds added to every transfer time of device ``d``
    (the fixed cost of a copy half the run paid beyond the link model)."""
    overheads = np.asarray(overheads, dtype=np.float64)
    return dataclasses.replace(problem, transfer_time=problem.transfer_time + overheads[None, :])
