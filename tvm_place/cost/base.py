"""The cost-model interface and the assembly of a PlacementProblem's cost arrays."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import tvm

from ..graph import OpNode


class CostModel(Protocol):
    """Predicts the time of one operator on one device.

    ``op_time`` returns ``(seconds, source)`` where ``source`` names where the number came from
    (``"analytical"``, ``"measured"``, ``"cache"``), so reports can say which costs are guesses.
    """

    name: str

    def op_time(self, prim_func: tvm.tirx.PrimFunc, node: OpNode, device) -> tuple[float, str]: ...


def compute_costs(
    collected, devices: Sequence, model: CostModel, progress=None, external_costs=None
) -> tuple[np.ndarray, list[list[str]]]:
    """``compute_time[u, d]`` for every operator and device, and the source of each number.

    Operators running the same kernel (one PrimFunc at the same sizes: ``collected.kernels``)
    are costed once per device (a cost model may tell devices of one profile apart, e.g. after
    calibration on each). External calls are costed by :func:`tvm_place.cost.external.external_time`
    (``external_costs``: the user's times). A model with ``prepare_devices(devices, progress)``
    gets it called first (:class:`~tvm_place.cost.calibrate.CalibratedCostModel` calibrates there).
    """
    from .external import external_time

    if hasattr(model, "prepare_devices"):  # e.g. calibration on a device's first use
        model.prepare_devices(devices, progress)
    graph = collected.graph
    compute_time = np.zeros((len(graph), len(devices)))
    sources = [["" for _ in devices] for _ in range(len(graph))]
    known: dict[tuple[str, int], tuple[float, str]] = {}
    total = len(graph) * len(devices)
    for u, (node, callee) in enumerate(zip(graph.nodes, collected.callees)):
        for d, device in enumerate(devices):
            key = (collected.kernel_keys[u], d)
            if key not in known:
                if progress is not None:
                    progress(f"costing {callee} on {device.name}", (u * len(devices) + d) / total)
                known[key] = (external_time(collected.externals[u], device, external_costs)
                              if u in collected.externals else
                              model.op_time(collected.kernels[u], node, device))
            compute_time[u, d], sources[u][d] = known[key]
    return compute_time, sources


def transfer_costs(graph, devices: Sequence) -> np.ndarray:
    """``transfer_time[u, d]``: device ``d`` sending or receiving ``u``'s output over its link."""
    output_bytes = np.array([node.output_bytes for node in graph.nodes])
    return np.stack([device.profile.link.transfer_seconds(output_bytes) for device in devices], axis=1)
