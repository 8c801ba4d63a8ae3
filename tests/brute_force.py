"""Exhaustive references for small problems: the ground truth solvers are checked against."""

from __future__ import annotations

import itertools
import math

import numpy as np

from tvm_place.errors import InvalidPlacementError
from tvm_place.evaluate import evaluate, validate
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem


def feasible_assignments(problem: PlacementProblem, contiguous: bool = False):
    """Yield every valid device assignment (as an array) of a small problem."""
    for combo in itertools.product(range(problem.num_devices), repeat=problem.num_ops):
        device_of = np.array(combo)
        try:
            validate(problem, device_of, contiguous=contiguous)
        except InvalidPlacementError:
            continue
        yield device_of


def topological_orders(problem: PlacementProblem):
    """Yield every topological order of the graph."""
    n = problem.num_ops
    preds = [set(p) for p in problem.graph.predecessors]

    def extend(prefix, placed):
        if len(prefix) == n:
            yield np.array(prefix)
            return
        for u in range(n):
            if u not in placed and preds[u] <= placed:
                yield from extend(prefix + [u], placed | {u})

    yield from extend([], frozenset())


def best_throughput(problem: PlacementProblem, contiguous: bool = False) -> float:
    """Minimum max-load over all (optionally only contiguous) valid placements; inf if none."""
    return min(
        (evaluate(problem, d).max_load for d in feasible_assignments(problem, contiguous)),
        default=math.inf,
    )


def best_latency(problem: PlacementProblem) -> float:
    """Minimum makespan over all valid placements and execution orders; inf if none."""
    orders = list(topological_orders(problem))
    return min(
        (
            min(evaluate(problem, d, order).latency for order in orders)
            for d in feasible_assignments(problem)
        ),
        default=math.inf,
    )


def random_problem(
    rng: np.random.Generator,
    num_ops: int,
    num_devices: int,
    edge_probability: float = 0.35,
    memory_caps: bool = False,
    colour_classes: bool = False,
    unsupported: bool = False,
    cpu_pays_no_transfer: bool = False,
) -> PlacementProblem:
    """A random DAG (edges only from lower to higher index) with random costs."""
    edges = [
        (u, v)
        for v in range(num_ops)
        for u in range(v)
        if rng.random() < edge_probability
    ]
    nodes = [OpNode(name=f"op{u}") for u in range(num_ops)]
    compute = rng.uniform(0.1, 10.0, size=(num_ops, num_devices))
    if unsupported:
        # Device 0 plays the CPU that supports everything; others may lack an operator.
        compute[:, 1:][rng.random((num_ops, num_devices - 1)) < 0.15] = math.inf
    transfer = rng.uniform(0.0, 3.0, size=(num_ops, num_devices))
    if cpu_pays_no_transfer:
        transfer[:, 0] = 0.0
    memory = rng.uniform(1.0, 10.0, size=num_ops)
    capacities = [math.inf] * num_devices
    if memory_caps:
        # Tight enough that some splits are infeasible, loose enough that most problems are feasible.
        total = memory.sum()
        capacities = [float(rng.uniform(0.4, 1.0) * total) for _ in range(num_devices)]
    devices = [
        Device(name=f"dev{d}", kind="cpu" if d == 0 else "gpu", memory_capacity=capacities[d])
        for d in range(num_devices)
    ]
    classes = []
    if colour_classes and num_ops >= 3:
        chosen = rng.choice(num_ops, size=2, replace=False)
        classes = [sorted(int(u) for u in chosen)]
    return PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=devices,
        compute_time=compute,
        transfer_time=transfer,
        memory=memory,
        colour_classes=classes,
        name="random",
    )
