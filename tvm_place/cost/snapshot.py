"""Cost snapshots: the costs a placement used, saved to a file and loaded again.

A measured placement depends on timings taken on one machine at one moment; a snapshot freezes
them, so the same placement is found again anywhere (another machine, CI, a later run) without
measuring. The file is the placement problem's own JSON form (``docs/problem-format.md``), so it
can also be solved directly with ``tvm-place solve``:

>>> placed = tvm_place.compile(mod, ["llvm", "cuda"], cost_model="measured")
>>> Snapshot.save(placed.problem, "costs.json")
>>> again = tvm_place.compile(mod, ["llvm", "cuda"], cost_model=Snapshot("costs.json"))
>>> assert again.placement.to_json() == placed.placement.to_json()  # same method and options
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InvalidGraphError
from ..formats import write_problem
from ..graph import Device, OpNode, PlacementProblem

#: Relative difference of FLOPs or bytes above which an operator is not the one the snapshot saw.
SHAPE_TOLERANCE = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SHAPE_TOLERANCE, abs_tol=1e-12)


class Snapshot:
    """A cost model that replays the costs saved in a problem file.

    Every cost of the problem comes from the snapshot: ``compute_time`` (through :meth:`op_time`,
    so reports say ``snapshot``), and ``transfer_time``, ``memory`` and device capacities (through
    :meth:`restore_costs`, which ``tvm_place.compile`` calls after building the problem). The
    module must be the one the snapshot was taken from (same operators by name, FLOPs, bytes and
    edges) on the same devices (by name, in order); anything else is an error naming the first
    difference, never a silent mix of saved and fresh costs. Pins are options, not costs: they
    come from the current call.
    """

    name = "snapshot"

    def __init__(self, source: str | Path | PlacementProblem):
        from ..formats import load_problem

        if isinstance(source, PlacementProblem):
            self.path = None
            self.problem = source
        else:
            self.path = Path(source)
            self.problem = load_problem(self.path)
        self._index = {node.name: u for u, node in enumerate(self.problem.graph.nodes)}

    @staticmethod
    def save(problem: PlacementProblem, path: str | Path) -> Path:
        """Write ``problem`` (e.g. ``placed.problem``) as a snapshot file; returns the path."""
        return write_problem(problem, path)

    def _where(self) -> str:
        return f"the cost snapshot {str(self.path)!r}" if self.path else "the cost snapshot"

    def _node(self, node: OpNode) -> int:
        u = self._index.get(node.name)
        if u is None:
            raise InvalidGraphError(
                f"{self._where()} has no operator {node.name!r}: it was taken from another module "
                "(or another version of it); take a new snapshot of this one"
            )
        saved = self.problem.graph.nodes[u]
        for field in ("flops", "bytes_accessed", "output_bytes", "param_bytes"):
            if not _close(getattr(saved, field), getattr(node, field)):
                raise InvalidGraphError(
                    f"operator {node.name!r} has {field} {getattr(node, field):g} here but "
                    f"{getattr(saved, field):g} in {self._where()}: the module changed since the "
                    "snapshot; take a new one"
                )
        return u

    def _device(self, position: int, name: str) -> int:
        names = self.problem.device_names
        if position >= len(names) or names[position] != name:
            raise InvalidGraphError(
                f"{self._where()} was taken on devices {names}, not on this device list "
                f"(device {position} is {name!r}); give the same targets as when it was taken"
            )
        return position

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        u = self._node(node)
        names = self.problem.device_names
        if device.name not in names:
            raise InvalidGraphError(
                f"{self._where()} was taken on devices {names} and has no costs for "
                f"{device.name!r}; give the same targets as when it was taken"
            )
        return float(self.problem.compute_time[u, names.index(device.name)]), self.name

    def restore_costs(self, problem: PlacementProblem) -> PlacementProblem:
        """``problem`` with every cost, memory size and capacity from the snapshot, after checking
        that it has the snapshot's operators, edges and devices."""
        saved = self.problem
        if [n.name for n in problem.graph.nodes] != [n.name for n in saved.graph.nodes]:
            here, there = problem.graph.names, saved.graph.names
            first = next(
                (i for i, (a, b) in enumerate(zip(here, there)) if a != b), min(len(here), len(there))
            )
            raise InvalidGraphError(
                f"the module has {len(here)} operators and {self._where()} {len(there)}; they "
                f"differ first at position {first} ({here[first] if first < len(here) else None!r} "
                f"here, {there[first] if first < len(there) else None!r} there): take a new snapshot"
            )
        for node in problem.graph.nodes:
            self._node(node)
        if problem.graph.edges.tolist() != saved.graph.edges.tolist():
            raise InvalidGraphError(
                f"the module's operator edges differ from those in {self._where()}: take a new "
                "snapshot"
            )
        for position, device in enumerate(problem.devices):
            self._device(position, device.name)
        if len(problem.devices) != len(saved.devices):
            raise InvalidGraphError(
                f"{self._where()} was taken on devices {saved.device_names}, not "
                f"{problem.device_names}; give the same targets as when it was taken"
            )
        devices = [
            Device(
                name=d.name,
                kind=d.kind,
                memory_capacity=s.memory_capacity,
                target=d.target,
                profile=s.profile,
            )
            for d, s in zip(problem.devices, saved.devices)
        ]
        return PlacementProblem(
            graph=problem.graph,
            devices=devices,
            compute_time=np.array(saved.compute_time, dtype=np.float64),
            transfer_time=np.array(saved.transfer_time, dtype=np.float64),
            memory=np.array(saved.memory, dtype=np.float64),
            pins=problem.pins,
            colour_classes=problem.colour_classes,
            name=problem.name,
        )
