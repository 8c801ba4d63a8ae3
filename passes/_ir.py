"""Helpers shared by the passes: reading and rebuilding the flat (ANF) `main` of a fused module."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tvm
from tvm import relax

from tvm_place.errors import UnsupportedModelError

CALL_TIR = tvm.ir.Op.get("relax.call_tir")
HINT_ON_DEVICE = tvm.ir.Op.get("relax.hint_on_device")
TO_VDEVICE = tvm.ir.Op.get("relax.to_vdevice")
CALL_DPS_PACKED = tvm.ir.Op.get("relax.call_dps_packed")


def main_function(mod: tvm.IRModule) -> relax.Function:
    """The module's Relax `main`, or a clear error."""
    names = [gv.name_hint for gv in mod.get_global_vars()]
    if "main" not in names:
        raise UnsupportedModelError(
            f"the module has no `main` function (it has {sorted(names)}); tvm-place places the "
            "operators of `main`: rename the entry function or wrap it in one called `main`"
        )
    func = mod["main"]
    if not isinstance(func, relax.Function):
        raise UnsupportedModelError("`main` is not a Relax function; tvm-place needs a Relax module")
    return func


def bindings(func: relax.Function) -> Iterator[relax.VarBinding]:
    """The bindings of a function body, in order; only flat sequences of VarBindings are accepted."""
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        raise UnsupportedModelError("`main`'s body is not a sequence of bindings (normalise it first)")
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise UnsupportedModelError(
                    f"`main` has a match_cast binding of {binding.var.name!r}: dynamic shapes are "
                    "not supported; make every shape static (e.g. relax.transform.BindSymbolicVars)"
                )
            yield binding


def is_call_to(expr: relax.Expr, op: tvm.ir.Op) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.same_as(op)


def is_external_call(expr: relax.Expr) -> bool:
    """A destination-passing call of a function outside the module (``R.call_dps_packed`` of
    an external symbol: a library kernel, a function registered with ``tvm_ffi``)."""
    return is_call_to(expr, CALL_DPS_PACKED) and isinstance(expr.args[0], relax.ExternFunc)


def is_operator(expr: relax.Expr) -> bool:
    """An operator tvm-place places: a ``call_tir`` of a PrimFunc, or an external call."""
    return is_call_to(expr, CALL_TIR) or is_external_call(expr)


def operator_callee(call: relax.Call) -> str:
    """The PrimFunc an operator calls, or the external function's symbol."""
    callee = call.args[0]
    return str(callee.global_symbol) if isinstance(callee, relax.ExternFunc) else callee.name_hint


def tensor_types(ty: tvm.ir.Type) -> list[relax.TensorType]:
    """The tensor types inside a tensor or (nested) tuple type."""
    if isinstance(ty, relax.TensorType):
        return [ty]
    if isinstance(ty, relax.TupleType):
        return [t for field in ty.fields for t in tensor_types(field)]
    return []


def static_shape(ty: relax.TensorType, what: str) -> tuple[int, ...]:
    """The static shape of a tensor type, or an error naming ``what`` has a dynamic one."""
    shape = getattr(ty, "shape", None)
    dims = None if shape is None else getattr(shape, "values", None)
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        raise UnsupportedModelError(
            f"{what} has a dynamic or unknown shape ({shape}); the cost model cannot size it: "
            "give every tensor a shape whose dimensions are numbers or named symbolic dimensions "
            "of the function's inputs (sized by shape_hints)"
        )
    return tuple(int(d) for d in dims)


def type_bytes(ty: tvm.ir.Type, what: str) -> int:
    """Bytes of every tensor in a tensor or tuple type."""
    total = 0
    for tensor in tensor_types(ty):
        shape = static_shape(tensor, what)
        total += int(np.prod(shape, dtype=np.int64)) * tvm.DataType(tensor.dtype).bits // 8
    return total


#: Function attributes (TVM's) bounding a symbolic variable: {name: int}.
UPPER_BOUND_ATTR = "tir_var_upper_bound"
LOWER_BOUND_ATTR = "tir_var_lower_bound"


def symbolic_vars(func: relax.Function) -> list:
    """The symbolic shape variables ``func`` defines (in its parameters' shapes)."""
    return list(relax.analysis.defined_symbolic_vars(func))


def symbol_values(func: relax.Function, hints=None, bound: str = "hint") -> dict[str, int]:
    """The value each symbolic variable of ``func`` takes, by name.

    ``bound="hint"``: the user's ``hints`` first, else the function's ``tir_var_upper_bound``,
    else its ``tir_var_lower_bound`` attribute (what costs are computed at); ``bound="upper"``:
    the upper bound where there is one, else as for ``"hint"`` (what memory is sized at). A
    variable with none of these is an error naming it and the fixes.
    """
    hints = {str(k): v for k, v in (hints or {}).items()}
    attrs = func.attrs or {}
    upper = {str(k): int(v) for k, v in dict(attrs.get(UPPER_BOUND_ATTR, {}) or {}).items()}
    lower = {str(k): int(v) for k, v in dict(attrs.get(LOWER_BOUND_ATTR, {}) or {}).items()}
    names = [str(var.name) for var in symbolic_vars(func)]
    unknown = sorted(set(hints) - set(names))
    if unknown:
        raise UnsupportedModelError(
            f"shape hints name {unknown}, which the function's shapes do not use"
            + (f" (its symbolic dimensions: {names})" if names else " (all its shapes are static)")
        )
    values = {}
    for name in names:
        order = [upper, hints, lower] if bound == "upper" else [hints, upper, lower]
        found = next((source[name] for source in order if name in source), None)
        if found is None:
            raise UnsupportedModelError(
                f"symbolic dimension {name!r} has no size to cost the model at: give one "
                f"(shape_hints={{{name!r}: 128}}, or `--shape {name}=128` on the command line) or "
                f"set the function's {UPPER_BOUND_ATTR!r} attribute"
            )
        if isinstance(found, bool) or not isinstance(found, (int, np.integer)) or found < 1:
            raise UnsupportedModelError(
                f"shape hint {name}={found!r}: a symbolic dimension's size must be a positive integer"
            )
        values[name] = int(found)
    for name, value in values.items():
        if name in upper and value > upper[name] or name in lower and value < lower[name]:
            raise UnsupportedModelError(
                f"shape hint {name}={value} is outside the function's bounds "
                f"[{lower.get(name, 1)}, {upper.get(name, 'inf')}]"
            )
    return values


def with_vdevice(ty: tvm.ir.Type, vdevice) -> tvm.ir.Type:
    """The same tensor/tuple type on ``vdevice`` (``None``: without any vdevice)."""
    if isinstance(ty, relax.TensorType):
        return relax.TensorType(ty.shape, ty.dtype, vdevice)
    if isinstance(ty, relax.TupleType):
        return relax.TupleType([with_vdevice(field, vdevice) for field in ty.fields])
    return ty


def substitute(expr: relax.Expr, var_map: dict) -> relax.Expr:
    """``expr`` with its variables (and any constants keyed in ``var_map``) replaced through
    ``var_map`` (flat ANF expressions only)."""
    if isinstance(expr, (relax.Var, tvm.ir.Constant)):
        return var_map.get(expr, expr)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(field, var_map) for field in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, var_map), expr.index)
    if isinstance(expr, relax.Call):
        return relax.Call(
            expr.op, [substitute(arg, var_map) for arg in expr.args], expr.attrs, expr.ty_args
        )
    return expr


def var_operands(expr: relax.Expr) -> list[relax.Var]:
    """The variables an expression reads, in order, without duplicates. A symbolic size (a
    scalar argument of a kernel: a variable of a primitive type) is not one: the split gives a
    stage its sizes as a shape argument."""
    found: list[relax.Var] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, relax.Var) and not isinstance(e.ty, tvm.ir.PrimType):
            if not any(e.same_as(v) for v in found):
                found.append(e)
        elif isinstance(e, relax.Tuple):
            for field in e.fields:
                visit(field)
        elif isinstance(e, relax.TupleGetItem):
            visit(e.tuple_value)
        elif isinstance(e, relax.Call):
            for arg in e.args:
                visit(arg)

    visit(expr)
    return found


def value_type(value: relax.Expr) -> tvm.ir.Type:
    """The type of a glue value (tuple, tuple item, alias, constant) from its operands' types."""
    if isinstance(value, relax.Tuple):
        return relax.TupleType([value_type(field) for field in value.fields])
    if isinstance(value, relax.TupleGetItem):
        return value_type(value.tuple_value).fields[value.index]
    return value.ty


def rebuild_function(
    func: relax.Function, call_tir_vdevice, strip_param_vdevices: bool = False
) -> relax.Function:
    """``func`` with every operator's output on ``call_tir_vdevice(k)`` (k-th operator, a
    ``call_tir`` or an external call, in order).

    ``call_tir_vdevice`` returns a VDevice, or None for no vdevice. ``R.hint_on_device`` bindings are
    dropped (their input stands for their output); glue types are recomputed so they carry the
    vdevices of their operands. Parameters keep their types unless ``strip_param_vdevices``.
    """
    params = list(func.params)
    if strip_param_vdevices:
        params = [relax.Var(p.name, with_vdevice(p.ty, None)) for p in func.params]
    var_map: dict = dict(zip(func.params, params))
    blocks = []
    op_index = 0
    normalizer = relax.BlockBuilder()
    for block in func.body.blocks:
        new_bindings = []
        for binding in block.bindings:
            value = substitute(binding.value, var_map)
            if is_call_to(value, HINT_ON_DEVICE):
                var_map[binding.var] = value.args[0]
                continue
            if is_operator(value):
                vdevice = call_tir_vdevice(op_index)
                op_index += 1
                ty_args = [with_vdevice(t, vdevice) for t in value.ty_args]
                value = normalizer.normalize(relax.Call(value.op, value.args, value.attrs, ty_args))
                new_type = with_vdevice(binding.var.ty, vdevice)
            else:
                value = normalizer.normalize(value)
                new_type = value_type(value)
            new_var = type(binding.var)(binding.var.name, new_type)
            var_map[binding.var] = new_var
            new_bindings.append(relax.VarBinding(new_var, value))
        blocks.append(type(block)(new_bindings))
    body = normalizer.normalize(relax.SeqExpr(blocks, substitute(func.body.body, var_map)))
    return relax.Function(params, body, body.ty, func.is_pure, func.attrs)


def vdevices_of_targets(targets) -> list:
    """One VDevice per target; a repeated target kind gets the next vdevice id (cpu:0, cpu:1)."""
    seen: dict[str, int] = {}
    vdevices = []
    for target in targets:
        kind = target.kind.name
        vdevices.append(relax.VDevice(target, seen.get(kind, 0), "global"))
        seen[kind] = seen.get(kind, 0) + 1
    return vdevices


def replace_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    functions = {gv: func for gv, func in mod.functions_items() if gv.name_hint != "main"}
    functions[mod.get_global_var("main")] = main
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def device_label(vdevices: list, index: int) -> str:
    """``cpu0``, ``cuda1``: vdevice ``index``'s kind and id, for names of stages and copies."""
    vdevice = vdevices[index]
    kind = "cpu" if vdevice.target.kind.name == "llvm" else vdevice.target.kind.name
    return f"{kind}{int(vdevice.vdevice_id)}"


def vdevice_index(vdevices: list, vdevice) -> int | None:
    """Position of ``vdevice`` in the module's list (VDevice.same_as recurses, so compare by value)."""
    import tvm_ffi

    for index, candidate in enumerate(vdevices):
        if tvm_ffi.structural_equal(candidate, vdevice):
            return index
    return None
