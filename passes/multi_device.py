"""One multi-device VM executable from a split module (the native TVM form of a placement).

:class:`SplitByDevice` cuts ``main`` into stages joined by ``R.to_vdevice`` copies; the per-target
route (:func:`build_stages`) compiles each device's stages as one executable. The passes here
turn the same split module into a single Relax module that ``tvm.compile`` builds into one executable, run by
``relax.VirtualMachine(ex, [device per vdevice, in the module's vdevice order])``:

- :func:`inline_stages`: the stage functions inlined back into ``main``, copies kept;
- :func:`copy_constants`: a constant read on a device other than vdevice 0 is copied there (the
  TVM 0.27 VM loads every constant onto ``devices[0]``);
- :func:`bind_prim_func_targets`: every PrimFunc gets the target of the device its call runs on
  (a PrimFunc called on two devices is duplicated); without it TVM builds every kernel for one
  target, or host code for a GPU kernel, silently.

:func:`multi_device_lowering` lists the passes ``tvm.compile``'s default pipeline would run after
that: a real GPU schedule for GPU kernels, then TVM's dataflow lowering and finalisation, without
``StaticPlanBlockMemory`` (see there).
"""

from __future__ import annotations

import base64
import importlib
import json

import tvm
from tvm import relax
from tvm.s_tir import renew_defs

from tvm_place.errors import InvalidPlacementError

from ._ir import (
    CALL_TIR,
    TO_VDEVICE,
    bindings,
    device_label,
    is_call_to,
    main_function,
    replace_main,
    substitute,
    tensor_types,
    vdevice_index,
)
from .build import BACKEND_OF_KIND, gpu_schedule_pass, is_gpu_target, require_gpu_schedules
from .tuning_database import ApplyTunedSchedules, warn_untuned
from .split import DEVICE_ATTR, module_vdevices

#: Name of the Relax function that records the device order in the executable (see
#: :func:`add_device_record`).
DEVICES_FUNCTION = "tvm_place_devices"


def inline_stages(mod: tvm.IRModule) -> tvm.IRModule:
    """``main`` of a :class:`SplitByDevice` module with its stage functions inlined, so one flat
    ``main`` holds every operator and every ``R.to_vdevice`` copy.

    Inlined here rather than by ``relax.transform.InlinePrivateFunctions``, which gives each
    inlined function's symbolic dimensions fresh variables that nothing in ``main`` defines; a
    stage's types use ``main``'s own dimension variables, so its bindings move over as they are.
    """
    stages = {gv.name_hint for gv, f in mod.functions_items()
              if isinstance(f, relax.Function) and DEVICE_ATTR in (f.attrs or {})}
    if not stages:
        raise InvalidPlacementError(
            "the module has no stage functions: run AnnotatePlacement and SplitByDevice first"
        )
    main = main_function(mod)
    flat = []
    for binding in bindings(main):
        value = binding.value
        if not (isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar)
                and value.op.name_hint in stages):
            flat.append(binding)
            continue
        stage = mod[value.op]
        var_map = dict(zip(stage.params, value.args))
        for inner in bindings(stage):
            var = relax.Var(inner.var.name, inner.var.ty)
            flat.append(relax.VarBinding(var, substitute(inner.value, var_map)))
            var_map[inner.var] = var
        flat.append(relax.VarBinding(binding.var, substitute(stage.body.body, var_map)))
    body = relax.SeqExpr([relax.BindingBlock(flat)], main.body.body)
    others = {gv: f for gv, f in mod.functions_items() if gv.name_hint not in stages and gv.name_hint != "main"}
    inlined = tvm.IRModule(others, attrs=mod.attrs, global_infos=mod.global_infos)
    inlined["main"] = relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs)
    inlined = relax.transform.CanonicalizeBindings()(inlined)
    return relax.transform.DeadCodeElimination()(inlined)


def _call_device(binding: relax.VarBinding, vdevices: list) -> int | None:
    for tensor in tensor_types(binding.var.ty):
        if tensor.vdevice is not None:
            return vdevice_index(vdevices, tensor.vdevice)
    return None


def copy_constants(mod: tvm.IRModule) -> tvm.IRModule:
    """Give each operator on a device other than vdevice 0 its constants on its own device.

    TVM 0.27's VM puts every constant of an executable on ``devices[0]`` when it starts, whatever
    the constant's type says; an operator on another device would read memory of the wrong device.
    Each (constant, device) pair gets one ``R.to_vdevice`` copy, bound just before its first use;
    it runs at every call (the VM has no way to keep a copied constant between calls), so weights
    are cheapest on vdevice 0: list the device holding most weights first.
    """
    vdevices = module_vdevices(mod)
    main = main_function(mod)
    normalizer = relax.BlockBuilder()
    copies: dict = {}
    blocks = []
    for block in main.body.blocks:
        new_bindings = []
        for binding in block.bindings:
            value = binding.value
            device = _call_device(binding, vdevices) if is_call_to(value, CALL_TIR) else None
            if device:  # vdevice 0 is where the VM put the constants already
                arguments = []
                for arg in value.args[1].fields:
                    if isinstance(arg, tvm.ir.Constant):
                        key = (arg, device)
                        if key not in copies:
                            copy = normalizer.normalize(
                                relax.Call(
                                    TO_VDEVICE,
                                    [arg],
                                    tvm.ir.make_node("relax.attrs.ToVDeviceAttrs", dst_vdevice=vdevices[device]),
                                )
                            )
                            # A plain Var (a dataflow block's output), so later blocks may read it.
                            copies[key] = relax.Var(f"const{len(copies)}_to_dev{device}", copy.ty)
                            new_bindings.append(relax.VarBinding(copies[key], copy))
                        arguments.append(copies[key])
                    else:
                        arguments.append(arg)
                value = relax.Call(value.op, [value.args[0], relax.Tuple(arguments)], value.attrs, value.ty_args)
                value = normalizer.normalize(value)
            new_bindings.append(relax.VarBinding(binding.var, value))
        blocks.append(type(block)(new_bindings))
    if not copies:
        return mod
    body = normalizer.normalize(relax.SeqExpr(blocks, main.body.body))
    new_main = relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs)
    return replace_main(mod, new_main)


def bind_prim_func_targets(mod: tvm.IRModule) -> tvm.IRModule:
    """Every PrimFunc ``main`` calls carries the target of its call's device.

    A PrimFunc called on devices of different targets is duplicated, one copy per target
    (``<name>_<device>`` for all but the first); PrimFuncs ``main`` does not call keep their
    attributes.
    """
    vdevices = module_vdevices(mod)
    main = main_function(mod)
    devices_of: dict[str, list[int]] = {}
    for binding in bindings(main):
        if is_call_to(binding.value, CALL_TIR):
            device = _call_device(binding, vdevices)
            if device is None:
                raise InvalidPlacementError(
                    f"operator {binding.var.name!r} has no vdevice: run AnnotatePlacement first"
                )
            used = devices_of.setdefault(binding.value.args[0].name_hint, [])
            if device not in used:
                used.append(device)
    others = {gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"}
    builder = relax.BlockBuilder(tvm.IRModule(others, attrs=mod.attrs, global_infos=mod.global_infos))
    gvar_of: dict[tuple[str, int], relax.GlobalVar] = {}
    for gv, func in others.items():
        for position, device in enumerate(devices_of.get(gv.name_hint, [])):
            target = vdevices[device].target
            if position == 0:
                builder.update_func(gv, func.with_attr("target", target))
                gvar_of[(gv.name_hint, device)] = gv
            else:
                # A copy with variables of its own (one PrimFunc's definitions are not shared with
                # another's). Same target as a copy made already (cpu:0 and cpu:1): the builder
                # returns that one.
                copy = renew_defs(func).with_attr("target", target)
                gvar_of[(gv.name_hint, device)] = builder.add_func(
                    copy, f"{gv.name_hint}_{device_label(vdevices, device)}"
                )
    blocks = []
    for block in main.body.blocks:
        new_bindings = []
        for binding in block.bindings:
            value = binding.value
            if is_call_to(value, CALL_TIR):
                callee = gvar_of[(value.args[0].name_hint, _call_device(binding, vdevices))]
                value = builder.normalize(
                    relax.Call(value.op, [callee, *value.args[1:]], value.attrs, value.ty_args)
                )
            new_bindings.append(relax.VarBinding(binding.var, value))
        blocks.append(type(block)(new_bindings))
    body = builder.normalize(relax.SeqExpr(blocks, main.body.body))
    builder.add_func(relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs), "main")
    return builder.get()


#: Prefix of the device record's string constant, followed by base64 of the record's JSON (no
#: quotes or commas, so it reads back from the executable's constant pool as printed by stats()).
RECORD_PREFIX = "tvm_place_record:"


def add_device_record(mod: tvm.IRModule, record: dict) -> tvm.IRModule:
    """Add a Relax function :data:`DEVICES_FUNCTION` that returns ``record`` (as
    :data:`RECORD_PREFIX` + base64 of its JSON), so the executable itself says which device each
    position of the VM's device list must be; :func:`read_device_record` reads it back without
    starting a VM (which would need those devices)."""
    encoded = base64.b64encode(json.dumps(record, sort_keys=True).encode()).decode()
    body = relax.SeqExpr([], tvm.ir.StringImm(RECORD_PREFIX + encoded))
    func = relax.Function([], body, body.ty, True).with_attr("global_symbol", DEVICES_FUNCTION)
    functions = dict(mod.functions_items())
    functions[relax.GlobalVar(DEVICES_FUNCTION)] = func
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def read_device_record(executable: relax.VMExecutable) -> dict | None:
    """The record :func:`add_device_record` put into a built executable, or None."""
    import re

    found = re.search(re.escape(RECORD_PREFIX) + r"([A-Za-z0-9+/=]+)", executable.stats())
    return None if found is None else json.loads(base64.b64decode(found.group(1)))


def multi_device_lowering(targets, database=None) -> list[tvm.transform.Pass]:
    """The passes after placement that ``tvm.compile``'s default pipeline would run, for a module
    whose PrimFuncs carry their own targets.

    Kernels ``database`` (a :class:`~.tuning_database.TuningDatabase`) has tuned get their tuned
    schedules, and one ``UntunedKernelWarning`` names the rest. Other GPU kernels get dlight's default schedules (an unscheduled GPU PrimFunc would silently become
    host code). Then TVM's dataflow lowering and finalisation passes of the backend of the first
    GPU target (else of the CPU), leaving out ``StaticPlanBlockMemory`` (and ``RewriteCUDAGraph``,
    which needs it): in TVM 0.27 it pools storage by memory scope and dtype only, not by vdevice,
    so it hands one device's storage to a tensor of another (``Mismatched device_id`` at run time,
    or CPU memory given to a GPU kernel). Without it every tensor is allocated on its own device;
    the VM's pooled allocator still reuses freed memory per device at run time.
    """
    passes: list[tvm.transform.Pass] = [_tuned_schedules_and_warning(database)]
    gpu = next((t for t in targets if is_gpu_target(t)), None)
    if gpu is not None:
        passes += [gpu_schedule_pass(), require_gpu_schedules()]
    backend_target = gpu if gpu is not None else targets[0]
    backend = importlib.import_module(
        f"tvm.relax.backend.{BACKEND_OF_KIND.get(backend_target.kind.name, 'gpu_generic')}.pipeline"
    )
    passes += backend.dataflow_lower_passes(backend_target)
    skipped = ("StaticPlanBlockMemory", "RewriteCUDAGraph")
    passes += [p for p in backend.finalize_passes(backend_target) if p.info.name not in skipped]
    return passes


def _tuned_schedules_and_warning(database) -> tvm.transform.Pass:
    """ApplyTunedSchedules on kernels that carry their targets, then the untuned warning per device kind."""

    @tvm.transform.module_pass(opt_level=0, name="tvm_place.ApplyTunedSchedulesAndWarn")
    def apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        schedules = ApplyTunedSchedules(database)
        mod = schedules(mod)
        untuned: dict[str, tuple[str, list[str], int]] = {}
        for global_var, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and "target" in func.attrs:
                target = func.attrs["target"]
                label = "gpu" if is_gpu_target(target) else "cpu"
                kind, names, total = untuned.get(label, (str(target.kind.name), [], 0))
                missing = [global_var.name_hint] if global_var.name_hint in schedules.untuned else []
                untuned[label] = (kind, names + missing, total + 1)
        warn_untuned(untuned, database)
        return mod

    return apply
