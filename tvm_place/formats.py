"""The file formats, each read and written here and nowhere else: problems (tvm-place JSON, the
dnn-partitioning workloads and splits), plans, placements and device files. A reader checks the
file against its schema (:mod:`tvm_place.schemas`) and fails with a message naming the field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from . import schemas
from .errors import InvalidGraphError
from .graph import FORMAT_VERSION, Device, OpGraph, OpNode, PlacementProblem

if TYPE_CHECKING:
    from .graph import Placement


def _cost(x: Any) -> float:
    """A cost the schema has checked: a number, or null for unsupported (unlimited)."""
    return math.inf if x is None else float(x)


def problem_from_dict(data: Mapping, source: str = "the problem") -> PlacementProblem:
    """Build a :class:`PlacementProblem` from its JSON form (``"format": "tvm-place-problem"``),
    checked against :data:`tvm_place.schemas.PROBLEM`; ``source`` names it in errors."""
    schemas.validate(data, schemas.PROBLEM, source, InvalidGraphError)
    devices = [
        Device(
            name=d["name"],
            kind=d.get("kind", "cpu"),
            memory_capacity=_cost(d.get("memory_capacity")),
            target=d.get("target"),
            profile=d.get("profile"),
            call_overhead=float(d.get("call_overhead", 0.0)),
        )
        for d in data["devices"]
    ]
    num_nodes, num_devices = len(data["nodes"]), len(devices)

    def bad(path, problem: str, fix: str) -> InvalidGraphError:
        return schemas.field_error(source, path, problem, fix, InvalidGraphError)

    # What the schema cannot say: the cross-references.
    nodes, compute, transfer, memory = [], [], [], []
    for u, node in enumerate(data["nodes"]):
        for key in ("compute_time", "transfer_time"):
            if len(node[key]) != num_devices:
                raise bad(("nodes", u, key), f"gives {len(node[key])} times for {num_devices} devices",
                          "give one per device")
        nodes.append(
            OpNode(
                name=node["name"],
                kind=node.get("kind", "op"),
                flops=float(node.get("flops", 0.0)),
                bytes_accessed=float(node.get("bytes_accessed", 0.0)),
                output_bytes=float(node.get("output_bytes", 0.0)),
                param_bytes=float(node.get("param_bytes", 0.0)),
                is_backward=node.get("is_backward", False),
            )
        )
        compute.append([_cost(t) for t in node["compute_time"]])
        transfer.append([float(t) for t in node["transfer_time"]])
        memory.append(float(node.get("memory", 0.0)))
    nodes_named = f"the problem has nodes 0..{num_nodes - 1}"
    for i, edge in enumerate(data["edges"]):
        for j, u in enumerate(edge):
            if u >= num_nodes:
                raise bad(("edges", i, j), f"node {u} does not exist", nodes_named)
    pins = {}
    for key, ds in (data.get("pins") or {}).items():
        if int(key) >= num_nodes:
            raise bad(("pins", key), f"node {key} does not exist", nodes_named)
        for j, d in enumerate(ds):
            if d >= num_devices:
                raise bad(("pins", key, j), f"device {d} does not exist",
                          f"the problem has devices 0..{num_devices - 1}")
        pins[int(key)] = tuple(int(d) for d in ds)
    classes = data.get("colour_classes") or []
    for i, members in enumerate(classes):
        for j, u in enumerate(members):
            if u >= num_nodes:
                raise bad(("colour_classes", i, j), f"node {u} does not exist", nodes_named)
    return PlacementProblem(
        graph=OpGraph(nodes, [(int(u), int(v)) for u, v in data["edges"]]),
        devices=devices,
        compute_time=np.array(compute, dtype=np.float64).reshape(num_nodes, num_devices),
        transfer_time=np.array(transfer, dtype=np.float64).reshape(num_nodes, num_devices),
        memory=np.array(memory),
        pins=pins,
        colour_classes=[[int(u) for u in c] for c in classes],
        name=data.get("name", "problem"),
    )


def problem_to_dict(problem: PlacementProblem) -> dict:
    """``problem`` as a problem file's data (the format :func:`problem_from_dict` reads)."""
    def cost(x: float) -> float | None:
        return None if math.isinf(x) else float(x)

    return {
        "format": "tvm-place-problem",
        "version": FORMAT_VERSION,
        "name": problem.name,
        "devices": [
            {
                "name": d.name,
                "kind": d.kind,
                "memory_capacity": cost(d.memory_capacity),
                "target": d.target,
                "profile": d.profile,
                **({"call_overhead": d.call_overhead} if d.call_overhead else {}),
            }
            for d in problem.devices
        ],
        "nodes": [
            {
                "name": node.name,
                "kind": node.kind,
                "flops": node.flops,
                "bytes_accessed": node.bytes_accessed,
                "output_bytes": node.output_bytes,
                "param_bytes": node.param_bytes,
                "is_backward": node.is_backward,
                "memory": float(problem.memory[u]),
                "compute_time": [cost(t) for t in problem.compute_time[u]],
                "transfer_time": [float(t) for t in problem.transfer_time[u]],
            }
            for u, node in enumerate(problem.graph.nodes)
        ],
        "edges": problem.graph.edges.tolist(),
        "pins": {str(u): list(ds) for u, ds in sorted(problem.pins.items())},
        "colour_classes": problem.colour_classes,
    }


def problem_to_json(problem: PlacementProblem) -> str:
    """``problem`` as a problem file's text."""
    return json.dumps(problem_to_dict(problem), indent=1, sort_keys=True)


def write_problem(problem: PlacementProblem, path: str | Path) -> Path:
    """Write ``problem`` as a problem file (also the form of a cost snapshot); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(problem_to_json(problem) + "\n")
    return path


def load_problem(path: str | Path) -> PlacementProblem:
    """Read a problem file in the tvm-place JSON format."""
    return problem_from_dict(_read_json(path, "problem"), f"problem file {str(Path(path))!r}")


# -- dnn-partitioning (Tarnawski et al., NeurIPS 2020; github.com/msr-fiddle/dnn-partitioning) ------


def _read_json(path: str | Path, what: str) -> Any:
    return schemas.read_file(path, what, InvalidGraphError)


def dnn_partitioning_problem(data: Mapping, name: str = "workload",
                             source: str | None = None) -> PlacementProblem:
    """A dnn-partitioning workload as a problem: ``maxFPGAs`` accelerators, then ``maxCPUs`` CPUs.

    Accelerators (``acc:i``) run ``fpgaLatency`` (unsupported where ``supportedOnFpga`` is 0), hold
    at most ``maxSizePerFPGA`` bytes, and pay a node's edge ``cost`` to send or receive its output.
    CPUs (``cpu:j``) run ``cpuLatency``, have no memory cap and pay no communication: exactly the
    max-load rule of the workloads' README.
    """
    where = source or f"workload {name!r}"
    schemas.validate(data, schemas.DNN_WORKLOAD, where, InvalidGraphError)
    raw_nodes = sorted(data["nodes"], key=lambda node: node["id"])
    index_of = {}
    nodes, compute, memory = [], [], []
    # JSON Schema counts 2.0 (and -0.0) as integers: counts are used as Python ints below
    num_accelerators, num_cpus = int(data["maxFPGAs"]), int(data["maxCPUs"])
    for node in raw_nodes:
        node_id = node["id"]
        if node_id in index_of:
            raise InvalidGraphError(f"{where} has two nodes with id {node_id}")
        index_of[node_id] = len(nodes)
        nodes.append(
            OpNode(
                name=str(node.get("name", node_id)),
                is_backward=bool(node.get("isBackwardNode", 0)),
                external_id=node_id,
            )
        )
        fpga = float(node["fpgaLatency"]) if node["supportedOnFpga"] else math.inf
        compute.append([fpga] * num_accelerators + [float(node["cpuLatency"])] * num_cpus)
        memory.append(float(node["size"]))
    send_cost = np.zeros(len(nodes))
    edges = []
    for edge in data["edges"]:
        source, dest = edge["sourceId"], edge["destId"]
        if source not in index_of or dest not in index_of:
            raise InvalidGraphError(
                f"{where} has an edge {source} -> {dest} naming a node that does not exist"
            )
        u = index_of[source]
        # The cost is the same on every out-edge of a node (the format's rule); take the largest
        # so a file that breaks the rule is never under-charged.
        send_cost[u] = max(send_cost[u], float(edge["cost"]))
        edges.append((u, index_of[dest]))
    transfer = np.zeros((len(nodes), num_accelerators + num_cpus))
    transfer[:, :num_accelerators] = send_cost[:, None]
    classes: dict[int, list[int]] = {}
    for u, node in enumerate(raw_nodes):
        if "colorClass" in node:
            classes.setdefault(int(node["colorClass"]), []).append(u)
    devices = [
        Device(f"acc:{i}", "accelerator", memory_capacity=float(data["maxSizePerFPGA"]))
        for i in range(num_accelerators)
    ] + [Device(f"cpu:{j}", "cpu") for j in range(num_cpus)]
    return PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=devices,
        compute_time=np.array(compute).reshape(len(nodes), len(devices)),
        transfer_time=transfer,
        memory=np.array(memory),
        colour_classes=[members for _, members in sorted(classes.items())],
        name=name,
    )


def load_dnn_partitioning(path: str | Path) -> PlacementProblem:
    """Read a dnn-partitioning workload file (see :func:`dnn_partitioning_problem`)."""
    return dnn_partitioning_problem(_read_json(path, "workload"), Path(path).stem,
                                    f"workload file {str(Path(path))!r}")


def dnn_split_to_device_of(data: Mapping, problem: PlacementProblem,
                           source: str = "the split") -> np.ndarray:
    """The device of every node from a dnn-partitioning split (``fpgas[i]`` is ``acc:i``),
    checked against :data:`tvm_place.schemas.DNN_SPLIT`; ``source`` names it in errors."""
    schemas.validate(data, schemas.DNN_SPLIT, source, InvalidGraphError)
    index_of = {node.external_id: u for u, node in enumerate(problem.graph.nodes)}
    names = problem.device_names
    device_of = np.full(problem.num_ops, -1, dtype=np.int64)
    for group, prefix in (("fpgas", "acc"), ("cpus", "cpu")):
        for i, part in enumerate(data.get(group) or []):
            device_name = f"{prefix}:{i}"
            if device_name not in names:
                if part.get("nodes"):
                    raise InvalidGraphError(
                        f"the split uses {device_name}, but the workload has only {names}"
                    )
                continue
            for node_id in part.get("nodes", []):
                if node_id not in index_of:
                    raise InvalidGraphError(f"the split names node {node_id}, not in the workload")
                device_of[index_of[node_id]] = names.index(device_name)
    missing = [problem.graph.nodes[u].external_id for u in np.flatnonzero(device_of < 0)]
    if missing:
        raise InvalidGraphError(f"the split leaves {len(missing)} nodes unplaced, e.g. {missing[:5]}")
    return device_of


def load_dnn_split(path: str | Path, problem: PlacementProblem) -> np.ndarray:
    """Read a dnn-partitioning split file for ``problem``."""
    return dnn_split_to_device_of(_read_json(path, "split"), problem, f"split file {str(Path(path))!r}")


def dnn_split(problem: PlacementProblem, placement) -> dict:
    """A placement (or a device array) in the dnn-partitioning split format, loads from the one
    evaluator. Replica groups, which that format lacks, are added as ``"replicas"`` (device names;
    the nodes are listed under each group's first device)."""
    from .evaluate import evaluate, placement_arrays

    device_of, _, replicas = placement_arrays(placement, None)
    load = evaluate(problem, placement).load
    groups: dict[str, list] = {"fpgas": [], "cpus": []}
    for d, device in enumerate(problem.devices):
        members = [int(problem.graph.nodes[u].external_id) for u in np.flatnonzero(device_of == d)]
        group = "cpus" if device.kind == "cpu" else "fpgas"
        groups[group].append({"load": float(load[d]), "nodes": sorted(members)})
    split = {"cpus": groups["cpus"], "fpgas": groups["fpgas"], "maxLoad": float(load.max())}
    if replicas:
        split["replicas"] = [[problem.device_names[d] for d in group] for group in replicas]
    return split


# -- plans: where each operator of a model goes, with the targets and options that placed it ------

PLACEMENT_FORMAT, PLAN_FORMAT = "tvm-place-placement", "tvm-place-plan"
#: Version of the plan files :func:`write_plan` writes.
PLAN_VERSION = 1
#: The placement options a plan records (:class:`~tvm_place.options.PlaceOptions` fields; their
#: defaults fill what a plan or a call leaves out).
PLAN_OPTIONS = ("objective", "method", "time_limit", "cost_model", "profiles", "pins")


def target_to_json(target: Any) -> Any:
    """A target as a plan records it: a string or dict as given, a ``tvm.target.Target`` as a
    dict of the attributes that set its costs."""
    if isinstance(target, (str, Mapping)):
        return target
    return {str(k): (v if isinstance(v, (int, float, str, bool)) else str(v))
            for k, v in target.export().items() if k in ("kind", "arch", "mcpu", "num-cores")}


def _profile_to_json(profile: Any) -> Any:
    from .cost.profiles import DeviceProfile, profile_to_dict

    if isinstance(profile, DeviceProfile):
        return {"name": profile.name, **profile_to_dict(profile)}
    return profile


def plan_snapshot_path(plan_path: str | Path) -> Path:
    """Where the cost snapshot of a plan placed with costs other than the analytical model's lies:
    beside the plan, ``<plan>.costs.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.stem + ".costs.json")


def plan_cost_model(cost_model: Any, plan_path: str | Path) -> Any:
    """How a plan records a cost model: ``"analytical"`` as is; anything else (measured, a
    snapshot, a custom model) as the snapshot :func:`write_plan` saves beside the plan."""
    if cost_model == "analytical":
        return "analytical"
    return {"snapshot": plan_snapshot_path(plan_path).name}


def recorded_snapshot(plan: Mapping, plan_path: str | Path) -> Path | None:
    """The cost snapshot file a (checked) plan's options name, None where it used the analytical
    model."""
    recorded = plan["options"].get("cost_model")
    return Path(plan_path).parent / recorded["snapshot"] if isinstance(recorded, Mapping) else None


def plan_to_dict(problem: PlacementProblem, placement: "Placement", targets, options: Mapping,
                 plan_path: str | Path, model: Mapping | None = None) -> dict:
    """The plan of a placement (``"format": "tvm-place-plan"``, read by :func:`read_plan`):
    ``options`` holds :data:`PLAN_OPTIONS` (defaults fill the rest); ``model`` the registry
    model's name and sizes, where the module is one."""
    from .options import PlaceOptions

    device_names = problem.device_names
    defaults = PlaceOptions()
    recorded = {key: options.get(key, getattr(defaults, key)) for key in PLAN_OPTIONS}
    recorded["cost_model"] = plan_cost_model(recorded["cost_model"], plan_path)
    if recorded["profiles"] is not None:
        recorded["profiles"] = [_profile_to_json(profile) for profile in recorded["profiles"]]
    plan = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "model": None if model is None else dict(model),
        "targets": [target_to_json(t) for t in targets],
        "options": recorded,
        "devices": device_names,
        "objective": placement.objective,
        "value": float(placement.value),
        "lower_bound": float(placement.lower_bound),
        "method": placement.method,
        "ops": [[name, device_names[int(d)]] for name, d in zip(problem.graph.names, placement.device_of)],
    }
    if placement.replicas:
        plan["replicas"] = [list(group) for group in placement.replicas]
    return plan


def plan_to_json(plan: Mapping) -> str:
    """A plan file's text: one operator per line, so a changed placement is a small git diff."""
    body = {k: v for k, v in plan.items() if k != "ops"}
    text = json.dumps(body, indent=1, sort_keys=True)
    op_lines = ",\n".join(f"  {json.dumps(pair)}" for pair in plan["ops"])
    return text[:-2] + ',\n "ops": [\n' + op_lines + "\n ]\n}\n"


def write_plan(plan_path: str | Path, problem: PlacementProblem, placement: "Placement", targets,
               options: Mapping, model: Mapping | None = None, extra: Mapping | None = None,
               cost_sources: list[list[str]] | None = None) -> Path:
    """Write the plan of a placement (:func:`plan_to_dict`, with the fields of ``extra`` added)
    and, for costs other than the analytical model's, the cost snapshot beside it that a check
    replays (:func:`plan_snapshot_path`) and, given ``cost_sources`` (``[operator][device]``),
    which sources priced each device (``"cost_sources": {"cpu:0": {"learned": 52}}``); returns
    the plan's path."""
    from .report import cost_sources_by_device

    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_to_dict(problem, placement, targets, options, plan_path, model)
    if plan["options"]["cost_model"] != "analytical":
        write_problem(problem, plan_snapshot_path(plan_path))
        if cost_sources:
            plan["cost_sources"] = cost_sources_by_device(problem.device_names, cost_sources)
    plan.update(extra or {})
    plan_path.write_text(plan_to_json(plan))
    return plan_path


def read_plan(path: str | Path) -> dict:
    """A plan file's data (``"format": "tvm-place-plan"``: ``tvm-place place --save-plan``, the
    golden plans of ``tvm-place check``), checked against :data:`tvm_place.schemas.PLAN`."""
    from .errors import InvalidPlacementError

    source = f"plan file {str(Path(path))!r}"
    return _checked_plan(schemas.read_file(path, "plan", InvalidPlacementError), source)


def _checked_plan(data: Any, source: str) -> dict:
    from .errors import InvalidPlacementError

    if isinstance(data, Mapping) and data.get("format") == PLACEMENT_FORMAT:
        raise InvalidPlacementError(
            f"{source} holds a bare placement (written by `tvm-place solve --output`), not the plan "
            "of a model: write the plan with `tvm-place place MODEL ... --save-plan FILE`")
    schemas.validate(data, schemas.PLAN, source, InvalidPlacementError)
    devices = data["devices"]
    for u, (_, device) in enumerate(data["ops"]):
        if device not in devices:
            raise schemas.field_error(source, ("ops", u, 1), f"device {device!r} is not in the plan's "
                                      f"devices {devices}", "name one of them", InvalidPlacementError)
    return data


def placement_from_plan(plan: Mapping, source: str = "the plan") -> "Placement":
    """The :class:`Placement` a (checked) plan records."""
    from .graph import Placement, check_placement_fields

    devices = list(plan["devices"])
    fields = {
        "device_of": [devices.index(device) for _, device in plan["ops"]],
        "operators": [name for name, _ in plan["ops"]],
        "device_names": devices,
        "order": plan.get("order"),
    }
    check_placement_fields(fields, source)
    return Placement(
        device_of=np.array(fields["device_of"], dtype=np.int64),
        objective=plan["objective"],
        value=float(plan["value"]),
        lower_bound=float(plan.get("lower_bound", 0.0)),
        method=plan.get("method", "plan"),
        order=None if plan.get("order") is None else np.array(plan["order"], dtype=np.int64),
        stats=dict(plan.get("stats") or {}),
        device_names=devices,
        replicas=[tuple(group) for group in plan.get("replicas") or []],
        operators=fields["operators"],
    )


def load_placement(path: str | Path) -> "Placement":
    """The placement a plan file records (``tvm-place place --save-plan``), or a bare placement
    (``Placement.to_json()``, ``tvm-place solve --output``)."""
    from .errors import InvalidPlacementError
    from .graph import Placement

    source = f"plan file {str(Path(path))!r}"
    data = schemas.read_file(path, "plan", InvalidPlacementError)
    if isinstance(data, Mapping) and data.get("format") == PLACEMENT_FORMAT:
        return Placement.from_dict(data, source)
    return placement_from_plan(_checked_plan(data, source), source)


# -- device files ----------------------------------------------------------------------------------


def load_device_file(path: str | Path) -> tuple[list, list]:
    """``(targets, profiles)`` from a device file (JSON, or TOML by the ``.toml`` suffix), for
    :func:`tvm_place.compile`'s ``targets`` and ``profiles``.

    The file lists ``devices``, each with a ``target`` (``"llvm"``, ``"cuda"`` or a target dict)
    and optionally a ``profile``: a profile name of ``tvm_place/cost/profiles/devices.json``, or
    a table of its fields (kind, peak_gflops, memory_bandwidth_gbs, memory_bytes,
    compute_efficiency, memory_efficiency, launch_overhead_us, link: a link name or
    ``{bandwidth_gbs, latency_us}``); any of those fields beside ``target`` overrides the named
    profile's (e.g. ``memory_bytes`` for a smaller card). See docs/problem-format.md.
    """
    from .cost.profiles import default_profile, device_profile, profile_from_dict, profile_to_dict
    from .errors import InvalidTargetError

    source = f"device file {str(Path(path))!r}"
    data = schemas.load(path, "device", schemas.DEVICE_FILE, InvalidTargetError)
    targets, profiles = [], []
    for position, entry in enumerate(data["devices"]):
        target = entry["target"]
        kind = target["kind"] if isinstance(target, Mapping) else target
        profile = entry.get("profile")
        overrides = {key: entry[key] for key in schemas.PROFILE_PROPERTIES if key in entry}
        where = ("devices", position)
        if isinstance(profile, Mapping):
            profile = profile_from_dict(f"{Path(path).stem}:{position}", {**profile, **overrides},
                                        source, where)
        elif overrides:
            base = device_profile(profile or default_profile(str(kind)))
            profile = profile_from_dict(f"{base.name}*", {**profile_to_dict(base), **overrides},
                                        source, where)
        targets.append(dict(target) if isinstance(target, Mapping) else target)
        profiles.append(profile)
    return targets, profiles
