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


def exhaustive_throughput(problem: PlacementProblem) -> tuple[float, float]:
    """(best max-load over all valid placements, best over contiguous ones), vectorised.

    Enumerates all ``D ** n`` assignments at once with NumPy (fine up to a few million), applying
    the evaluator's rules column by column: an independent re-implementation, so the solvers and
    the evaluator are checked against it too. Contiguity: the quotient graph over devices is
    nilpotent (acyclic) once self-loops are dropped. ``inf`` where nothing is feasible.
    """
    n, num_devices = problem.num_ops, problem.num_devices
    grids = np.indices((num_devices,) * n, dtype=np.int8).reshape(n, -1).T  # (N, n)
    allowed = problem.allowed()
    feasible = np.ones(len(grids), dtype=bool)
    for u in range(n):
        feasible &= allowed[u, grids[:, u]]
    for colour in problem.colour_classes:
        for u in colour[1:]:
            feasible &= grids[:, u] == grids[:, colour[0]]
    one_hot = grids[:, :, None] == np.arange(num_devices)[None, None, :]  # (N, n, D)
    memory = np.einsum("and,n->ad", one_hot, problem.memory)
    feasible &= (memory <= problem.capacity * (1 + 1e-9)).all(axis=1)
    compute = np.where(allowed, problem.compute_time, 0.0)
    load = np.einsum("and,nd->ad", one_hot, compute)
    transfer = problem.transfer_time
    for u in range(n):
        successors = problem.graph.successors[u]
        if not successors:
            continue
        consumer_on = one_hot[:, successors, :].any(axis=1)  # (N, D): some consumer on device e
        receives = consumer_on & ~one_hot[:, u, :]
        load += receives * transfer[u][None, :]
        sends = receives.any(axis=1)
        load += one_hot[:, u, :] * (sends[:, None] * transfer[u][None, :])
    max_load = np.where(feasible, load.max(axis=1), np.inf)

    quotient = np.zeros((len(grids), num_devices, num_devices), dtype=bool)
    for u, v in problem.graph.edges:
        quotient[np.arange(len(grids)), grids[:, u], grids[:, v]] = True
    quotient[:, np.arange(num_devices), np.arange(num_devices)] = False
    reach = quotient.copy()
    for _ in range(num_devices):
        reach = np.einsum("aij,ajk->aik", reach.astype(np.int8), quotient.astype(np.int8)) > 0
    contiguous = ~reach.any(axis=(1, 2))
    best_all = float(max_load.min()) if len(max_load) else math.inf
    best_contiguous = float(np.where(contiguous, max_load, np.inf).min())
    return best_all, best_contiguous
