"""Cost models: per-target operator time (analytical roofline, measured, a saved snapshot) and link
transfer time."""

from .analytical import AnalyticalCostModel
from .base import CostModel, compute_costs, transfer_costs
from .measured import CostCache, MeasuredCostModel
from .profiles import DeviceProfile, LinkProfile, device_profile, link_profile, profile_names
from .snapshot import Snapshot
from .tuned import TunedCostModel

__all__ = [
    "AnalyticalCostModel",
    "CostCache",
    "CostModel",
    "DeviceProfile",
    "LinkProfile",
    "MeasuredCostModel",
    "Snapshot",
    "TunedCostModel",
    "compute_costs",
    "device_profile",
    "link_profile",
    "profile_names",
    "transfer_costs",
]
