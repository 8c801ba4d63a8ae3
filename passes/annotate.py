"""AnnotatePlacement: write a placement into a fused Relax module as vdevices."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tvm

from tvm_place.errors import InvalidPlacementError

from ._ir import (
    bindings,
    is_operator,
    main_function,
    rebuild_function,
    replace_main,
    vdevices_of_targets,
)


def annotate_placement(
    mod: tvm.IRModule, device_of: Sequence[int], targets: Sequence[tvm.target.Target]
) -> tvm.IRModule:
    """Put operator ``k`` of ``main`` (k-th ``call_tir`` or external call, as CollectOpGraph
    numbers them) on
    ``targets[device_of[k]]``. See :class:`AnnotatePlacement`."""
    main = main_function(mod)
    num_ops = sum(1 for b in bindings(main) if is_operator(b.value))
    device_of = np.asarray(device_of, dtype=np.int64)
    if device_of.shape != (num_ops,):
        raise InvalidPlacementError(
            f"the placement has {device_of.size} entries but `main` has {num_ops} operators: the "
            "placement was made for another module (re-run the solver on this one)"
        )
    if num_ops and (device_of.min() < 0 or device_of.max() >= len(targets)):
        raise InvalidPlacementError(
            f"the placement uses device {int(device_of.max())}, but only {len(targets)} targets "
            "were given"
        )
    vdevices = vdevices_of_targets(targets)
    annotated = rebuild_function(main, lambda k: vdevices[device_of[k]])
    result = replace_main(mod, annotated)
    result.update_global_info("vdevice", vdevices)
    return result


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.AnnotatePlacement")
class AnnotatePlacement:
    """Write a placement into the module.

    Reads: ``main``'s ``call_tir`` operators, numbered in binding order as CollectOpGraph numbers
    them, and ``device_of`` (a device index per operator, e.g. ``Placement.device_of``).
    Writes: the module's ``"vdevice"`` global info (one VDevice per target; a repeated kind gets the
    next id), the vdevice of every operator's output type; ``R.hint_on_device`` bindings are
    removed, since CollectOpGraph turned them into pins the placement already honours.
    """

    def __init__(self, device_of: Sequence[int], targets: Sequence[tvm.target.Target]):
        self.device_of = list(device_of)
        self.targets = list(targets)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return annotate_placement(mod, self.device_of, self.targets)
