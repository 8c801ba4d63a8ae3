"""Several entry functions of one module placed together (an LLM's ``prefill`` and ``decode``).

Each function is collected and costed as a problem of its own (:class:`Entry`); the solvers
place one *joint* problem (:func:`joint_problem`), so that a weight two functions read lives on
one device for both, and each function gets a placement of its own back
(:func:`entry_placement`), split and built into its own stages.

The joint objective is a round of calls, ``Entry.calls`` of each function (a generation: one
``prefill`` and 32 ``decode`` steps): every cost of a function is multiplied by its calls, so

- *throughput*: the most loaded device's time per round, summed over the functions (the
  functions' operators are disjoint components of one graph);
- *latency*: the round's time with the functions called one after another, the sum of their
  latencies times their calls. A zero-cost *boundary* node joins each function's last operators
  to the next function's first ones, so that no operator of a function starts before the one
  before it is done; it computes nothing, sends nothing, and is not built.

Weights are the function parameters after ``num_input`` (TVM's convention; an
``nn.Module.export_tvm`` module's). A weight several functions read (by name) puts the operator
each function charges with it (its first reader) in one colour class, and its bytes count once,
on the first function's reader.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidPlacementError
from .graph import OpGraph, OpNode, Placement, PlacementProblem

#: ``kind`` of the joint graph's boundary nodes.
BOUNDARY = "entry boundary"
#: Separates a function's name from its operators' names in the joint graph.
SEPARATOR = "/"


@dataclass
class Entry:
    """One entry function: its own problem (costs of one call), its calls per round, and its
    weights ``{name: (operator charged with them, bytes)}``. ``first``: the index of its first
    operator in the joint problem (set by :func:`joint_problem`)."""

    name: str
    problem: PlacementProblem
    calls: float = 1.0
    weights: dict[str, tuple[int, float]] = field(default_factory=dict)
    first: int = 0

    @property
    def nodes(self) -> np.ndarray:
        """This function's operators in the joint problem."""
        return np.arange(self.first, self.first + self.problem.num_ops)


def joint_problem(entries: list[Entry], objective: str, name: str = "module") -> PlacementProblem:
    """The problem of placing ``entries`` together (see the module docstring); sets each
    entry's ``first``. O(V + E) over the functions' operators and edges."""
    nodes: list[OpNode] = []
    edges: list[tuple[int, int]] = []
    compute, transfer, memory = [], [], []
    pins: dict[int, tuple[int, ...]] = {}
    colour_classes: list[list[int]] = []
    readers: dict[str, list[int]] = {}
    devices = entries[0].problem.devices
    previous_sinks: list[int] = []
    boundary = None
    for position, entry in enumerate(entries):
        problem = entry.problem
        if [d.name for d in problem.devices] != [d.name for d in devices]:
            raise InvalidPlacementError(
                f"entry {entry.name!r} was costed on {problem.device_names}, the first one on "
                f"{[d.name for d in devices]}: cost every entry on the same devices"
            )
        if objective == "latency" and position > 0:
            boundary = len(nodes)
            nodes.append(OpNode(name=f"{entries[position - 1].name}->{entry.name}", kind=BOUNDARY))
            compute.append(np.zeros((1, len(devices))))
            transfer.append(np.zeros((1, len(devices))))
            memory.append(np.zeros(1))
            edges += [(u, boundary) for u in previous_sinks]
        entry.first = first = len(nodes)
        graph = problem.graph
        nodes += [dataclasses.replace(node, name=f"{entry.name}{SEPARATOR}{node.name}")
                  for node in graph.nodes]
        compute.append(problem.compute_time * entry.calls)
        transfer.append(problem.transfer_time * entry.calls)
        own_memory = (np.zeros(problem.num_ops) if problem.memory is None
                      else np.array(problem.memory, dtype=float))
        for weight, (reader, size) in entry.weights.items():
            if weight in readers:  # counted once, with the first function that reads it
                own_memory[reader] = max(0.0, own_memory[reader] - size)
            readers.setdefault(weight, []).append(first + reader)
        memory.append(own_memory)
        edges += [(first + int(u), first + int(v)) for u, v in graph.edges]
        if boundary is not None:
            edges += [(boundary, first + u) for u in range(problem.num_ops) if not graph.predecessors[u]]
        pins.update({first + u: devices_ for u, devices_ in problem.pins.items()})
        colour_classes += [[first + u for u in colour] for colour in problem.colour_classes]
        previous_sinks = [first + u for u in range(problem.num_ops) if not graph.successors[u]]
    colour_classes += [group for group in readers.values() if len(group) > 1]
    return PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=list(devices),
        compute_time=np.vstack(compute),
        transfer_time=np.vstack(transfer),
        memory=np.concatenate(memory),
        pins=pins,
        colour_classes=colour_classes,
        name=name,
    )


def entry_placement(placement: Placement, entry: Entry) -> Placement:
    """The part of a joint ``placement`` that places ``entry``'s function, with its own value
    (the evaluator's, on its own problem) and the general lower bound of its own problem."""
    from .evaluate import evaluate
    from .solvers.bounds import lower_bound

    nodes = entry.nodes
    order = None
    if placement.order is not None:
        mine = placement.order[(placement.order >= entry.first) & (placement.order <= nodes[-1])]
        order = mine - entry.first
    part = Placement(
        device_of=placement.device_of[nodes],
        objective=placement.objective,
        value=0.0,
        lower_bound=0.0,
        method=placement.method,
        order=order,
        stats={"joint": f"placed together with the other entry functions (calls {entry.calls:g})"},
        device_names=placement.device_names,
        operators=list(entry.problem.graph.names),
    )
    part.value = evaluate(entry.problem, part).objective(placement.objective)
    part.lower_bound = min(part.value, lower_bound(entry.problem, placement.objective, False))
    return part
