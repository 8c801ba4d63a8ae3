"""Relax module passes of tvm-place (installed as ``tvm_place.passes``).

Each works alone inside a user's own ``tvm.ir.transform.Sequential``:

- :func:`prepare_pipeline`: TVM's lowering to fused TIR operators (what the others read);
- :class:`CollectOpGraph`: analysis, the operator graph of ``main`` with FLOPs, bytes and pins;
- :class:`AnnotatePlacement`: a placement written as vdevices;
- :class:`SplitByDevice`: per-device stage functions joined by explicit ``R.to_vdevice`` copies;
- :func:`build_stages`: one compiled executable per device (its stages as named functions), for
  its own target, and the plan;
- :func:`convert_conv_layout`: convolutions in channels-last layout, which tunes faster on CPUs;
- :func:`training_module`: a training step of any inference module (loss, every weight's
  gradient), its backward operators marked so that placement keeps each with its forward one;
- :mod:`.multi_device`: the split module as one multi-device VM module instead (stages inlined,
  constants copied to their device, each kernel bound to its device's target), for
  ``tvm_place.pipeline``.
"""

import tvm_ffi

from tvm_place import errors as _errors

# Errors raised inside a pass cross TVM's FFI; registering them keeps their Python type, so a user
# catching tvm_place.TvmPlaceError around tvm.transform.Sequential still catches them.
for _error in (
    _errors.InvalidGraphError,
    _errors.InvalidPlacementError,
    _errors.InvalidTargetError,
    _errors.UnsupportedModelError,
    _errors.InfeasibleError,
):
    tvm_ffi.register_error(_error)

from .annotate import AnnotatePlacement, annotate_placement
from .build import StagePlan, build_stages, compile_module, device_module, stage_plan
from .collect import CollectedGraph, CollectOpGraph, collect_op_graph, prepare_pipeline
from .layout import convert_conv_layout
from .split import SplitByDevice, split_by_device
from .training import training_module

__all__ = [
    "AnnotatePlacement",
    "CollectOpGraph",
    "CollectedGraph",
    "SplitByDevice",
    "StagePlan",
    "annotate_placement",
    "build_stages",
    "collect_op_graph",
    "compile_module",
    "convert_conv_layout",
    "device_module",
    "prepare_pipeline",
    "split_by_device",
    "stage_plan",
    "training_module",
]
