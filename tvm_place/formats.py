"""Loaders of the JSON problem formats: one function per format, each failing with a clear message."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import InvalidGraphError
from .graph import FORMAT_VERSION, Device, OpGraph, OpNode, PlacementProblem


def _require(data: Mapping, key: str, where: str) -> Any:
    if not isinstance(data, Mapping) or key not in data:
        raise InvalidGraphError(f"{where} has no {key!r} field; see docs/problem-format.md")
    return data[key]


def _cost(x: Any, where: str) -> float:
    if x is None:
        return math.inf
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise InvalidGraphError(f"{where} is {x!r}, expected a number (or null for unsupported)")
    return value


def problem_from_dict(data: Mapping) -> PlacementProblem:
    """Build a :class:`PlacementProblem` from its JSON form (``"format": "tvm-place-problem"``)."""
    if not isinstance(data, Mapping) or data.get("format") != "tvm-place-problem":
        raise InvalidGraphError(
            'not a tvm-place problem: the top level must be an object with "format": '
            '"tvm-place-problem"'
        )
    if data.get("version") != FORMAT_VERSION:
        raise InvalidGraphError(
            f"problem format version {data.get('version')!r} is not supported (this tvm-place "
            f"reads version {FORMAT_VERSION})"
        )
    devices = []
    for i, d in enumerate(_require(data, "devices", "the problem")):
        where = f"devices[{i}]"
        devices.append(
            Device(
                name=str(_require(d, "name", where)),
                kind=str(d.get("kind", "cpu")),
                memory_capacity=_cost(d.get("memory_capacity"), f"{where}.memory_capacity"),
                target=d.get("target"),
                profile=d.get("profile"),
                call_overhead=_cost(d.get("call_overhead", 0.0), f"{where}.call_overhead"),
            )
        )
    nodes, compute, transfer, memory = [], [], [], []
    for u, node in enumerate(_require(data, "nodes", "the problem")):
        where = f"nodes[{u}]"
        nodes.append(
            OpNode(
                name=str(_require(node, "name", where)),
                kind=str(node.get("kind", "op")),
                flops=float(node.get("flops", 0.0)),
                bytes_accessed=float(node.get("bytes_accessed", 0.0)),
                output_bytes=float(node.get("output_bytes", 0.0)),
                param_bytes=float(node.get("param_bytes", 0.0)),
                is_backward=bool(node.get("is_backward", False)),
            )
        )
        times = _require(node, "compute_time", where)
        transfers = _require(node, "transfer_time", where)
        if len(times) != len(devices) or len(transfers) != len(devices):
            raise InvalidGraphError(
                f"{where} gives {len(times)} compute and {len(transfers)} transfer times for "
                f"{len(devices)} devices; give one per device"
            )
        compute.append([_cost(t, f"{where}.compute_time") for t in times])
        transfer.append([_cost(t, f"{where}.transfer_time") for t in transfers])
        memory.append(_cost(node.get("memory", 0.0), f"{where}.memory"))
    edges = _require(data, "edges", "the problem")
    try:
        edge_pairs = [(int(u), int(v)) for u, v in edges]
    except (TypeError, ValueError):
        raise InvalidGraphError("edges must be a list of [producer, consumer] index pairs")
    pins = {int(u): tuple(ds) for u, ds in (data.get("pins") or {}).items()}
    return PlacementProblem(
        graph=OpGraph(nodes, edge_pairs),
        devices=devices,
        compute_time=np.array(compute, dtype=np.float64).reshape(len(nodes), len(devices)),
        transfer_time=np.array(transfer, dtype=np.float64).reshape(len(nodes), len(devices)),
        memory=np.array(memory),
        pins=pins,
        colour_classes=[list(c) for c in data.get("colour_classes") or []],
        name=str(data.get("name", "problem")),
    )


def load_problem(path: str | Path) -> PlacementProblem:
    """Read a problem file in the tvm-place JSON format."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidGraphError(f"problem file {str(path)!r} does not exist")
    except json.JSONDecodeError as err:
        raise InvalidGraphError(
            f"problem file {str(path)!r} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        )
    return problem_from_dict(data)


# -- dnn-partitioning (Tarnawski et al., NeurIPS 2020; github.com/msr-fiddle/dnn-partitioning) ------


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidGraphError(f"{what} file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise InvalidGraphError(
            f"{what} file {str(path)!r} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        ) from None


def dnn_partitioning_problem(data: Mapping, name: str = "workload") -> PlacementProblem:
    """A dnn-partitioning workload as a problem: ``maxFPGAs`` accelerators, then ``maxCPUs`` CPUs.

    Accelerators (``acc:i``) run ``fpgaLatency`` (unsupported where ``supportedOnFpga`` is 0), hold
    at most ``maxSizePerFPGA`` bytes, and pay a node's edge ``cost`` to send or receive its output.
    CPUs (``cpu:j``) run ``cpuLatency``, have no memory cap and pay no communication: exactly the
    max-load rule of the workloads' README.
    """
    where = f"workload {name!r}"
    for key in ("maxSizePerFPGA", "maxFPGAs", "maxCPUs", "nodes", "edges"):
        _require(data, key, where)
    raw_nodes = sorted(data["nodes"], key=lambda node: int(_require(node, "id", f"a node of {where}")))
    index_of = {}
    nodes, compute, memory = [], [], []
    num_accelerators, num_cpus = int(data["maxFPGAs"]), int(data["maxCPUs"])
    for node in raw_nodes:
        node_where = f"node {node.get('id')} of {where}"
        for key in ("cpuLatency", "fpgaLatency", "supportedOnFpga", "size"):
            _require(node, key, node_where)
        node_id = int(node["id"])
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
        for key in ("sourceId", "destId", "cost"):
            _require(edge, key, f"an edge of {where}")
        source, dest = int(edge["sourceId"]), int(edge["destId"])
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
    return dnn_partitioning_problem(_read_json(path, "workload"), name=Path(path).stem)


def dnn_split_to_device_of(data: Mapping, problem: PlacementProblem) -> np.ndarray:
    """The device of every node from a dnn-partitioning split (``fpgas[i]`` is ``acc:i``)."""
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
    return dnn_split_to_device_of(_read_json(path, "split"), problem)


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


def load_placement(path: str | Path) -> "Placement":
    """A placement saved with ``Placement.to_json()`` (a plan)."""
    from .graph import Placement

    data = _read_json(path, "plan")
    if not isinstance(data, Mapping):
        raise InvalidGraphError(f"plan file {str(path)!r} holds no JSON object")
    return Placement.from_dict(data)


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
    import dataclasses
    import tomllib

    from .cost.profiles import PROFILE_FIELDS, default_profile, device_profile, profile_from_dict
    from .errors import InvalidTargetError

    path = Path(path)
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidTargetError(f"device file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise InvalidTargetError(f"device file {str(path)!r} is not valid TOML ({err})") from None
    else:
        try:
            data = _read_json(path, "device")
        except InvalidGraphError as err:
            raise InvalidTargetError(str(err)) from None
    devices = data.get("devices") if isinstance(data, Mapping) else None
    if not isinstance(devices, list) or not devices:
        raise InvalidTargetError(
            f"device file {str(path)!r} must hold a non-empty list 'devices', each with a 'target'"
        )
    targets, profiles = [], []
    for position, entry in enumerate(devices):
        if not isinstance(entry, Mapping) or "target" not in entry:
            raise InvalidTargetError(f"device {position} of {str(path)!r} has no 'target'")
        target = entry["target"]
        kind = target.get("kind") if isinstance(target, Mapping) else str(target)
        profile = entry.get("profile")
        overrides = {key: entry[key] for key in PROFILE_FIELDS if key in entry}
        if isinstance(profile, Mapping):
            profile = profile_from_dict(f"{path.stem}:{position}", {**profile, **overrides})
        elif overrides:
            base = device_profile(profile or default_profile(str(kind)))
            fields = {**dataclasses.asdict(base), "link": base.link.name, **overrides}
            profile = profile_from_dict(f"{base.name}*", fields)
        targets.append(dict(target) if isinstance(target, Mapping) else target)
        profiles.append(profile)
    return targets, profiles
