"""Plain data of a placement problem: operator graph, devices, costs, and a placement.

Nothing here imports TVM: solvers and tests work on these structures alone.

Cost model shared by every solver (a star topology, as in Tarnawski et al. 2020):

- ``compute_time[u, d]``: seconds operator ``u`` takes on device ``d`` (``inf``: not supported there).
- ``transfer_time[u, d]``: seconds device ``d`` spends sending or receiving ``u``'s output over its
  link to the shared fabric (host memory, PCIe, network). A value produced on ``d`` and consumed
  on ``e != d`` costs ``transfer_time[u, d]`` on the sender and ``transfer_time[u, e]`` on the
  receiver; the sender pays once per value however many devices consume it, each receiving device
  pays once per value however many of its operators consume it.
- ``memory[u]``: bytes ``u`` keeps resident on its device (weights, workspace); ``capacity[d]`` caps
  the sum on ``d``.

The two objectives (see :mod:`tvm_place.evaluate`):

- *throughput*: the maximum device load (compute plus transfers in and out), the time between two
  inputs of a pipeline; a CPU device in the dnn-partitioning workloads has zero transfer time.
- *latency*: the makespan of one input run through the devices, each device running its operators
  one at a time in a given order and a value crossing devices after the two transfer times.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import InvalidGraphError, InvalidPlacementError, TvmPlaceError, UnknownMethodError

#: Version of the JSON form written by :meth:`PlacementProblem.to_json` and :meth:`Placement.to_json`.
FORMAT_VERSION = 1

OBJECTIVES = ("throughput", "latency")


def check_objective(objective: str, error: type[TvmPlaceError] = UnknownMethodError) -> None:
    """Raise ``error`` unless ``objective`` is one of :data:`OBJECTIVES`: the one check of an
    objective's name, for options, solvers, bounds and placements read from files alike."""
    if objective not in OBJECTIVES:
        raise error(f"unknown objective {objective!r}; use one of {list(OBJECTIVES)}")


@dataclass(frozen=True)
class OpNode:
    """One operator of the graph (a fused ``call_tir`` in a Relax module)."""

    name: str
    kind: str = "op"
    flops: float = 0.0
    bytes_accessed: float = 0.0
    output_bytes: float = 0.0
    param_bytes: float = 0.0
    is_backward: bool = False
    #: The node's id in the file it was loaded from (dnn-partitioning ids are not contiguous).
    external_id: int | None = None


class OpGraph:
    """A directed acyclic graph of operators, nodes numbered ``0..n-1`` in a topological order.

    ``edges`` are pairs ``(producer, consumer)`` of node indices; a pair appears at most once.
    Construction checks that the graph is non-empty, that edges name existing nodes and that it has
    no cycle, and renumbers nothing: callers give nodes in any order and :attr:`topological_order`
    says one valid order.
    """

    def __init__(self, nodes: Sequence[OpNode], edges: Iterable[tuple[int, int]]):
        self.nodes = list(nodes)
        n = len(self.nodes)
        if n == 0:
            raise InvalidGraphError(
                "the operator graph is empty: the module has no operator to place; "
                "check that `main` computes something (constant-only functions are folded away)"
            )
        unique = sorted({(int(u), int(v)) for u, v in edges})
        for u, v in unique:
            if not (0 <= u < n and 0 <= v < n):
                raise InvalidGraphError(
                    f"edge ({u}, {v}) names a node outside 0..{n - 1}; every edge must join two "
                    "existing nodes"
                )
            if u == v:
                raise InvalidGraphError(f"edge ({u}, {v}) is a self-loop on node {self.nodes[u].name!r}")
        self.edges = np.array(unique, dtype=np.int64).reshape(-1, 2)
        self.successors: list[list[int]] = [[] for _ in range(n)]
        self.predecessors: list[list[int]] = [[] for _ in range(n)]
        for u, v in unique:
            self.successors[u].append(v)
            self.predecessors[v].append(u)
        self.topological_order = self._topological_order()

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def _topological_order(self) -> np.ndarray:
        from .schedule import execution_order

        order = execution_order(len(self.nodes), self.edges)
        if len(order) != len(self.nodes):
            placed = set(order.tolist())
            stuck = [node.name for u, node in enumerate(self.nodes) if u not in placed][:5]
            raise InvalidGraphError(
                f"the operator graph has a cycle through {len(stuck)}+ nodes, e.g. {stuck}; "
                "placement needs a DAG: remove the back edge or contract the cycle into one node"
            )
        return order


@dataclass(frozen=True)
class Device:
    """A device a placement can use.

    ``kind`` is ``"cpu"`` or ``"gpu"`` (or ``"accelerator"`` for abstract workloads); ``target`` is the
    TVM target as JSON-able data, ``None`` for abstract problems; ``profile`` names the device profile
    the costs came from. ``call_overhead``: seconds the runtime spends starting each stage on the
    device beyond the stage's own work (measured when workers attach; 0 for a cost model alone).
    """

    name: str
    kind: str = "cpu"
    memory_capacity: float = math.inf
    target: Any = None
    profile: str | None = None
    call_overhead: float = 0.0


@dataclass
class PlacementProblem:
    """An operator graph, the devices, and every cost a solver needs. See the module docstring."""

    graph: OpGraph
    devices: list[Device]
    compute_time: np.ndarray
    transfer_time: np.ndarray
    memory: np.ndarray | None = None
    pins: dict[int, tuple[int, ...]] = field(default_factory=dict)
    colour_classes: list[list[int]] = field(default_factory=list)
    name: str = "problem"

    def __post_init__(self) -> None:
        n, num_devices = len(self.graph), len(self.devices)
        if num_devices == 0:
            raise InvalidGraphError("the problem has no device: give at least one target")
        self.compute_time = np.asarray(self.compute_time, dtype=np.float64)
        self.transfer_time = np.asarray(self.transfer_time, dtype=np.float64)
        self.memory = (
            np.zeros(n) if self.memory is None else np.asarray(self.memory, dtype=np.float64)
        )
        for label, array, shape in (
            ("compute_time", self.compute_time, (n, num_devices)),
            ("transfer_time", self.transfer_time, (n, num_devices)),
            ("memory", self.memory, (n,)),
        ):
            if array.shape != shape:
                raise InvalidGraphError(f"{label} has shape {array.shape}, expected {shape}")
            if np.isnan(array).any() or (array < 0).any():
                raise InvalidGraphError(f"{label} holds a negative or NaN cost")
        if np.isinf(self.transfer_time).any() or np.isinf(self.memory).any():
            raise InvalidGraphError("transfer_time and memory must be finite")
        self.pins = {int(u): tuple(sorted({int(d) for d in ds})) for u, ds in self.pins.items()}
        for u, ds in self.pins.items():
            if not 0 <= u < n:
                raise InvalidGraphError(f"a pin names node {u}, outside 0..{n - 1}")
            bad = [d for d in ds if not 0 <= d < num_devices]
            if bad or not ds:
                raise InvalidGraphError(
                    f"node {self.graph.nodes[u].name!r} is pinned to device(s) {list(ds)}, but the "
                    f"problem has devices 0..{num_devices - 1} ({self.device_names})"
                )
        self.colour_classes = [sorted({int(u) for u in c}) for c in self.colour_classes if len(c) > 1]

    @property
    def num_ops(self) -> int:
        return len(self.graph)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def capacity(self) -> np.ndarray:
        return np.array([d.memory_capacity for d in self.devices], dtype=np.float64)

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.devices]

    def identical_devices(self) -> list[list[int]]:
        """Devices no placement can tell apart (equal compute, transfer, capacity and allowed
        columns), in classes ordered by first device."""
        allowed = self.allowed()
        classes: dict[tuple, list[int]] = {}
        for d in range(self.num_devices):
            key = (self.compute_time[:, d].tobytes(), self.transfer_time[:, d].tobytes(),
                   float(self.capacity[d]), allowed[:, d].tobytes())
            classes.setdefault(key, []).append(d)
        return list(classes.values())

    def allowed(self) -> np.ndarray:
        """``(n, D)`` bool: where each operator may run (supported there, and within its pin)."""
        allowed = np.isfinite(self.compute_time)
        for u, ds in self.pins.items():
            mask = np.zeros(self.num_devices, dtype=bool)
            mask[list(ds)] = True
            allowed[u] &= mask
        return allowed


#: ``stats`` keys that count a search's effort (CP-SAT's branches and conflicts): with parallel
#: workers they depend on how the workers' threads raced, as run times depend on the machine.
SEARCH_EFFORT = frozenset({"nodes", "conflicts"})


def _without_timings(value: Any) -> Any:
    """``value`` without the entries that record how a run went rather than what it found: run
    times (keys ``seconds``, ``*_seconds``) and search effort (:data:`SEARCH_EFFORT`)."""
    if isinstance(value, Mapping):
        return {
            k: _without_timings(v)
            for k, v in value.items()
            if not (isinstance(k, str) and (k == "seconds" or k.endswith("_seconds")
                                            or k in SEARCH_EFFORT))
        }
    if isinstance(value, (list, tuple)):
        return [_without_timings(v) for v in value]
    return value


@dataclass
class Placement:
    """A device for every operator, with the objective it reaches and the bound proven for it.

    ``order`` (optional) is an execution order: a permutation of the operators that is topological;
    each device runs its operators in that order. ``lower_bound`` is the best lower bound the solver
    proved on the optimum of ``objective`` over the placements it searched (``stats
    ["search_space"]`` says whether that space was all placements, contiguous splits only, or
    placements with replicas).

    ``replicas`` (throughput only; DiviML's data parallelism) lists groups of devices, each sorted
    and of at least two, that run the same operators on alternate inputs: ``device_of`` names a
    group's first device, the others hold no operator of their own, and inputs are dealt
    round-robin over the group, so each member spends ``1 / len(group)`` of its load per input.

    ``operators`` (set by :func:`tvm_place.solvers.solve` and ``tvm_place.compile``) names the
    operators in index order, so that a saved plan applied to another model, or to a changed
    one, is refused by the validator instead of placing the wrong operators.
    """

    device_of: np.ndarray
    objective: str
    value: float
    lower_bound: float
    method: str
    order: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    device_names: list[str] | None = None
    replicas: list[tuple[int, ...]] = field(default_factory=list)
    operators: list[str] | None = None

    def __post_init__(self) -> None:
        self.device_of = np.asarray(self.device_of, dtype=np.int64)
        self.replicas = sorted(tuple(sorted(int(d) for d in group)) for group in self.replicas)
        if self.order is not None:
            self.order = np.asarray(self.order, dtype=np.int64)
        check_objective(self.objective, InvalidPlacementError)

    @property
    def gap(self) -> float:
        """Relative gap ``(value - lower_bound) / value``: 0 means proven optimal."""
        if self.value <= 0 or not math.isfinite(self.value):
            return 0.0 if self.value == self.lower_bound else math.inf
        return max(0.0, (self.value - self.lower_bound) / self.value)

    def to_dict(self, timings: bool = True) -> dict:
        """The placement as JSON-able data; ``timings=False`` leaves out how long solvers ran and
        how hard they searched (every ``stats`` entry named ``seconds``, ``*_seconds``, ``nodes``
        or ``conflicts``, at any depth)."""
        return {
            "format": "tvm-place-placement",
            "version": FORMAT_VERSION,
            "objective": self.objective,
            "value": self.value,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "method": self.method,
            "device_of": self.device_of.tolist(),
            "order": None if self.order is None else self.order.tolist(),
            "replicas": [list(group) for group in self.replicas],
            "operators": self.operators,
            "device_names": self.device_names,
            "stats": self.stats if timings else _without_timings(self.stats),
        }

    def to_json(self, timings: bool = False) -> str:
        """The plan: byte-identical for the same module, targets, options and costs, across runs
        and processes, since solver run times are left out unless ``timings`` (``to_dict()``
        keeps them)."""
        return json.dumps(self.to_dict(timings), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "the placement") -> "Placement":
        """A placement from its JSON form, checked against :data:`tvm_place.schemas.PLACEMENT`
        (and its indices against each other); ``source`` names it in errors."""
        from . import schemas

        schemas.validate(data, schemas.PLACEMENT, source, InvalidPlacementError)
        check_placement_fields(data, source)
        return cls(
            device_of=np.array(data["device_of"], dtype=np.int64),
            objective=data["objective"],
            value=float(data["value"]),
            lower_bound=float(data["lower_bound"]),
            method=data["method"],
            order=None if data.get("order") is None else np.array(data["order"], dtype=np.int64),
            stats=dict(data.get("stats") or {}),
            device_names=data.get("device_names"),
            replicas=[tuple(group) for group in data.get("replicas") or []],
            operators=data.get("operators"),
        )


def check_placement_fields(data: Mapping, source: str) -> None:
    """What a placement's (or plan's) schema cannot say: its indices agree with each other (the
    validator checks them against the problem's)."""
    from . import schemas

    def bad(path, problem: str, fix: str) -> InvalidPlacementError:
        return schemas.field_error(source, path, problem, fix, InvalidPlacementError)

    n = len(data["device_of"])
    names = data.get("device_names")
    if names is not None:
        for u, d in enumerate(data["device_of"]):
            if d >= len(names):
                raise bad(("device_of", u), f"device {d} does not exist",
                          f"the placement has devices 0..{len(names) - 1} ({names})")
    order = data.get("order")
    if order is not None and sorted(order) != list(range(n)):
        raise bad(("order",), f"is not an order of the {n} operators",
                  "list every operator index 0..n-1 once, or null")
