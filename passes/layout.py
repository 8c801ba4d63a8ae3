"""Channels-last convolutions: TVM's ``ConvertLayout`` with the layouts that tune best on CPUs.

Reads any Relax module; writes one whose ``nn.conv2d`` calls compute in ``NHWC`` with ``HWIO``
kernels (constant weights are transposed at compile time; ``main``'s signature is unchanged: a
``layout_transform`` at the input and back at the output, and elementwise operators between
convolutions follow the new layout, so few transforms remain).

Why: TVM 0.27 builds CPU convolutions from the loop nest of their layout, and MetaSchedule finds
much faster schedules for channels-last ones: on this 2-core AVX2 machine, a 3x3 convolution of
256 channels at 14x14 tuned with 32 trials ran in 3.7-3.9 ms as NHWC/HWIO, 5.5-6.2 ms as
NHWC/OHWI, and 6.5 ms as NCHW/OIHW (PyTorch eager: 1.5 ms). Traps of TVM 0.27's pass, avoided
here: the kernel layout ``"default"`` fails inside the pass (``invalid factor size 0``).
"""

from __future__ import annotations

import tvm
from tvm import relax

from tvm_place.errors import ModelConfigError

#: Data layout -> the ``ConvertLayout`` request for ``nn.conv2d`` (``None``: leave as built).
CONV_LAYOUTS = {"NCHW": None, "NHWC": ["NHWC", "HWIO"]}


def convert_conv_layout(mod: tvm.IRModule, layout: str = "NHWC") -> tvm.IRModule:
    """``mod`` with its 2-D convolutions in ``layout`` (one of :data:`CONV_LAYOUTS`); ``"NCHW"``
    returns ``mod`` unchanged (the registry models are built NCHW)."""
    if layout not in CONV_LAYOUTS:
        raise ModelConfigError(f"unknown convolution layout {layout!r}; use one of {list(CONV_LAYOUTS)}")
    request = CONV_LAYOUTS[layout]
    if request is None:
        return mod
    return relax.transform.ConvertLayout({"relax.nn.conv2d": request})(mod)
