"""Roofline cost model: an operator is bound by compute or by memory traffic, whichever is slower.

``time = launch overhead + max(FLOPs / (peak * compute efficiency),
bytes / (bandwidth * memory efficiency))``, with every number from the device's profile.
"""

from __future__ import annotations

from ..graph import OpNode


class AnalyticalCostModel:
    """Predict operator times from FLOPs and bytes against a device profile (no measurement)."""

    name = "analytical"

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        profile = device.profile
        compute_seconds = node.flops / (profile.peak_gflops * 1e9 * profile.compute_efficiency)
        memory_seconds = node.bytes_accessed / (
            profile.memory_bandwidth_gbs * 1e9 * profile.memory_efficiency
        )
        return profile.launch_overhead_us * 1e-6 + max(compute_seconds, memory_seconds), self.name
