"""FuseTransposedWeights: a matmul by a constant weight's transpose reads the weight as stored.

``nn.Linear`` (Relax's, torch's; ONNX's ``Gemm`` with ``transB``) stores its weight ``(out, in)``
and multiplies by its transpose, ``matmul(x, permute_dims(W))``. TVM's CPU pipeline legalizes that
``permute_dims`` into a kernel of constants, which constant folding evaluates at compile time: a
transposed copy of every weight matrix (BERT-base: 72 of them, 85 M floats, 340 MB and 0.5-0.8 s
of a compile that takes 1.5 s), which ``tvm.compile``'s default pipeline leaves to run on every
call instead. This pass hands each such pair to TVM's own ``FuseTransposeMatmul`` kernel,
``NT_matmul`` (``x @ W^T`` read from ``W`` in place), before legalization, so there is nothing to
fold. The kernel reads both operands along the reduction, where the folded ``W^T`` was read a
column at a time; untuned on a CPU it is the faster of the two (``docs/benchmarks.md``, issue 17).

Only transposes of constants: a transpose of a computed tensor (attention's keys) costs no
compile time and stays as it was, fused with its producer. TVM's ``FuseTransposeMatmul`` takes
both; its pattern check and kernel are used as they are, with the weight required constant.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl.pattern import is_const, is_op, wildcard
# TVM 0.27's FuseTransposeMatmul, in parts: its pattern's check (the transpose swaps the last two
# axes) and its rewrite of each matched pair into the NT_matmul kernel.
from tvm.relax.transform.fuse_transpose_matmul import _pattern, _TransposeMatmulFuser

#: The composite name FuseTransposeMatmul's rewrite looks for.
COMPOSITE = "transpose_matmul_fuse"


def _constant_weight_pattern():
    """``matmul(x, permute_dims(W))`` with ``W`` a constant, annotated as TVM's pattern is."""
    weight, x = is_const(), wildcard()
    transposed = is_op("relax.permute_dims")(weight)
    product = is_op("relax.matmul")(x, transposed)
    _, _, swaps_last_two_axes = _pattern()
    return product, {"o": product, "w": weight, "x": x, "wT": transposed}, swaps_last_two_axes


def fuse_transposed_weights(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every matmul by a transposed constant weight an ``NT_matmul`` kernel call;
    unchanged where there is none. Time: linear in the module's size."""
    product, annotations, check = _constant_weight_pattern()
    grouped = relax.transform.FuseOpsByPattern([(COMPOSITE, product, annotations, check)],
                                               bind_constants=False)(mod)
    if not any((f.attrs or {}).get("Composite") == COMPOSITE for _, f in grouped.functions_items()):
        return mod
    rewrite = _TransposeMatmulFuser(grouped)
    for gv, func in grouped.functions_items():
        if isinstance(func, relax.Function) and not (func.attrs or {}).get("Composite"):
            rewrite.builder_.update_func(gv, rewrite.visit_expr(func))
    rewritten = rewrite.builder_.get()
    # The composite functions are called by nothing now: drop them before legalization.
    return tvm.IRModule({gv: f for gv, f in rewritten.functions_items()
                         if (f.attrs or {}).get("Composite") != COMPOSITE},
                        attrs=rewritten.attrs, global_infos=rewritten.global_infos)


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.FuseTransposedWeights")
def FuseTransposedWeights(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 - a pass, named as TVM's
    """See :func:`fuse_transposed_weights`."""
    return fuse_transposed_weights(mod)
