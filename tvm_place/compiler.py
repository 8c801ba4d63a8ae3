"""``tvm_place.compile``: the one function that joins the rooms (a module named `compiler`, since
a submodule called `compile` would shadow the function on the package).

collect the operator graph -> cost it per device -> solve -> annotate -> split -> build per target.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from . import solvers
from .cores import all_cores
from .cost import (AnalyticalCostModel, LearnedCostModel, MeasuredCostModel, TunedCostModel, compute_costs,
                   transfer_costs)
from .errors import InfeasibleError, InvalidPlacementError, InvalidTargetError, UnsupportedModelError
from .evaluate import evaluate, validate
from .entries import SEPARATOR, Entry, entry_placement, joint_problem
from .graph import Device, Placement, PlacementProblem
from .options import COST_MODELS, PlaceOptions
from .report import format_report
from .runtime.placed import EntryFunction, PlacedModule, format_entries
from .targets import TargetDevice, resolve_targets

#: Aliases a user may write for a device kind in pins (``cuda:0`` is ``gpu:0``).
KIND_ALIASES = {"cpu": "cpu", "llvm": "cpu", "gpu": "gpu", "cuda": "gpu"}


def _progress_printer(enabled: bool):
    if not enabled:
        return None
    last = [0.0]

    def show(message: str, fraction: float | None = None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and fraction not in (None, 0.0):
            return
        last[0] = now
        done = "" if fraction is None else f" ({fraction:.0%})"
        print(f"[tvm-place] {message}{done}", file=sys.stderr, flush=True)

    return show


def _cost_model(cost_model: Any, time_limit: float):
    """The model a ``cost_model`` option names (see :data:`~tvm_place.options.COST_MODELS`), or
    the CostModel given; ``time_limit``: the solve's, which bounds ``auto``'s calibration on first
    use (0: none)."""
    if cost_model == "auto":
        from .cost.auto import AutoCostModel

        return AutoCostModel(time_limit=time_limit)
    if cost_model == "analytical":
        return AnalyticalCostModel()
    if cost_model == "measured":
        return MeasuredCostModel()
    if cost_model == "calibrated":
        from .cost.calibrate import CalibratedCostModel

        return CalibratedCostModel()
    if cost_model == "learned":
        return LearnedCostModel()
    if hasattr(cost_model, "op_time"):
        return cost_model
    raise InvalidTargetError(
        f"unknown cost model {cost_model!r}; use one of {', '.join(map(repr, COST_MODELS))} or "
        "an object with op_time()"
    )


def _device_index(devices: Sequence[TargetDevice], name: str, what: str) -> int:
    kind, _, index = name.partition(":")
    kind = KIND_ALIASES.get(kind.strip().lower())
    if kind is not None and index.strip().isdigit():
        for position, device in enumerate(devices):
            if device.kind == kind and device.index == int(index):
                return position
    raise InfeasibleError(
        f"{what} names device {name!r}, but the targets give {[d.name for d in devices]}; "
        "add that target or change the pin"
    )


def tuning_database(database: Any):
    """A :class:`~tvm_place.passes.tuning_database.TuningDatabase` from one or a directory."""
    from .passes.tuning_database import TuningDatabase

    return database if isinstance(database, TuningDatabase) else TuningDatabase(database)


def entry_module(mod: tvm.IRModule, entry: str = "main") -> tvm.IRModule:
    """``mod`` with its Relax function ``entry`` as ``main`` (what the passes place), its other
    Relax functions left out (an ``nn.Module.export_tvm`` module names it ``forward``)."""
    if not isinstance(mod, tvm.IRModule):
        raise UnsupportedModelError(f"expected a tvm.IRModule, got a {type(mod).__name__}")
    relax_functions = sorted(gv.name_hint for gv, f in mod.functions_items() if isinstance(f, relax.Function))
    if entry not in [gv.name_hint for gv in mod.get_global_vars()]:
        hint = f"; pass entry={relax_functions[0]!r}" if len(relax_functions) == 1 else (
            f"; pass entry= one of {relax_functions}" if relax_functions else "")
        raise UnsupportedModelError(
            f"the module has no function {entry!r} to place (its Relax functions: "
            f"{relax_functions}){hint}"
        )
    func = mod[entry]
    if not isinstance(func, relax.Function):
        raise UnsupportedModelError(f"{entry!r} is not a Relax function; tvm-place places a Relax function")
    if entry == "main":
        return mod
    functions = {gv: f for gv, f in mod.functions_items() if not isinstance(f, relax.Function)}
    functions[relax.GlobalVar("main")] = func.with_attr("global_symbol", "main")
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def prepare(mod: tvm.IRModule, entry: str = "main") -> tvm.IRModule:
    """Lower a user's module to fused TIR operators (tvm_place.passes.prepare_pipeline), its
    function ``entry`` as ``main``."""
    from .passes import prepare_pipeline

    mod = entry_module(mod, entry)
    _refuse_boolean_cumsum(mod["main"])
    try:
        return prepare_pipeline()(mod)
    except Exception as err:  # TVM's own failure: report its last line, not a deep traceback
        lines = str(err).strip().splitlines()
        raise UnsupportedModelError(
            f"TVM could not lower the module to TIR operators: {lines[-1] if lines else err!r}. "
            "Check that every operator has a legalization (LegalizeOps)"
        ) from None


def _refuse_boolean_cumsum(func: relax.Function) -> None:
    """TVM 0.27 lowers ``cumsum`` of a boolean tensor to a kernel its LLVM code generator
    rejects ("MatchesCode(kDLFloat)"); say so before the build fails deep inside TVM."""
    cumsum = tvm.ir.Op.get("relax.cumsum")
    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.same_as(cumsum):
            ty = expr.args[0].ty
            if isinstance(ty, relax.TensorType) and str(ty.dtype) == "bool":
                found.append(expr)

    relax.analysis.post_order_visit(func, visit)
    if found:
        raise UnsupportedModelError(
            "the model takes a cumsum over a boolean tensor, which TVM 0.27 cannot compile (its "
            "LLVM code generator rejects the kernel); Hugging Face decoders called without an "
            "attention mask make one while preparing their mask. Cast the tensor to an integer "
            "type before the cumsum"
        )


def build_problem(
    prepared: tvm.IRModule,
    collected,
    devices: Sequence[TargetDevice],
    cost_model,
    pins: Mapping[str, str] | None = None,
    name: str = "module",
    progress=None,
    external_costs: Mapping | None = None,
) -> tuple[PlacementProblem, list[list[str]]]:
    """The placement problem of a prepared module: costs per device, memory, user and IR pins."""
    compute_time, cost_sources = compute_costs(collected, devices, cost_model, progress, external_costs)
    graph = collected.graph
    for u, call in collected.externals.items():
        if not np.isfinite(compute_time[u]).any():
            raise UnsupportedModelError(
                f"operator {graph.nodes[u].name!r} calls the external function {call.name!r}, "
                f"which no device can run as far as tvm-place knows ({cost_sources[u][0]}): register "
                "it in this process (tvm_ffi.register_global_func) before compiling, so that "
                "CPU devices measure it, or give its time per call where it exists, "
                f"external_costs={{{call.name!r}: {{'{devices[0].name}': 1e-3}}}}, and pin it "
                f"there, pins={{{graph.nodes[u].name!r}: '{devices[0].name}'}}"
            )
    problem_pins: dict[int, tuple[int, ...]] = {}
    for u, (kind, index) in collected.pins.items():
        problem_pins[u] = (_device_index(devices, f"{kind}:{index}", f"R.hint_on_device on {graph.nodes[u].name!r}"),)
    pinned_by: dict[int, tuple[str, str]] = {}  # operator -> the user pin that pinned it
    for pattern, device_name in (pins or {}).items():
        matched = [u for u, node in enumerate(graph.nodes) if fnmatch.fnmatchcase(node.name, pattern)]
        if not matched:
            raise InfeasibleError(
                f"pin {pattern!r} matches no operator; operator names look like "
                f"{graph.names[:3]} (see placed.report())"
            )
        device = _device_index(devices, device_name, f"pin {pattern!r}")
        for u in matched:
            earlier = pinned_by.get(u)
            if earlier is not None and problem_pins[u] != (device,):
                raise InfeasibleError(
                    f"operator {graph.nodes[u].name!r} is pinned to {earlier[1]} by pin "
                    f"{earlier[0]!r} and to {device_name} by pin {pattern!r}: make the patterns "
                    "name different operators (a narrower glob)")
            pinned_by[u] = (pattern, device_name)
            problem_pins[u] = (device,)
    problem = PlacementProblem(
        graph=graph,
        devices=[
            Device(
                name=d.name,
                kind=d.kind,
                memory_capacity=d.profile.memory_bytes,
                target=str(d.target),
                profile=d.profile.name,
            )
            for d in devices
        ],
        compute_time=compute_time,
        transfer_time=transfer_costs(graph, devices),
        # Outputs at the symbolic dimensions' upper bounds, where the function gives them.
        memory=np.array([node.param_bytes + peak for node, peak in zip(graph.nodes, collected.peak_output_bytes)]),
        pins=problem_pins,
        colour_classes=collected.colour_classes,  # training graphs: forward op + its backward ops
        name=name,
    )
    if hasattr(cost_model, "restore_costs"):  # a cost snapshot: transfers and memory as saved too
        problem = cost_model.restore_costs(problem)
    return problem, cost_sources


@dataclass
class Placed:
    """What :func:`place` decided about a module, before anything is built.

    ``prepared``: the module lowered to fused TIR operators; ``devices``: the resolved targets;
    ``problem``: its placement problem (the costs it used: save it as a cost snapshot,
    :class:`tvm_place.cost.Snapshot`); ``cost_sources``: where each cost came from
    (``[operator][device]``: what gave the number, e.g. ``"measured (cached)"``); ``placement``: the
    solved (or given and validated) placement; ``shape_values``: the size each symbolic
    dimension was costed at; ``fallbacks``: a line per operator that a target cannot build (and
    so runs elsewhere), with why. With several entry functions (``entries=``), ``problem`` and
    ``placement`` are the joint ones (:mod:`tvm_place.entries`), ``prepared`` is None, and
    ``entries`` has each function's part.
    """

    prepared: tvm.IRModule | None
    devices: list[TargetDevice]
    problem: PlacementProblem
    cost_sources: list[list[str]]
    placement: Placement
    shape_values: dict[str, int] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    entries: list["PlacedEntry"] = field(default_factory=list)


@dataclass
class PlacedEntry:
    """One entry function of a module placed with others: its costs (``entry.problem``), its
    lowered module, and its part of the joint placement."""

    entry: Entry
    prepared: tvm.IRModule
    cost_sources: list[list[str]]
    placement: Placement | None = None
    shape_values: dict[str, int] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)


def _entry_calls(entry: str, entries) -> dict[str, float] | None:
    """``entries`` as ``{function: calls per round}`` (a list calls each once), None for one."""
    if entries is None:
        return None
    if entry != "main":
        raise InvalidTargetError("give entry= or entries=, not both")
    calls = dict(entries) if isinstance(entries, Mapping) else {str(name): 1.0 for name in entries}
    if len(calls) < 2 or len(calls) != len(list(entries)):
        raise InvalidTargetError(
            f"entries={entries!r}: name two or more distinct entry functions (one: use entry=)"
        )
    for name, count in calls.items():
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not 0 < count < np.inf:
            raise InvalidTargetError(
                f"entries[{name!r}] = {count!r}: calls per round must be a number above 0"
            )
    return {str(name): float(count) for name, count in calls.items()}


def _hints_by_function(mod, calls: dict, shape_hints) -> dict:
    """Each function's share of ``shape_hints`` (the dimensions its shapes use); a hint no
    function uses is an error."""
    from .passes._ir import symbolic_vars

    hints = {str(k): v for k, v in (shape_hints or {}).items()}
    shares = {}
    for function in calls:
        func = entry_module(mod, function)["main"]
        names = {str(var.name) for var in symbolic_vars(func)}
        shares[function] = {k: v for k, v in hints.items() if k in names}
    unused = sorted(set(hints) - {k for share in shares.values() for k in share})
    if unused:
        raise UnsupportedModelError(
            f"shape hints name {unused}, which none of the functions {list(calls)} use in its shapes"
        )
    return shares


def _cost_entry(mod, entry: str, devices, model, options: PlaceOptions, progress, shape_hints,
                calls=1.0):
    """One entry function lowered, collected and costed: a :class:`PlacedEntry` without its
    placement, and the function's collected graph."""
    from .passes import collect_op_graph

    prepared = prepare(mod, entry)
    collected = collect_op_graph(prepared, shape_hints)
    problem, cost_sources = build_problem(prepared, collected, devices, model, options.pins, options.name,
                                          progress, options.external_costs)
    problem, fallbacks = _without_unbuildable(problem, collected, devices, model, progress)
    return PlacedEntry(Entry(entry, problem, calls, collected.weights), prepared, cost_sources,
                       shape_values=collected.shape_values, fallbacks=fallbacks)


def _given_placement(problem: PlacementProblem, placement, objective: str, time_limit: float) -> Placement:
    """A user's placement (a Placement or a device per operator), validated and evaluated."""
    given = placement if isinstance(placement, Placement) else Placement(
        device_of=np.asarray(placement), objective=objective, value=0.0, lower_bound=0.0,
        method="given")
    validate(problem, given)
    value = evaluate(problem, given).objective(objective)
    with all_cores():  # as in solvers.solve: the bounds' CP-SAT workers on every core
        bound = solvers.bounds.best_bound(problem, objective, bool(given.replicas),
                                          solvers.BOUND_SHARE * time_limit)
    return Placement(
        device_of=given.device_of,
        replicas=given.replicas,
        objective=objective,
        value=value,
        lower_bound=min(value, bound),
        method="given",
        device_names=problem.device_names,
        operators=list(problem.graph.names),
    )


def place(mod: tvm.IRModule, targets: Sequence[Any], options: PlaceOptions | None = None, *,
          progress=None, **option_values) -> Placed:
    """Lower, cost and place ``mod`` without building it (the options of :func:`compile`, as a
    :class:`~tvm_place.options.PlaceOptions` or as keywords).

    ``progress`` is a callback ``(message, fraction)`` or None.
    """
    options = PlaceOptions.of(options, **option_values)
    objective, time_limit, entry = options.objective, options.time_limit, options.entry
    calls = _entry_calls(entry, options.entries)
    devices = resolve_targets(targets, options.profiles)
    # a given placement is priced, not chosen: no calibration (time 0) would change it
    model = _cost_model(options.cost_model, time_limit if options.placement is None else 0.0)
    if options.database is not None and not hasattr(model, "restore_costs"):  # a snapshot keeps its costs
        model = TunedCostModel(tuning_database(options.database), model)
    hints = _hints_by_function(mod, calls, options.shape_hints) if calls else {entry: options.shape_hints}
    parts = [_cost_entry(mod, function, devices, model, options, progress, hints[function], count)
             for function, count in (calls or {entry: 1.0}).items()]
    if calls is None:
        problem, cost_sources = parts[0].entry.problem, parts[0].cost_sources
    else:
        problem = joint_problem([part.entry for part in parts], objective, options.name)
        boundary = [["entry boundary"] * len(devices)]
        cost_sources = [row for position, part in enumerate(parts)
                        for row in (boundary if position and objective == "latency" else []) + part.cost_sources]
    if options.placement is None:
        placement = solvers.solve(problem, objective, options.method, time_limit, progress)
    else:
        placement = _given_placement(problem, options.placement, objective, time_limit)
    for group in placement.replicas:
        targets_of_group = {str(devices[d].target) for d in group}
        if calls is not None or len(targets_of_group) > 1:
            raise InvalidPlacementError(
                f"the placement replicates operators over {[devices[d].name for d in group]}"
                + (", but several entry functions run without replicas: use another method"
                   if calls is not None else
                   f", whose targets differ ({sorted(targets_of_group)}); a replica runs its "
                   "group's stages as compiled for the group's first device, so the runtime "
                   "needs devices of one target: solve with replicas among identical devices "
                   "only, or another method")
            )
    if calls is None:
        part = parts[0]
        return Placed(part.prepared, devices, problem, cost_sources, placement, part.shape_values,
                      part.fallbacks)
    for part in parts:
        part.placement = entry_placement(placement, part.entry)
    return Placed(None, devices, problem, cost_sources, placement,
                  fallbacks=[f"{p.entry.name}{SEPARATOR}{line}" for p in parts for line in p.fallbacks],
                  entries=parts)


def _without_unbuildable(problem: PlacementProblem, collected, devices, model, progress):
    """``problem`` with every operator unsupported (infinite cost) where its device's target
    cannot build its kernel (:mod:`tvm_place.cost.support`), and a line per such operator for the
    report. An operator no allowed device can build is an error naming it and why."""
    from .cost.support import unbuildable

    cache = getattr(model, "cache", None)
    found = unbuildable(collected, devices, None if cache is None else cache.path.parent, progress)
    if not found:
        return problem, []
    compute_time = problem.compute_time.copy()
    allowed = problem.allowed()
    names = problem.device_names
    lines = []
    for u, reasons in sorted(found.items()):
        name = problem.graph.nodes[u].name
        for d in reasons:
            compute_time[u, d] = np.inf
        left = [d for d in range(len(devices)) if allowed[u, d] and d not in reasons]
        if not left:
            raise InfeasibleError(
                f"operator {name!r} cannot run on any device it may use: "
                + "; ".join(f"{names[d]} cannot build it ({why})" for d, why in reasons.items())
                + ". Add a target that builds it, or pin it to one that does"
            )
        lines.append(f"{name}: not on {', '.join(names[d] for d in reasons)} "
                     f"({next(iter(reasons.values()))})")
    return dataclasses.replace(problem, compute_time=compute_time), lines


def compile(  # noqa: A001 - the public name users call, as in tvm.compile
    mod: tvm.IRModule,
    targets: Sequence[Any],
    options: PlaceOptions | None = None,
    *,
    progress: Any = False,
    **option_values,
) -> PlacedModule:
    """Place ``mod``'s operators on ``targets``, split it, and compile one executable per device
    (all of the device's stages; one per device and entry function with ``entries``).

    The options are one :class:`~tvm_place.options.PlaceOptions` (``options=``), or keywords
    (``objective="throughput"``), which override it; ``progress``: True prints progress on
    stderr, a callable ``(message, fraction)`` receives it.

    ``targets``: a list of target strings, dicts or ``tvm.target.Target``; a repeated target is
    another device of that kind. ``objective``: ``"latency"`` or ``"throughput"``. ``cost_model``:
    ``"auto"`` (the default: per device the best of the models below available for it, the
    learned model, else the calibrated profile, else the profile as written; the report says
    which priced each device, :mod:`tvm_place.cost.auto`),
    ``"analytical"`` (roofline from device profiles), ``"calibrated"`` (the roofline on profiles
    fitted to micro-benchmarks on this machine's devices, once per device and cached; devices it
    lacks keep their profiles), ``"learned"`` (boosted trees trained on this CPU's measured
    kernels, :mod:`tvm_place.cost.learned`; targets without a trained model fall back to
    analytical), ``"measured"`` (time kernels on this machine;
    devices it lacks fall back to analytical), a cost snapshot (``tvm_place.cost.Snapshot(path)``:
    the costs an earlier placement used, so it is reproduced without measuring), or a CostModel.
    ``pins``: op-name glob -> device name (``{"fused_conv2d*": "gpu:0"}``); ``R.hint_on_device``
    in the module pins too. ``placement``: apply this placement instead of solving (it is
    validated). ``database``: a tuning database directory (from :func:`tvm_place.tune`): kernels
    it holds are built with their tuned schedules and costed by their tuned times; kernels it
    lacks (all, without one) are built untuned, with an ``UntunedKernelWarning``.

    ``entry``: the Relax function to place (``"forward"`` for an ``nn.Module.export_tvm``
    module; its weight parameters stay parameters: call the result with them). Symbolic shape
    dimensions keep their names in the built stages, so the result runs at any size; they are
    costed at ``shape_hints`` (``{"n": 128}``), else at the function's ``tir_var_upper_bound``
    (then ``tir_var_lower_bound``) attribute; memory at the upper bound where one is given.

    ``entries``: several entry functions placed together (``["prefill", "decode"]``, or
    ``{"prefill": 1, "decode": 32}``: calls of each per round, which weigh their costs): a
    weight the functions share lives on one device for all of them, each function gets its own
    stages, and the result is called per function, ``placed["decode"](*inputs)``. See
    :mod:`tvm_place.entries` for the joint objective.

    External calls (``R.call_dps_packed`` of a library kernel or a function registered with
    ``tvm_ffi``) are operators too: on CPU devices they are timed by calling the function in
    this process; ``external_costs`` gives their seconds per call instead
    (``{"my.kernel": 2e-4}``, or ``{"my.kernel": {"gpu:0": 5e-5}}``: only on the devices named).
    Their stages run on thread workers (this process has the function).
    """
    show = progress if callable(progress) else _progress_printer(progress)
    options = PlaceOptions.of(options, **option_values)
    database = None if options.database is None else tuning_database(options.database)
    placed = place(mod, targets, options.replace(database=database), progress=show)
    devices, problem, placement = placed.devices, placed.problem, placed.placement
    if not placed.entries:
        plan, executables, split = _build(placed.prepared, placement, devices, show, database)
        plan.shape_values = dict(placed.shape_values)
        return PlacedModule(
            plan=plan,
            executables=executables,
            devices=[{"name": d.name, "kind": d.kind, "index": d.index} for d in devices],
            placement=placement,
            report_text=format_report(problem, placement, placed.cost_sources, _num_stages(plan),
                                      plan.num_copies, placed.shape_values, placed.fallbacks),
            problem=problem,
            split_module=split,
            fallbacks=placed.fallbacks,
        )
    executables, functions, stage_counts, copies = {}, {}, 0, 0
    for part in placed.entries:
        plan, built, split = _build(part.prepared, part.placement, devices, show, database,
                                    prefix=f"{part.entry.name}__")
        plan.shape_values = dict(part.shape_values)
        executables.update(built)
        stage_counts, copies = stage_counts + _num_stages(plan), copies + plan.num_copies
        functions[part.entry.name] = EntryFunction(
            plan=plan, problem=part.entry.problem, placement=part.placement, calls=part.entry.calls,
            weights=part.entry.weights,
            report=format_report(part.entry.problem, part.placement, part.cost_sources,
                                 _num_stages(plan), plan.num_copies, part.shape_values,
                                 part.fallbacks),
            split_module=split)
    return PlacedModule(
        plan=None,
        executables=executables,
        devices=[{"name": d.name, "kind": d.kind, "index": d.index} for d in devices],
        placement=placement,
        report_text=format_report(problem, placement, placed.cost_sources, stage_counts, copies,
                                  fallbacks=placed.fallbacks) + "\n" + format_entries(functions),
        problem=problem,
        fallbacks=placed.fallbacks,
        functions=functions,
    )


def _num_stages(plan) -> int:
    return sum(1 for step in plan.steps if step["kind"] == "call")


def _build(prepared, placement: Placement, devices, show, database, prefix: str = ""):
    """Annotate, split and build one placed function: ``(plan, {module: executable}, split
    module)``, its stages and modules named with ``prefix``."""
    from .passes import AnnotatePlacement, SplitByDevice, build_stages

    split = tvm.transform.Sequential(
        [AnnotatePlacement(placement.device_of, [d.target for d in devices]),
         SplitByDevice(placement.order)]
    )(prepared)
    plan, executables = build_stages(split, show, database, prefix)
    return plan, executables, split
