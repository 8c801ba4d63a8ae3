"""Cost models: per-target operator time (analytical roofline, calibrated, learned, learned
and adapted to another CPU, measured,
a saved snapshot, and the default: the best of them available per device),
link transfer time, and the correction of costs by what a run measured.

The models that need TVM load on first use, so plain-data work (solvers, profiles, links, cost
correction) does not pay for importing TVM.
"""

from ..lazy import lazy_getattr

_LAZY = {
    "AdaptedCostModel": "adapted",
    "AnalyticalCostModel": "analytical",
    "AutoCostModel": "auto",
    "CalibratedCostModel": "calibrate",
    "calibrate": "calibrate",
    "CostModel": "base",
    "compute_costs": "base",
    "transfer_costs": "base",
    "CostCache": "measured",
    "LearnedCostModel": "learned",
    "MeasuredCostModel": "measured",
    "DeviceProfile": "profiles",
    "LinkProfile": "profiles",
    "device_profile": "profiles",
    "link_profile": "profiles",
    "profile_names": "profiles",
    "Snapshot": "snapshot",
    "TunedCostModel": "tuned",
}


__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = sorted(_LAZY)
