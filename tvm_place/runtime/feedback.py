"""Measured feedback: what the evaluator predicted beside what a real run measured
(:func:`compare`), and the run's measurements in the form cost correction reads.

A run measures each stage's time on its worker and each copy's two halves
(:class:`~tvm_place.runtime.stats.StreamStats`). From them:

- compute: per device, the measured compute time divided by the predicted one is that device's
  factor (:func:`device_factors`); each operator's measured time is its predicted time scaled by
  its device's factor (:func:`measured_op_times`);
- copies: per device, the mean excess of a measured send or receive over its predicted transfer
  time (a fixed cost per copy: dispatch, hand-offs) is that device's copy overhead
  (:func:`transfer_overheads`; devices that copied nothing get the mean of the others), so a
  re-solve does not cut more edges than the runtime can afford.

Correcting the costs is :mod:`tvm_place.cost.correction`'s job; re-planning from them,
:mod:`tvm_place.replan`'s. The runtime imports no solver.
"""

from __future__ import annotations

import math

import numpy as np

from ..evaluate import evaluate, stream_interval
from ..graph import Placement, PlacementProblem
from .stats import StreamStats


def _ms(seconds: float) -> str:
    return "-" if not math.isfinite(seconds) else f"{seconds * 1e3:.2f}"


def _per_second(seconds: float) -> str:
    return f"{1.0 / seconds:.2f}" if seconds > 0 and math.isfinite(seconds) else "-"


def device_factors(problem: PlacementProblem, placement: Placement, stats: StreamStats) -> np.ndarray:
    """Measured / predicted compute time per device (1 where a device ran nothing)."""
    predicted = evaluate(problem, placement).compute
    measured = stats.device_times()["compute"]
    factor = np.ones(problem.num_devices)
    for d in range(problem.num_devices):
        if predicted[d] > 0 and measured[d] > 0:
            factor[d] = measured[d] / predicted[d]
    return factor


def transfer_overheads(problem: PlacementProblem, placement: Placement, stats: StreamStats) -> np.ndarray:
    """Per device: mean seconds a measured copy half (send or receive) took beyond the predicted
    transfer times; devices that copied nothing get the mean over those that did."""
    evaluation = evaluate(problem, placement)
    stream = stream_interval(problem, placement, stats.depth or 1)
    measured = stats.device_times()
    halves = np.zeros(problem.num_devices)
    for record in stats.copies.values():
        if record.source_device is not None and record.export_seconds:
            halves[record.source_device] += 1
        if record.device is not None and record.import_seconds:
            halves[record.device] += 1
    excess = (measured["transfer_in"] + measured["transfer_out"]
              - evaluation.transfer_in - evaluation.transfer_out)
    known = halves > 0
    overhead = np.zeros(problem.num_devices)
    overhead[known] = np.maximum(0.0, excess[known] / halves[known])
    if known.any():
        overhead[~known] = overhead[known].mean()
    return overhead


def measured_op_times(problem: PlacementProblem, placement: Placement, stats: StreamStats) -> np.ndarray:
    """``(n,)``: each operator's time on its device as the run measured it (its device's measured
    stage time shared out in proportion to the predicted times)."""
    factor = device_factors(problem, placement, stats)
    ops = np.arange(problem.num_ops)
    device_of = placement.device_of
    return problem.compute_time[ops, device_of] * factor[device_of]


def compare(problem: PlacementProblem, placement: Placement, stats: StreamStats,
            latency: float | None = None) -> str:
    """A table of predicted (evaluator) against measured times, per device and overall."""
    evaluation = evaluate(problem, placement)
    stream = stream_interval(problem, placement, stats.depth or 1)
    measured = stats.device_times()
    stages = {d: [s for s, dev in stats.stage_device.items() if dev == d] for d in range(problem.num_devices)}
    for group in placement.replicas:  # members run their group's stages
        for member in group[1:]:
            stages[member] = stages[group[0]]
    lines = [
        "predicted (evaluator, per input) vs measured (median per input of a stream of "
        f"{stats.num_inputs}), milliseconds",
        f"  {'device':<7} {'stages':<18} {'compute':>17} {'copies in':>15} {'copies out':>15} "
        f"{'load (stage time)':>19}  {'measured/predicted':>18}",
        f"  {'':<7} {'':<18} {'pred':>8} {'meas':>8} {'pred':>7} {'meas':>7} {'pred':>7} {'meas':>7} "
        f"{'pred':>9} {'meas':>9}",
    ]
    for d, device in enumerate(problem.devices):
        if not stages[d] and evaluation.load[d] == 0:
            continue
        ratio = measured["compute"][d] / evaluation.compute[d] if evaluation.compute[d] > 0 else math.nan
        lines.append(
            f"  {device.name:<7} {','.join(stages[d]) or '-':<18} "
            f"{_ms(evaluation.compute[d]):>8} {_ms(measured['compute'][d]):>8} "
            f"{_ms(evaluation.transfer_in[d]):>7} {_ms(measured['transfer_in'][d]):>7} "
            f"{_ms(evaluation.transfer_out[d]):>7} {_ms(measured['transfer_out'][d]):>7} "
            f"{_ms(evaluation.load[d]):>9} {_ms(measured['load'][d]):>9}  "
            f"{'-' if not math.isfinite(ratio) else f'{ratio:.2f}x':>18}"
        )
    host = measured["host_in"].sum() + measured["host_out"].sum()
    lines += [
        f"  model inputs/outputs to and from the host (not in the evaluator): {_ms(host)} ms per input",
        f"  max-stage time   predicted {_ms(evaluation.max_load)} ms, measured {_ms(stats.max_stage_seconds)} ms"
        f" (steady-state time per input {_ms(stats.interval)} ms)",
        f"  per input        predicted {_ms(stream)} ms in steady state with {stats.depth or 1} in "
        f"flight (the stream's schedule), measured {_ms(stats.interval)} ms",
        f"  throughput       predicted {_per_second(stream)} inputs/s, measured "
        f"{_per_second(stats.interval)} inputs/s steady-state, {stats.throughput:.2f} inputs/s overall",
    ]
    if latency is not None:
        lines.append(
            f"  latency          predicted {_ms(evaluation.latency)} ms, measured {_ms(latency)} ms"
        )
    return "\n".join(lines)
