"""Small Relax models for the runtime benchmark (scripts/bench_runtime.py), shared with its
baseline run of an older tvm-place, so both run the very same module."""

from __future__ import annotations

import numpy as np
from tvm import relax


def softmax_chain(size: int = 2048, count: int = 4):
    """``count`` softmaxes over a ``size x size`` float32 tensor (16 MB at 2048)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((size, size), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for _ in range(count):
                h = bb.emit(relax.op.nn.softmax(h))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get()


def dense_branches(rows: int = 256, width: int = 1024, depth: int = 4, seed: int = 0):
    """Two independent towers of ``depth`` dense+relu layers over the same input, joined by the
    scores of every pair of rows (``a @ b.T``): equal work, small values between them (``rows x
    width`` float32: 1 MB at the defaults). A join by an elementwise add would fuse into one
    tower's last layer and make the towers unequal."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, width), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            towers = []
            for _ in range(2):
                h = x
                for _ in range(depth):
                    weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype("float32")
                    h = bb.emit(relax.op.nn.relu(relax.op.matmul(h, relax.const(weight))))
                towers.append(h)
            out = bb.emit_output(relax.op.matmul(towers[0], relax.op.permute_dims(towers[1])))
        bb.emit_func_output(out)
    return bb.get()
