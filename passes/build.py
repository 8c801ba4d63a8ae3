"""Per-device artifacts of a split module: one compiled executable per device, whose functions are
the device's stages, and the stage plan.

The plan is plain data (JSON-able): the steps of the split ``main`` in order, each a stage call or a
copy, over named values. The runtime executes it, calling each stage by its name in its device's
executable; ``PlacedModule.export`` writes it beside the libraries (one per device).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import tvm
from tvm import relax

from tvm_place.errors import UnsupportedModelError

from ._ir import (
    CALL_TIR,
    TO_VDEVICE,
    bindings,
    device_label,
    is_call_to,
    is_external_call,
    main_function,
    operator_callee,
    rebuild_function,
    vdevice_index,
)
from .split import DEVICE_ATTR, STAGE_ATTR, module_vdevices
from .tuning_database import ApplyTunedSchedules, warn_untuned

#: TVM backend package whose lowering passes a target kind uses.
BACKEND_OF_KIND = {"llvm": "cpu_generic", "cuda": "cuda"}


#: Rules that give every GPU PrimFunc a real GPU schedule (an unscheduled one would silently
#: become host code; see the TVM 0.27 notes).
def gpu_schedule_pass() -> tvm.transform.Pass:
    """dlight's default GPU rules in TVM's order, the first that applies scheduling each kernel.

    A rule whose analysis raises on a kernel counts as not applying to it and the next rule is
    tried: TVM 0.27's Reduction rule asserts on a fused reduction over broadcast reads
    (moe-block's top-k mask) where it should decline, and ``ApplyDefaultSchedule`` would stop the
    whole module there; Fallback schedules that kernel."""
    from tvm.s_tir import dlight as dl

    class Declining(dl.ScheduleRule):
        def __init__(self, rule: dl.ScheduleRule):
            self.rule = rule

        def apply(self, func, target, tunable):
            try:
                return self.rule.apply(func, target, tunable)
            except Exception:  # noqa: BLE001 - the rule's analysis failed: it does not apply
                return None

    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
             dl.gpu.Fallback()]
    return dl.ApplyDefaultSchedule(*[Declining(rule) for rule in rules])


def require_gpu_schedules() -> tvm.transform.Pass:
    """Refuse a GPU kernel that no schedule reached (it would silently become host code)."""

    @tvm.transform.module_pass(opt_level=0, name="tvm_place.RequireGPUSchedules")
    def check(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        unscheduled = unscheduled_gpu_kernels(mod)
        if unscheduled:
            raise UnsupportedModelError(unscheduled_message(unscheduled))
        return mod

    return check


def unscheduled_gpu_kernels(mod: tvm.IRModule) -> list[str]:
    """The GPU kernels of ``mod`` that no schedule reached, by name."""
    return [
        global_var.name_hint
        for global_var, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
        and func.attrs is not None
        and "target" in func.attrs
        and is_gpu_target(func.attrs["target"])
        and "tirx.is_scheduled" not in func.attrs
    ]


def unscheduled_message(names: list[str]) -> str:
    return (f"no GPU schedule applies to kernel(s) {names[:5]}: neither the tuning database nor "
            "dlight's rules scheduled them, and an unscheduled GPU kernel would run as host code; "
            "tune them (tvm_place.tune) or place them on the CPU (pins)")


def is_gpu_target(target: tvm.target.Target) -> bool:
    return "gpu" in [str(key) for key in target.keys]


def build_kernel(prim_func: tvm.tirx.PrimFunc, target: tvm.target.Target):
    """One kernel built alone for ``target`` as a stage builds it (a GPU kernel gets a dlight
    schedule, or an error saying none applies). Raises what the build raises."""
    func = prim_func.with_attr("global_symbol", "main").with_attr("target", target)
    module = tvm.IRModule({"main": func})
    if is_gpu_target(target):
        with target:
            module = tvm.transform.Sequential([gpu_schedule_pass(), require_gpu_schedules()])(module)
    return tvm.compile(module, target=target)


def error_line(err: BaseException) -> str:
    """The last line of a build error: what TVM says went wrong, without its traceback."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def build_failures(kernels: dict, target: tvm.target.Target) -> dict[str, str]:
    """Why each of ``kernels`` (``{name: PrimFunc}``) cannot be built for ``target``
    (:func:`build_kernel`'s failure, as :func:`error_line`), ``""`` for each that can.

    All of them are built together in one module, once (a module costs about 50-90 ms of LLVM
    set-up on the 2-core development machine, whatever its size); a GPU kernel no dlight rule
    schedules fails without a build. Only when the module fails is each kernel built alone, to
    tell which. Time: one build of the kernels, plus one per kernel where one fails.
    """
    functions = {relax.GlobalVar(name): func.with_attr("global_symbol", name).with_attr("target", target)
                 for name, func in kernels.items()}
    module = tvm.IRModule(functions)
    why: dict[str, str] = {}
    if is_gpu_target(target):
        with target:
            module = gpu_schedule_pass()(module)
        why = {name: unscheduled_message([name]) for name in unscheduled_gpu_kernels(module)}
        module = tvm.IRModule({gv: f for gv, f in module.functions_items() if gv.name_hint not in why})
    rest = [name for name in kernels if name not in why]
    try:
        if rest:
            tvm.compile(module, target=target)
        return {**why, **{name: "" for name in rest}}
    except Exception:  # noqa: BLE001 - some kernel fails: build each alone to tell which
        pass
    for name in rest:
        try:
            build_kernel(kernels[name], target)
            why[name] = ""
        except Exception as err:  # noqa: BLE001 - any failure: the target cannot build it
            why[name] = error_line(err)
    return why


@dataclass
class StagePlan:
    """The split ``main`` as steps over named values.

    ``inputs``: the names of ``main``'s parameters; ``steps``: dicts, either
    ``{"kind": "call", "stage": name, "device": d, "module": name, "args": [...], "outputs": [...]}``
    (``module``: the executable holding the stage, a function named ``stage``) or
    ``{"kind": "copy", "source": name, "result": name, "device": d}``; ``outputs``: the names ``main``
    returns (``output_is_tuple`` says whether it returns them as a tuple).

    Symbolic shapes: ``symbols`` gives each symbolic dimension of ``main`` as ``[input position,
    axis]`` of an input that carries it; ``shape_args`` names each stage argument that is a
    shape, with the dimensions it lists (the runtime reads them off the inputs);
    ``shape_values``: the sizes the placement was costed at. ``input_types``: per input, its
    ``shape`` (numbers, and names for symbolic dimensions) and ``dtype``.
    """

    inputs: list[str]
    steps: list[dict]
    outputs: list[str]
    output_is_tuple: bool
    devices: list[dict] = field(default_factory=list)
    symbols: dict[str, list[int]] = field(default_factory=dict)
    shape_args: dict[str, list[str]] = field(default_factory=dict)
    shape_values: dict[str, int] = field(default_factory=dict)
    input_types: list[dict] = field(default_factory=list)
    #: The external functions (``R.call_dps_packed`` symbols) its stages call.
    externals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "steps": self.steps,
            "outputs": self.outputs,
            "output_is_tuple": self.output_is_tuple,
            "devices": self.devices,
            "symbols": self.symbols,
            "shape_args": self.shape_args,
            "shape_values": self.shape_values,
            "input_types": self.input_types,
            "externals": self.externals,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "StagePlan":
        return cls(
            inputs=list(data["inputs"]),
            steps=[dict(s) for s in data["steps"]],
            outputs=list(data["outputs"]),
            output_is_tuple=bool(data["output_is_tuple"]),
            devices=[dict(d) for d in data.get("devices", [])],
            symbols={str(k): [int(i) for i in v] for k, v in data.get("symbols", {}).items()},
            shape_args={str(k): [str(n) for n in v] for k, v in data.get("shape_args", {}).items()},
            shape_values={str(k): int(v) for k, v in data.get("shape_values", {}).items()},
            input_types=[{"shape": [d if isinstance(d, str) else int(d) for d in t["shape"]],
                          "dtype": str(t["dtype"])} for t in data.get("input_types", [])],
            externals=[str(name) for name in data.get("externals", [])],
        )

    def symbol_sizes(self, inputs: dict) -> dict[str, int]:
        """The size of each symbolic dimension in this run, read off the inputs (by name)."""
        return {name: int(inputs[self.inputs[position]].shape[axis])
                for name, (position, axis) in self.symbols.items()}

    @property
    def num_copies(self) -> int:
        return sum(1 for step in self.steps if step["kind"] == "copy")


def stage_plan(split_mod: tvm.IRModule) -> StagePlan:
    """Read the plan from a module that SplitByDevice produced."""
    vdevices = module_vdevices(split_mod)
    main = main_function(split_mod)
    names: dict = {}

    def name_of(var: relax.Var) -> str:
        if var not in names:
            base, suffix = var.name, 0
            taken = set(names.values())
            while (candidate := base if suffix == 0 else f"{base}_{suffix}") in taken:
                suffix += 1
            names[var] = candidate
        return names[var]

    inputs = [name_of(p) for p in main.params]
    symbols: dict[str, list[int]] = {}
    input_types = []
    for param in main.params:
        ty = param.ty
        if isinstance(ty, relax.TensorType) and ty.shape is not None:
            input_types.append({"shape": [str(d.name) if isinstance(d, tvm.tirx.Var) else int(d)
                                          for d in ty.shape.values], "dtype": str(ty.dtype)})
    for position, param in enumerate(main.params):
        for ty in [param.ty] if isinstance(param.ty, relax.TensorType) else []:
            for axis, dim in enumerate(ty.shape.values if ty.shape is not None else []):
                if isinstance(dim, tvm.tirx.Var):
                    symbols.setdefault(str(dim.name), [position, axis])
    shape_args: dict[str, list[str]] = {}
    steps: list[dict] = []
    externals: set[str] = set()
    call_of: dict = {}
    for binding in bindings(main):
        var, value = binding.var, binding.value
        if is_call_to(value, TO_VDEVICE):
            target_vdevice = value.attrs.dst_vdevice
            device = vdevice_index(vdevices, target_vdevice)
            steps.append(
                {"kind": "copy", "source": name_of(value.args[0]), "result": name_of(var), "device": device}
            )
        elif isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
            stage = split_mod[value.op]
            args = []
            for param, arg in zip(stage.params, value.args):
                if isinstance(arg, relax.ShapeExpr):
                    dims = [str(d.name) for d in arg.values]
                    missing = [d for d in dims if d not in symbols]
                    if missing:
                        raise UnsupportedModelError(
                            f"stage {value.op.name_hint!r} needs symbolic dimension(s) {missing}, "
                            "which no input of `main` carries in its shape: the runtime could not "
                            "tell their size; give `main` an input with that dimension"
                        )
                    shape_args[param.name] = dims
                    args.append(param.name)
                else:
                    args.append(name_of(arg))
            externals.update(operator_callee(b.value) for b in bindings(stage) if is_external_call(b.value))
            device = int(stage.attrs[DEVICE_ATTR])
            step = {
                "kind": "call",
                "stage": value.op.name_hint,
                "device": device,
                "module": device_label(vdevices, device),
                "args": args,
                "outputs": [None] * len(stage.ret_ty.fields),
            }
            steps.append(step)
            call_of[var] = step
        elif isinstance(value, relax.TupleGetItem) and value.tuple_value in call_of:
            call_of[value.tuple_value]["outputs"][value.index] = name_of(var)
        else:
            raise UnsupportedModelError(
                f"the split `main` has an unexpected binding {var.name!r}: build_stages reads only "
                "modules produced by SplitByDevice"
            )
    result = main.body.body
    fields = list(result.fields) if isinstance(result, relax.Tuple) else [result]
    devices = [
        {"target": str(v.target.kind.name), "target_json": _target_dict(v.target), "index": int(v.vdevice_id)}
        for v in vdevices
    ]
    return StagePlan(
        inputs=inputs,
        steps=steps,
        outputs=[name_of(f) for f in fields],
        output_is_tuple=isinstance(result, relax.Tuple),
        devices=devices,
        symbols=symbols,
        shape_args=shape_args,
        input_types=input_types if len(input_types) == len(inputs) else [],
        externals=sorted(externals),
    )


def _target_dict(target: tvm.target.Target) -> dict:
    return {str(k): (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in target.export().items() if k in ("kind", "arch", "mcpu", "mtriple", "num-cores", "max_num_threads", "thread_warp_size")}


def device_module(split_mod: tvm.IRModule, stages: list[str], target: tvm.target.Target,
                  prefix: str = "") -> tvm.IRModule:
    """One device's module: each of ``stages`` as a Relax function named ``prefix`` + its name,
    and every PrimFunc they call (once, however many stages call it).

    Each PrimFunc carries ``target`` explicitly, so fusion can never move it to another device.
    """
    functions = {}
    for stage_name in stages:
        stage = split_mod[stage_name]
        standalone = rebuild_function(stage, lambda _: None, strip_param_vdevices=True)
        standalone = standalone.without_attr(DEVICE_ATTR).without_attr(STAGE_ATTR)
        functions[relax.GlobalVar(prefix + stage_name)] = standalone.with_attr(
            "global_symbol", prefix + stage_name)
        for binding in bindings(stage):
            if is_call_to(binding.value, CALL_TIR):
                callee = binding.value.args[0]
                functions[callee] = split_mod[callee].with_attr("target", target)
    return tvm.IRModule(functions)


def compile_module(module: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """Compile one device's module for its target, GPU functions with a real GPU schedule.

    The module is already legalized, folded and fused (``prepare_pipeline``): only TVM's dataflow
    lowering and finalizing passes of the target's backend run, then TIR lowering and code
    generation, all in one build (one LLVM module: its set-up costs 50-90 ms on the development
    machine whatever the module's size, so a build per stage would pay it per stage).
    """
    passes = []
    if is_gpu_target(target):
        passes += [gpu_schedule_pass(), require_gpu_schedules()]
    # TVM 0.27's backend packages do not re-export dataflow_lower_passes, so
    # relax.pipeline.dataflow_lower_passes raises; take the passes from the backend modules.
    backend = importlib.import_module(
        f"tvm.relax.backend.{BACKEND_OF_KIND.get(target.kind.name, 'gpu_generic')}.pipeline"
    )
    passes += backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
    with target:
        return tvm.compile(module, target=target, relax_pipeline=tvm.transform.Sequential(passes))


def build_stages(split_mod: tvm.IRModule, progress=None, database=None,
                 prefix: str = "") -> tuple[StagePlan, dict]:
    """Compile the stages of ``split_mod``: one executable per device, whose functions are that
    device's stages, for the device's target.

    Stage and module names get ``prefix`` (the entry function's, for a module of several). Each
    call step of the plan names its ``module`` (the device's, :func:`device_label`), and the
    runtime calls the stage by its name in that module. ``database`` (a
    :class:`~.tuning_database.TuningDatabase`) gives kernels their tuned schedules; one
    :class:`~tvm_place.errors.UntunedKernelWarning` names the devices whose kernels it lacks
    (all of them without a database). Returns the plan and ``{module name: executable}``.
    """
    plan = stage_plan(split_mod)
    vdevices = module_vdevices(split_mod)
    stages_of: dict[int, list[str]] = {}
    for step in plan.steps:
        if step["kind"] == "call":
            stages_of.setdefault(step["device"], []).append(step["stage"])
            step["stage"] = prefix + step["stage"]
            step["module"] = prefix + step["module"]
    executables = {}
    untuned: dict[str, tuple[str, list[str], int]] = {}
    for number, (device, stages) in enumerate(sorted(stages_of.items())):
        name = prefix + device_label(vdevices, device)
        if progress is not None:
            progress(f"compiling {name} ({len(stages)} stage(s))", number / len(stages_of))
        target = vdevices[device].target
        schedules = ApplyTunedSchedules(database, target)
        executables[name] = compile_module(schedules(device_module(split_mod, stages, target, prefix)),
                                           target)
        label = f"{'gpu' if is_gpu_target(target) else 'cpu'}:{int(vdevices[device].vdevice_id)}"
        untuned[label] = (str(target.kind.name), schedules.untuned,
                          len(schedules.tuned) + len(schedules.untuned))
    warn_untuned(untuned, database)
    return plan, executables
