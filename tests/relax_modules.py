"""Small Relax modules that several test files build, and TVM's own unplaced run of a module
(the reference placed runs are compared with)."""

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax


def matmul_module(sizes: list[int], legalized: bool = True) -> tvm.IRModule:
    """One independent matmul per size (``x @ x`` of an ``n x n`` input each): legalized to TIR
    (one kernel per matmul, what CollectOpGraph reads), or the Relax operators as built."""
    bb = relax.BlockBuilder()
    inputs = [relax.Var(f"x{n}", relax.TensorType((n, n), "float32")) for n in sizes]
    with bb.function("main", inputs):
        with bb.dataflow():
            outputs = [bb.emit(relax.op.matmul(x, x)) for x in inputs]
            result = bb.emit_output(relax.Tuple(outputs))
        bb.emit_func_output(result)
    return relax.transform.LegalizeOps()(bb.get()) if legalized else bb.get()


def unsplit(mod: tvm.IRModule, entry: str = "main") -> Callable[..., np.ndarray]:
    """TVM's own build of `mod` for the CPU, nothing placed or split: ``unsplit(mod)(*arrays)``
    runs `entry` on NumPy arrays and returns its output as NumPy."""
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return lambda *arrays: vm[entry](*[tvm.runtime.tensor(a) for a in arrays]).numpy()
