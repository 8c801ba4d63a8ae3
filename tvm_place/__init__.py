"""tvm-place: automatic heterogeneous device placement for Apache TVM Relax modules.

>>> placed = tvm_place.compile(mod, targets=["llvm", "cuda"], objective="latency")
>>> out = placed(x)
>>> print(placed.report())
>>> placed.export("build/model")
"""

from .compile import compile
from .errors import (
    InfeasibleError,
    InvalidGraphError,
    InvalidPlacementError,
    InvalidTargetError,
    TvmPlaceError,
    UnknownMethodError,
    UnsupportedModelError,
)
from .graph import Device, OpGraph, OpNode, Placement, PlacementProblem
from .runtime.placed import PlacedModule

__version__ = "0.1.0"

load = PlacedModule.load

__all__ = [
    "Device",
    "InfeasibleError",
    "InvalidGraphError",
    "InvalidPlacementError",
    "InvalidTargetError",
    "OpGraph",
    "OpNode",
    "PlacedModule",
    "Placement",
    "PlacementProblem",
    "TvmPlaceError",
    "UnknownMethodError",
    "UnsupportedModelError",
    "compile",
    "load",
]
