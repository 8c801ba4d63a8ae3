"""Constant folding as TVM's CPU pipeline does it, without a build per folded kernel.

TVM's ``relax.transform.FoldConstant`` evaluates each ``call_tir`` whose arguments are all
constants by building its PrimFunc alone, an LLVM module per kernel: about 90 ms each on the
2-core development machine, and ResNet-50 folds 108 of them (its batch-norm parameters), 9 s of
a compile whose TVM build takes 5. :class:`FoldConstantCalls` folds the same calls from one module
holding every kernel it evaluates, built once; TVM's ``FoldConstant`` runs after it and folds
whatever else it folds (then nothing of this kind is left for it to build).

Most of those kernels only reshape a constant (ResNet-50's 106 of 107: each batch norm's scale
and shift viewed as ``(1, C, 1, 1)``), which needs neither a kernel nor a build: the bytes stay
as they are. :class:`FoldConstantReshapes`, before legalization, gives each such call its value
directly, so it is neither legalized nor built; the module after folding is the same, constants
bit for bit, but for names: a kernel that still reshapes a computed tensor may be numbered lower
(``reshape2`` -> ``reshape``), the folded reshapes no longer taking the names before it.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ._ir import CALL_TIR, is_call_to

#: Operators whose output is their input's bytes under another static shape: folding one of a
#: constant is a copy, no kernel.
RESHAPES = tuple(tvm.ir.Op.get(f"relax.{name}") for name in ("reshape", "expand_dims", "squeeze", "flatten"))

#: Where folded kernels run: TVM's FoldConstant evaluates on the host CPU too.
FOLD_TARGET = "llvm"


def _static_tensor(ty) -> bool:
    return isinstance(ty, relax.TensorType) and ty.shape is not None and all(
        isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values)


#: FoldConstant folds a call without arguments (``zeros``, ``full``) only up to this many output
#: elements (checked against TVM 0.27: 1,024 folds, 1,025 stays a kernel).
CREATION_FOLD_ELEMENTS = 1024


def _foldable(value, known) -> bool:
    """A ``call_tir`` of a kernel on constants (or variables ``known`` to hold one) with one
    static tensor output: what FoldConstant evaluates (a call without arguments only when small,
    as FoldConstant does: it would turn a cheap kernel into a stored tensor)."""
    if not is_call_to(value, CALL_TIR) or len(value.args) != 2 or not _static_tensor(value.ty):
        return False
    arguments = value.args[1]
    if isinstance(arguments, relax.Tuple) and not arguments.fields:
        elements = 1
        for dim in value.ty.shape.values:
            elements *= int(dim)
        return elements <= CREATION_FOLD_ELEMENTS
    return isinstance(arguments, relax.Tuple) and all(
        isinstance(a, tvm.ir.Constant) or (isinstance(a, relax.Var) and a in known)
        for a in arguments.fields)


def _bound_constants(func: relax.Function) -> dict:
    """``{variable: tensor}`` for each binding of ``func`` to a constant (a reshape
    :class:`FoldConstantReshapes` folded, say)."""
    return {binding.var: binding.value.value for block in func.body.blocks for binding in block.bindings
            if isinstance(binding, relax.VarBinding) and isinstance(binding.value, tvm.ir.Constant)}


def _folded_calls(func: relax.Function) -> list:
    """The bindings of ``func`` that fold, in order (each may read variables bound to constants
    and values folded before it)."""
    known = set(_bound_constants(func))
    found = []
    for block in func.body.blocks:
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding) and _foldable(binding.value, known):
                known.add(binding.var)
                found.append(binding)
    return found


def fold_constant_calls(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every foldable ``call_tir`` of its Relax functions replaced by its value."""
    folds = {gv: _folded_calls(f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)}
    kernels = {binding.value.args[0] for found in folds.values() for binding in found}
    if not kernels:
        return mod
    symbols = {gv: f"fold_{position}" for position, gv in enumerate(sorted(kernels, key=lambda g: g.name_hint))}
    library = tvm.IRModule({relax.GlobalVar(symbol): mod[gv].with_attr("global_symbol", symbol)
                            for gv, symbol in symbols.items()})
    try:
        built = tvm.compile(library, target=tvm.target.Target(FOLD_TARGET))
    except Exception:  # noqa: BLE001 - a kernel only FoldConstant's own way builds: leave it all to it
        return mod
    device = tvm.cpu(0)
    result = mod
    for gv, found in folds.items():
        if not found:
            continue
        values = _bound_constants(mod[gv])
        for binding in found:
            call = binding.value
            inputs = [values[a] if isinstance(a, relax.Var) else a.value for a in call.args[1].fields]
            ty = call.ty
            output = tvm.runtime.empty([int(d) for d in ty.shape.values], ty.dtype, device)
            built.mod[symbols[call.args[0]]](*inputs, output)
            values[binding.var] = output
        result = _with_constants(result, gv, {binding.var: values[binding.var] for binding in found})
    return result


def _with_constants(mod: tvm.IRModule, gv, values: dict) -> tvm.IRModule:
    """``mod`` with function ``gv``'s bindings in ``values`` bound to those constants."""
    func = mod[gv]
    blocks = []
    for block in func.body.blocks:
        bindings = [relax.VarBinding(b.var, relax.const(values[b.var]))
                    if isinstance(b, relax.VarBinding) and b.var in values else b
                    for b in block.bindings]
        blocks.append(type(block)(bindings))
    body = relax.SeqExpr(blocks, func.body.body)
    functions = {g: f for g, f in mod.functions_items()}
    functions[gv] = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.FoldConstantCalls")
def FoldConstantCalls(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 - a pass, named as TVM's
    """See :func:`fold_constant_calls`."""
    return fold_constant_calls(mod)


def _reshaped_constant(call: relax.Call, source) -> relax.Expr | None:
    """The constant a reshape (:data:`RESHAPES`) of ``source`` (its input, or what the variable
    it reads is bound to) to a static shape evaluates to, if ``source`` is a constant; else None."""
    if not (isinstance(call.op, tvm.ir.Op) and any(call.op.same_as(op) for op in RESHAPES)
            and isinstance(source, tvm.ir.Constant) and _static_tensor(call.ty)):
        return None
    value = tvm.runtime.empty([int(d) for d in call.ty.shape.values], call.ty.dtype, tvm.cpu(0))
    value.copyfrom(source.value)  # the same bytes, row-major in both shapes
    return relax.const(value)


@relax.expr_functor.mutator
class _ReshapeFolder(relax.PyExprMutator):
    """Replaces each reshape of a constant by its value, counting them in ``folds``."""

    folds = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102 - the mutator's hook
        call = super().visit_call_(call)
        source = call.args[0] if call.args else None
        if isinstance(source, relax.Var):  # a reshape of a reshape reads the first one's variable
            source = self.lookup_binding(source)
        folded = _reshaped_constant(call, source)
        if folded is None:
            return call
        self.folds += 1
        return folded


def fold_constant_reshapes(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every reshape of a constant (``reshape``, ``expand_dims``, ``squeeze``,
    ``flatten``) to a static shape replaced by its value; what legalizing it and folding the kernel
    would give, bit for bit. Time: linear in the module's size, plus a copy of each folded tensor."""
    folder = _ReshapeFolder(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder.builder_.update_func(gv, folder.visit_expr(func))
    return folder.builder_.get() if folder.folds else mod


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.FoldConstantReshapes")
def FoldConstantReshapes(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 - a pass, named as TVM's
    """See :func:`fold_constant_reshapes`."""
    return fold_constant_reshapes(mod)
