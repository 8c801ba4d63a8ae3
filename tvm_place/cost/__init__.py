"""Cost models: per-target operator time (analytical roofline, measured) and link transfer time."""

from .analytical import AnalyticalCostModel
from .base import CostModel, compute_costs, transfer_costs
from .measured import CostCache, MeasuredCostModel
from .profiles import DeviceProfile, LinkProfile, device_profile, link_profile, profile_names

__all__ = [
    "AnalyticalCostModel",
    "CostCache",
    "CostModel",
    "DeviceProfile",
    "LinkProfile",
    "MeasuredCostModel",
    "compute_costs",
    "device_profile",
    "link_profile",
    "profile_names",
    "transfer_costs",
]
