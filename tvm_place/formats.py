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
