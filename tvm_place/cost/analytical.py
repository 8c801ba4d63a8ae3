"""Roofline cost model: an operator is bound by compute or by memory traffic, whichever is slower.

``time = launch overhead + max(FLOPs / (peak * compute efficiency),
bytes / (bandwidth * memory efficiency))``, with every number from the device's profile; where
the profile gives the operator's class its own efficiencies and launch overhead (a calibrated
profile, :mod:`tvm_place.cost.calibrate`), those.
"""

from __future__ import annotations

import re

from ..graph import OpNode
from ..schemas import OPERATOR_CLASSES

#: Operator names (TVM's legalized Relax operators) of each class but ``elementwise``, the rest.
#: A fused kernel's name joins its operators' names (``fused_conv2d3_add2_relu1``); the first
#: class in this order that any of them belongs to is the kernel's (a convolution fused with its
#: bias and activation is a convolution).
_CLASS_OPERATORS = {
    "conv": r"conv\d*d(?:_transpose)?",
    "matmul": r"(?:batch_)?matmul|dense|einsum",
    "pooling": r"(?:adaptive_)?(?:max|avg)_pool\d*d",
    "reduction": r"sum|mean|max|min|prod|variance|std|argmax|argmin|cumsum|log_softmax|softmax"
                 r"|layer_norm|rms_norm|group_norm|batch_norm|instance_norm",
    "data_movement": r"reshape|transpose|permute_dims|concatenate|concat|split|take|gather"
                     r"|gather_nd|scatter_elements|scatter_nd|strided_slice|dynamic_strided_slice"
                     r"|squeeze|expand_dims|broadcast_to|flatten|tile|repeat|flip|layout_transform"
                     r"|copy",
}
_CLASS_PATTERNS = {
    op_class: re.compile(rf"(?:^|_)(?:{names})\d*(?=_|$)")
    for op_class, names in _CLASS_OPERATORS.items()
}
assert set(_CLASS_OPERATORS) | {"elementwise"} == set(OPERATOR_CLASSES)


def operator_class(kind: str) -> str:
    """The class of an operator (one of :data:`tvm_place.schemas.OPERATOR_CLASSES`) from its
    kind, the PrimFunc name ``CollectOpGraph`` gives it: ``fused_conv2d3_add2_relu1`` -> conv,
    ``fused_reshape_transpose`` -> data_movement, ``fused_multiply_add_relu`` -> elementwise.
    Time: linear in the name's length."""
    name = kind[len("fused_"):] if kind.startswith("fused_") else kind
    for op_class, pattern in _CLASS_PATTERNS.items():
        if pattern.search(name):
            return op_class
    return "elementwise"


def roofline_seconds(node: OpNode, profile) -> float:
    """The roofline time of ``node`` on a device of ``profile``, with its class's figures."""
    compute_efficiency, memory_efficiency, launch_us = profile.figures(operator_class(node.kind))
    compute_seconds = node.flops / (profile.peak_gflops * 1e9 * compute_efficiency)
    memory_seconds = node.bytes_accessed / (profile.memory_bandwidth_gbs * 1e9 * memory_efficiency)
    return launch_us * 1e-6 + max(compute_seconds, memory_seconds)


class AnalyticalCostModel:
    """Predict operator times from FLOPs and bytes against a device profile (no measurement)."""

    name = "analytical"

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        return roofline_seconds(node, device.profile), self.name
