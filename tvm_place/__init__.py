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
from .graph import Device, OpGraph, OpNode, Placement, PlacementProblem

__version__ = "0.1.0"

# The TVM-facing parts load on first use, so plain-data work (solvers, `tvm-place solve`) does not
# pay for importing TVM.
_LAZY = {
    "compile": ("tvm_place.compiler", "compile"),
    "place": ("tvm_place.compiler", "place"),
    "PlacedModule": ("tvm_place.runtime.placed", "PlacedModule"),
    "load": ("tvm_place.runtime.placed", "PlacedModule.load"),
    "pipeline": ("tvm_place.relax_pipeline", "pipeline"),
    "devices_of": ("tvm_place.relax_pipeline", "devices_of"),
    "tune": ("tvm_place.tuning", "tune"),
    "convert_conv_layout": ("tvm_place.passes", "convert_conv_layout"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tvm_place' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    value = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value

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
    "UntunedKernelWarning",
    "compile",
    "convert_conv_layout",
    "devices_of",
    "load",
    "pipeline",
    "tune",
]
