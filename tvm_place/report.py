"""Plain-text report of a placement: per device, per operator, objective, bound and gap."""

from __future__ import annotations

import math
from collections import Counter

from .evaluate import evaluate
from .graph import Placement, PlacementProblem


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3f} {unit}"
    return f"{value * 1e9:.1f} ns"


def _bytes(value: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def device_traffic(problem: PlacementProblem, placement: Placement, evaluation=None) -> dict:
    """Per device: bytes and copies received and sent per input (each value crossing to a device
    once, as the evaluator counts it; a value sent once however many devices receive it)."""
    evaluation = evaluation or evaluate(problem, placement)
    size = [node.output_bytes for node in problem.graph.nodes]
    traffic = {key: [0] * problem.num_devices for key in ("copies_in", "copies_out")}
    traffic.update({key: [0.0] * problem.num_devices for key in ("bytes_in", "bytes_out")})
    for u, e in evaluation.copies:
        traffic["copies_in"][e] += 1
        traffic["bytes_in"][e] += size[u]
    for u in sorted({u for u, _ in evaluation.copies}):
        d = int(placement.device_of[u])
        traffic["copies_out"][d] += 1
        traffic["bytes_out"][d] += size[u]
    return traffic


def cost_sources_by_device(device_names, cost_sources: list[list[str]]) -> dict[str, dict[str, int]]:
    """Per device, how many operators each source priced (``{"cpu:0": {"learned": 52}}``): which
    cost model priced the device, over every operator, placed there or not."""
    return {name: dict(Counter(row[d] for row in cost_sources).most_common())
            for d, name in enumerate(device_names)}


def format_report(
    problem: PlacementProblem,
    placement: Placement,
    cost_sources: list[list[str]] | None = None,
    num_stages: int | None = None,
    num_copies: int | None = None,
    shape_values: dict[str, int] | None = None,
    fallbacks: list[str] | None = None,
) -> str:
    """The report ``PlacedModule.report()`` prints; every number is recomputed by the evaluator."""
    evaluation = evaluate(problem, placement)
    lines = [
        f"tvm-place placement of {problem.name!r}: {problem.num_ops} operators on "
        f"{problem.num_devices} devices",
        f"  objective      {placement.objective} (method {placement.method}, "
        f"{placement.stats.get('seconds', 0.0):.2f} s, search space: "
        f"{placement.stats.get('search_space', 'all')} placements)",
        f"  value          {_seconds(placement.value)}",
        f"  lower bound    {_seconds(placement.lower_bound)}  gap {placement.gap:.2%}"
        + ("  (proven optimal in its search space)" if placement.gap == 0 else ""),
        f"  predicted      latency {_seconds(evaluation.latency)}, max-stage time "
        f"{_seconds(evaluation.max_load)} (throughput {1.0 / evaluation.max_load:.2f} inputs/s)"
        if evaluation.max_load > 0
        else f"  predicted      latency {_seconds(evaluation.latency)}",
        *(f"  replicas       {[problem.device_names[d] for d in group]} run the same operators "
          "on alternate inputs" for group in placement.replicas),
        *(f"  fallback       {line}" for line in fallbacks or []),
        *([f"  shapes         costed at {', '.join(f'{k}={v}' for k, v in shape_values.items())} "
           "(symbolic: the stages run at any size)"] if shape_values else []),
        f"  copies         {len(evaluation.copies)} operator outputs cross devices"
        + (f"; the plan has {num_copies} copies with inputs" if num_copies is not None else "")
        + (f", {num_stages} stages" if num_stages is not None else ""),
        "",
        f"  {'device':<8} {'profile':<11} {'ops':>4} {'compute':>11} {'in':>10} {'out':>10} "
        f"{'load':>11} {'memory used / capacity':>26} {'bytes in':>10} {'bytes out':>10} "
        f"{'copies in/out':>13}",
    ]
    counts = [int((placement.device_of == d).sum()) for d in range(problem.num_devices)]
    traffic = device_traffic(problem, placement, evaluation)
    for d, device in enumerate(problem.devices):
        capacity = "unlimited" if not math.isfinite(device.memory_capacity) else _bytes(device.memory_capacity)
        lines.append(
            f"  {device.name:<8} {device.profile or '-':<11} {counts[d]:>4} "
            f"{_seconds(evaluation.compute[d]):>11} {_seconds(evaluation.transfer_in[d]):>10} "
            f"{_seconds(evaluation.transfer_out[d]):>10} {_seconds(evaluation.load[d]):>11} "
            f"{_bytes(evaluation.memory[d]) + ' / ' + capacity:>26} "
            f"{_bytes(traffic['bytes_in'][d]):>10} {_bytes(traffic['bytes_out'][d]):>10} "
            f"{traffic['copies_in'][d]:>6}/{traffic['copies_out'][d]:<6}"
        )
    if cost_sources:
        placed_sources = Counter(cost_sources[u][int(d)] for u, d in enumerate(placement.device_of))
        lines.append("  cost sources   " + ", ".join(
            f"{count} {source}" for source, count in sorted(placed_sources.items(), key=lambda x: -x[1])
        ) + " (of the operators as placed)")
        lines.append("  priced by      " + "; ".join(
            f"{name} " + ", ".join(f"{count} {source}" for source, count in sources.items())
            for name, sources in cost_sources_by_device(problem.device_names, cost_sources).items()
        ) + " (every operator, per device)")
    lines += ["", f"  {'#':>4} {'operator':<44} {'device':<8} {'time':>11}  cost source"]
    for u, node in enumerate(problem.graph.nodes):
        d = int(placement.device_of[u])
        source = cost_sources[u][d] if cost_sources else ""
        lines.append(
            f"  {u:>4} {node.name[:44]:<44} {problem.devices[d].name:<8} "
            f"{_seconds(problem.compute_time[u, d]):>11}  {source}"
        )
    return "\n".join(lines)
