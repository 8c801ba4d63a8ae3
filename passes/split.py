"""SplitByDevice: cut an annotated `main` into per-device stages joined by explicit copies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_place import schedule
from tvm_place.errors import InvalidPlacementError

from ._ir import (
    TO_VDEVICE,
    bindings,
    device_label,
    is_operator,
    main_function,
    substitute,
    tensor_types,
    value_type,
    var_operands,
    vdevice_index,
)

#: Function attributes SplitByDevice writes on each stage function.
STAGE_ATTR = "tvm_place.stage"
DEVICE_ATTR = "tvm_place.device"


def module_vdevices(mod: tvm.IRModule) -> list:
    infos = mod.global_infos
    if "vdevice" not in infos or len(infos["vdevice"]) == 0:
        raise InvalidPlacementError(
            "the module declares no vdevices: run AnnotatePlacement before SplitByDevice"
        )
    return list(infos["vdevice"])


def _device_index(ty: tvm.ir.Type, vdevices: list, what: str) -> int:
    for tensor in tensor_types(ty):
        vdevice = tensor.vdevice
        index = None if vdevice is None else vdevice_index(vdevices, vdevice)
        if index is not None:
            return index
    raise InvalidPlacementError(
        f"{what} has no vdevice of the module's list: run AnnotatePlacement before SplitByDevice"
    )


@dataclass
class _Segment:
    device: int
    bindings: list


def _segments(main: relax.Function, vdevices: list, order=None) -> list[_Segment]:
    """Bindings grouped into the stages of :func:`tvm_place.schedule.stage_of`.

    Each ``call_tir`` is on its output's vdevice and in the schedule's stage (``order``: the
    execution order of the operators, numbered as CollectOpGraph numbers them; default: binding
    order). Glue (tuples, tuple items, aliases) joins the latest stage among the operators it reads,
    or, reading none, the first stage that reads it.
    """
    items = list(bindings(main))
    index_of = {binding.var: i for i, binding in enumerate(items)}
    deps = [
        sorted({index_of[v] for v in var_operands(b.value) if v in index_of}) for b in items
    ]
    op_of = {}  # binding position -> operator number
    for i, binding in enumerate(items):
        if is_operator(binding.value):
            op_of[i] = len(op_of)
    device_of = np.zeros(len(op_of), dtype=np.int64)
    # Operators each binding reads, directly or through glue.
    reads: list[set[int]] = []
    for i, binding in enumerate(items):
        if i in op_of:
            device_of[op_of[i]] = _device_index(binding.var.ty, vdevices, f"operator {binding.var.name!r}")
        reads.append(set().union(*[{op_of[j]} if j in op_of else reads[j] for j in deps[i]]))
    edges = np.array(sorted({(u, op_of[i]) for i in op_of for u in reads[i]}), dtype=np.int64).reshape(-1, 2)
    if order is not None and len(order) != len(op_of):
        raise InvalidPlacementError(
            f"the execution order names {len(order)} operators but `main` has {len(op_of)}"
        )
    order = schedule.execution_order(len(op_of), edges, order)
    op_stage = schedule.stage_of(device_of, edges, order)
    stage: list[int | None] = [None] * len(items)
    for i in range(len(items)):
        if i in op_of:
            stage[i] = int(op_stage[op_of[i]])
        elif deps[i]:
            stage[i] = max((stage[j] for j in deps[i] if stage[j] is not None), default=None)
    for i in reversed(range(len(items))):
        if stage[i] is None:
            consumers = [stage[j] for j in range(i + 1, len(items)) if i in deps[j] and stage[j] is not None]
            stage[i] = min(consumers) if consumers else 0
    stage_device = {int(op_stage[u]): int(device_of[u]) for u in range(len(op_of))}
    segments: dict[int, _Segment] = {}
    for i, binding in enumerate(items):
        k = stage[i]
        if k not in segments:
            segments[k] = _Segment(stage_device.get(k, 0), [])
        segments[k].bindings.append(binding)
    return [segments[k] for k in sorted(segments)]


def split_by_device(mod: tvm.IRModule, order=None) -> tvm.IRModule:
    """See :class:`SplitByDevice`."""
    vdevices = module_vdevices(mod)
    main = main_function(mod)
    segments = _segments(main, vdevices, order)
    returned = set(var_operands(main.body.body))

    # Where each value of `main` lives: parameters on vdevice 0 (where the VM puts arguments).
    defined_on = {param: 0 for param in main.params}
    defined_in: dict = {}
    for k, segment in enumerate(segments):
        for binding in segment.bindings:
            defined_on[binding.var] = segment.device
            defined_in[binding.var] = k
    used_later: list[set] = [set() for _ in segments]
    for k, segment in enumerate(segments):
        for binding in segment.bindings:
            for v in var_operands(binding.value):
                if v in defined_in and defined_in[v] != k:
                    used_later[defined_in[v]].add(v)

    others = {gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"}
    normalizer = relax.BlockBuilder(
        tvm.IRModule(others, attrs=mod.attrs, global_infos=mod.global_infos)
    )
    main_var: dict = {param: param for param in main.params}
    copies: dict = {}
    main_bindings = []
    for k, segment in enumerate(segments):
        defined_here = {b.var for b in segment.bindings}
        inputs = []
        for binding in segment.bindings:
            for v in var_operands(binding.value):
                if v not in defined_here and v not in inputs:
                    inputs.append(v)
        outputs = [
            b.var for b in segment.bindings if b.var in used_later[k] or b.var in returned
        ]
        # Stage arguments: a value made on another device crosses by exactly one copy per
        # destination device, however many stages there read it.
        arguments = []
        for v in inputs:
            if defined_on[v] == segment.device:
                arguments.append(main_var[v])
                continue
            key = (v, segment.device)
            if key not in copies:
                copy_value = normalizer.normalize(
                    relax.Call(TO_VDEVICE, [main_var[v]], _to_vdevice_attrs(vdevices[segment.device]))
                )
                copy_var = relax.Var(f"{v.name}_to_{device_label(vdevices, segment.device)}", copy_value.ty)
                main_bindings.append(relax.VarBinding(copy_var, copy_value))
                copies[key] = copy_var
            arguments.append(copies[key])

        stage_params = [relax.Var(v.name, value_type(a)) for v, a in zip(inputs, arguments)]
        var_map = dict(zip(inputs, stage_params))
        stage_bindings = []
        for binding in segment.bindings:
            value = normalizer.normalize(substitute(binding.value, var_map))
            new_var = relax.DataflowVar(binding.var.name, value_type(value))
            var_map[binding.var] = new_var
            stage_bindings.append(relax.VarBinding(new_var, value))
        result_var = relax.Var("result", relax.TupleType([var_map[v].ty for v in outputs]))
        stage_bindings.append(
            relax.VarBinding(result_var, normalizer.normalize(relax.Tuple([var_map[v] for v in outputs])))
        )
        stage_name = f"stage{k}_{device_label(vdevices, segment.device)}"
        body = normalizer.normalize(relax.SeqExpr([relax.DataflowBlock(stage_bindings)], result_var))
        attrs = tvm.ir.DictAttrs({STAGE_ATTR: k, DEVICE_ATTR: segment.device})
        stage = relax.Function(stage_params, body, body.ty, True, attrs)
        # Symbolic dimensions the stage uses that no tensor parameter's shape carries (a slice
        # to `n` of a constant table): one shape parameter brings them, from `main`'s.
        carried = list(relax.analysis.free_symbolic_vars(stage))
        if carried:
            shape_param = relax.Var(f"{stage_name}_shape", relax.ShapeType(values=carried))
            stage = relax.Function(stage_params + [shape_param], body, body.ty, True, attrs)
            arguments = arguments + [relax.ShapeExpr(carried)]
        stage_gv = normalizer.add_func(stage, stage_name)

        call = normalizer.normalize(relax.Call(stage_gv, arguments, None, None, ret_ty=stage.ret_ty))
        call_var = relax.Var(f"stage{k}", call.ty)
        main_bindings.append(relax.VarBinding(call_var, call))
        for position, v in enumerate(outputs):
            item = normalizer.normalize(relax.TupleGetItem(call_var, position))
            item_var = relax.Var(v.name, item.ty)
            main_bindings.append(relax.VarBinding(item_var, item))
            main_var[v] = item_var

    result = substitute(main.body.body, main_var)
    body = normalizer.normalize(relax.SeqExpr([relax.BindingBlock(main_bindings)], result))
    new_main = relax.Function(main.params, body, body.ty, main.is_pure, main.attrs)
    normalizer.add_func(new_main, "main")
    return normalizer.get()


def _to_vdevice_attrs(vdevice) -> tvm.ir.Attrs:
    return tvm.ir.make_node("relax.attrs.ToVDeviceAttrs", dst_vdevice=vdevice)


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.SplitByDevice")
class SplitByDevice:
    """Cut ``main`` into per-device stage functions joined by explicit copies.

    Reads: a module annotated by AnnotatePlacement (every ``call_tir`` output on a vdevice of the
    module's ``"vdevice"`` list), and optionally ``order``, the placement's execution order of the
    operators (CollectOpGraph's numbering; default: binding order).
    Writes: one Relax function ``stage{k}_{device}`` per stage of the schedule
    (:func:`tvm_place.schedule.stage_of`: a run of one device's operators in execution order,
    cut where a value comes from or goes to another device; attributes ``tvm_place.stage`` and
    ``tvm_place.device``), and a new ``main`` that calls the stages in order with an
    ``R.to_vdevice`` copy at every cross-device edge: exactly one copy per value and destination
    device, however many consumers it has there, and none elsewhere. ``main``'s parameters live on
    vdevice 0. :func:`build_stages` compiles each device's stages, as one module, for its target.
    """

    def __init__(self, order=None):
        self.order = None if order is None else [int(u) for u in order]

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return split_by_device(mod, self.order)
