"""tvm-place: automatic heterogeneous device placement for Apache TVM Relax modules.

>>> placed = tvm_place.compile(mod, targets=["llvm", "cuda"], objective="latency")
>>> out = placed(x)
>>> print(placed.report())
>>> placed.export("build/model")
"""

from .errors import (
    InfeasibleError,
    InvalidGraphError,
    InvalidPlacementError,
    InvalidTargetError,
    TvmPlaceError,
    UnknownMethodError,
    UnsupportedModelError,
    UntunedKernelWarning,
)
from . import cores as _cores  # noqa: F401 - reads the process's cores before TVM pins threads
from .graph import Device, OpGraph, OpNode, Placement, PlacementProblem
from .lazy import lazy_getattr
from .options import PlaceOptions

__version__ = "0.1.0"

# The TVM-facing parts load on first use, so plain-data work (solvers, `tvm-place solve`) does not
# pay for importing TVM.
_LAZY = {
    "compile": "compiler",
    "place": "compiler",
    "PlacedModule": "runtime.placed",
    "load": "runtime.placed:PlacedModule.load",
    "pipeline": "relax_pipeline",
    "devices_of": "relax_pipeline",
    "tune": "tuning",
    "convert_conv_layout": "passes",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "Device",
    "InfeasibleError",
    "InvalidGraphError",
    "InvalidPlacementError",
    "InvalidTargetError",
    "OpGraph",
    "OpNode",
    "PlaceOptions",
    "PlacedModule",
    "Placement",
    "PlacementProblem",
    "TvmPlaceError",
    "UnknownMethodError",
    "UnsupportedModelError",
    "UntunedKernelWarning",
    "compile",
    "convert_conv_layout",
    "devices_of",
    "load",
    "pipeline",
    "tune",
]
