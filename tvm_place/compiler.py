"""``tvm_place.compile``: the one function that joins the rooms (a module named `compiler`, since
a submodule called `compile` would shadow the function on the package).

collect the operator graph -> cost it per device -> solve -> annotate -> split -> build per target.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import tvm

from . import solvers
from .cost import AnalyticalCostModel, MeasuredCostModel, TunedCostModel, compute_costs, transfer_costs
from .errors import InfeasibleError, InvalidPlacementError, InvalidTargetError, UnsupportedModelError
from .evaluate import evaluate, validate
from .graph import Device, Placement, PlacementProblem
from .report import format_report
from .runtime.placed import PlacedModule
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


def _cost_model(cost_model: Any):
    if cost_model == "analytical":
        return AnalyticalCostModel()
    if cost_model == "measured":
        return MeasuredCostModel()
    if hasattr(cost_model, "op_time"):
        return cost_model
    raise InvalidTargetError(
        f"unknown cost model {cost_model!r}; use 'analytical', 'measured' or an object with op_time()"
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


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Lower a user's module to fused TIR operators (tvm_place.passes.prepare_pipeline)."""
    from .passes import prepare_pipeline
    from .passes._ir import main_function

    if not isinstance(mod, tvm.IRModule):
        raise UnsupportedModelError(f"expected a tvm.IRModule, got a {type(mod).__name__}")
    main_function(mod)
    try:
        return prepare_pipeline()(mod)
    except Exception as err:  # TVM's own failure: report its last line, not a deep traceback
        lines = str(err).strip().splitlines()
        raise UnsupportedModelError(
            f"TVM could not lower the module to TIR operators: {lines[-1] if lines else err!r}. "
            "Check that every operator has a legalization (LegalizeOps) and shapes are static"
        ) from None


def build_problem(
    prepared: tvm.IRModule,
    collected,
    devices: Sequence[TargetDevice],
    cost_model,
    pins: Mapping[str, str] | None = None,
    name: str = "module",
    progress=None,
) -> tuple[PlacementProblem, list[list[str]]]:
    """The placement problem of a prepared module: costs per device, memory, user and IR pins."""
    compute_time, sources = compute_costs(prepared, collected, devices, cost_model, progress)
    graph = collected.graph
    problem_pins: dict[int, tuple[int, ...]] = {}
    for u, (kind, index) in collected.pins.items():
        problem_pins[u] = (_device_index(devices, f"{kind}:{index}", f"R.hint_on_device on {graph.nodes[u].name!r}"),)
    for pattern, device_name in (pins or {}).items():
        matched = [u for u, node in enumerate(graph.nodes) if fnmatch.fnmatchcase(node.name, pattern)]
        if not matched:
            raise InfeasibleError(
                f"pin {pattern!r} matches no operator; operator names look like "
                f"{graph.names[:3]} (see placed.report())"
            )
        device = _device_index(devices, device_name, f"pin {pattern!r}")
        for u in matched:
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
        memory=np.array([node.param_bytes + node.output_bytes for node in graph.nodes]),
        pins=problem_pins,
        colour_classes=collected.colour_classes,  # training graphs: forward op + its backward ops
        name=name,
    )
    if hasattr(cost_model, "restore_costs"):  # a cost snapshot: transfers and memory as saved too
        problem = cost_model.restore_costs(problem)
    return problem, sources


@dataclass
class Placed:
    """What :func:`place` decided about a module, before anything is built.

    ``prepared``: the module lowered to fused TIR operators; ``devices``: the resolved targets;
    ``problem``: its placement problem (the costs it used: save it as a cost snapshot,
    :class:`tvm_place.cost.Snapshot`); ``sources``: where each cost came from; ``placement``: the
    solved (or given and validated) placement.
    """

    prepared: tvm.IRModule
    devices: list[TargetDevice]
    problem: PlacementProblem
    sources: list[list[str]]
    placement: Placement


def place(
    mod: tvm.IRModule,
    targets: Sequence[Any],
    objective: str = "latency",
    method: str = "auto",
    time_limit: float = 60.0,
    cost_model: Any = "analytical",
    profiles: Sequence[str | None] | None = None,
    pins: Mapping[str, str] | None = None,
    placement: Placement | Sequence[int] | None = None,
    progress=None,
    name: str = "module",
    database: Any = None,
) -> Placed:
    """Lower, cost and place ``mod`` without building it (the options of :func:`compile`).

    ``progress`` is a callback ``(message, fraction)`` or None.
    """
    from .passes import collect_op_graph

    devices = resolve_targets(targets, profiles)
    prepared = prepare(mod)
    collected = collect_op_graph(prepared)
    model = _cost_model(cost_model)
    if database is not None and not hasattr(model, "restore_costs"):  # a snapshot keeps its costs
        model = TunedCostModel(tuning_database(database), model)
    problem, sources = build_problem(prepared, collected, devices, model, pins, name, progress)
    if placement is None:
        placement = solvers.solve(problem, objective, method, time_limit, progress)
    else:
        given = placement if isinstance(placement, Placement) else Placement(
            device_of=np.asarray(placement), objective=objective, value=0.0, lower_bound=0.0,
            method="given")
        validate(problem, given)
        value = evaluate(problem, given).objective(objective)
        placement = Placement(
            device_of=given.device_of,
            replicas=given.replicas,
            objective=objective,
            value=value,
            lower_bound=min(value, solvers.bounds.best_bound(
                problem, objective, bool(given.replicas), solvers.CUT_BOUND_SHARE * time_limit)),
            method="given",
            device_names=problem.device_names,
            operators=list(problem.graph.names),
        )
    for group in placement.replicas:
        targets_of_group = {str(devices[d].target) for d in group}
        if len(targets_of_group) > 1:
            raise InvalidPlacementError(
                f"the placement replicates operators over {[devices[d].name for d in group]}, "
                f"whose targets differ ({sorted(targets_of_group)}); a replica runs its group's "
                "stages as compiled for the group's first device, so the runtime needs devices "
                "of one target: solve with replicas among identical devices only, or another method"
            )
    return Placed(prepared, devices, problem, sources, placement)


def compile(  # noqa: A001 - the public name users call, as in tvm.compile
    mod: tvm.IRModule,
    targets: Sequence[Any],
    objective: str = "latency",
    method: str = "auto",
    time_limit: float = 60.0,
    cost_model: Any = "analytical",
    profiles: Sequence[str | None] | None = None,
    pins: Mapping[str, str] | None = None,
    placement: Placement | Sequence[int] | None = None,
    progress: Any = False,
    name: str = "module",
    database: Any = None,
) -> PlacedModule:
    """Place ``mod``'s operators on ``targets``, split it, and compile one artifact per target.

    ``targets``: a list of target strings, dicts or ``tvm.target.Target``; a repeated target is
    another device of that kind. ``objective``: ``"latency"`` or ``"throughput"``. ``cost_model``:
    ``"analytical"`` (roofline from device profiles), ``"measured"`` (time kernels on this machine;
    devices it lacks fall back to analytical), a cost snapshot (``tvm_place.cost.Snapshot(path)``:
    the costs an earlier placement used, so it is reproduced without measuring), or a CostModel.
    ``pins``: op-name glob -> device name (``{"fused_conv2d*": "gpu:0"}``); ``R.hint_on_device``
    in the module pins too. ``placement``: apply this placement instead of solving (it is
    validated). ``database``: a tuning database directory (from :func:`tvm_place.tune`): kernels
    it holds are built with their tuned schedules and costed by their tuned times; kernels it
    lacks (all, without one) are built untuned, with an ``UntunedKernelWarning``.
    """
    from .passes import AnnotatePlacement, SplitByDevice, build_stages

    show = progress if callable(progress) else _progress_printer(progress)
    database = None if database is None else tuning_database(database)
    placed = place(
        mod, targets, objective, method, time_limit, cost_model, profiles, pins, placement, show, name,
        database,
    )
    prepared, devices, problem, sources, placement = (
        placed.prepared, placed.devices, placed.problem, placed.sources, placed.placement
    )
    split = tvm.transform.Sequential(
        [AnnotatePlacement(placement.device_of, [d.target for d in devices]),
         SplitByDevice(placement.order)]
    )(prepared)
    plan, executables = build_stages(split, show, database)
    num_stages = sum(1 for step in plan.steps if step["kind"] == "call")
    return PlacedModule(
        plan=plan,
        executables=executables,
        devices=[{"name": d.name, "kind": d.kind, "index": d.index} for d in devices],
        placement=placement,
        report_text=format_report(problem, placement, sources, num_stages, plan.num_copies),
        problem=problem,
        split_module=split,
    )
