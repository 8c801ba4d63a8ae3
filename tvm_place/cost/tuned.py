"""Costs of the kernels that will run: tuned times from a MetaSchedule database, else a fallback.

Where the tuning database holds a record for a kernel on a device's target, the kernel will be
built with that record's schedule (:class:`tvm_place.passes.tuning_database.ApplyTunedSchedules`),
so its cost is the run time MetaSchedule measured for it. Other kernels are costed by the fallback
model (measured untuned, or analytical), and the source of every number says which.
"""

from __future__ import annotations

from ..graph import OpNode


class TunedCostModel:
    """Tuned kernel times from ``database`` where it has them, ``fallback``'s otherwise."""

    def __init__(self, database, fallback):
        self.database = database
        self.fallback = fallback
        self.name = f"tuned+{fallback.name}"

    def prepare_devices(self, devices, progress=None) -> None:
        """The fallback's preparation (a calibration on first use, the per-device choice)."""
        if hasattr(self.fallback, "prepare_devices"):
            self.fallback.prepare_devices(devices, progress)

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        seconds = self.database.seconds(prim_func, device.target)
        if seconds is not None:
            return seconds, "tuned (database)"
        return self.fallback.op_time(prim_func, node, device)
