"""Exhaustive references for small problems: the ground truth solvers are checked against."""

from __future__ import annotations

import itertools
import math

import numpy as np

from tvm_place.errors import InvalidPlacementError
from tvm_place.evaluate import evaluate, validate
from tvm_place.graph import Device, OpGraph, OpNode, Placement, PlacementProblem


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


def best_replicated_throughput(problem: PlacementProblem) -> float:
    """Minimum max-load over all valid placements with replica groups, by the evaluator."""
    best = math.inf
    for blocks in device_partitions(list(range(problem.num_devices))):
        for combo in itertools.product(range(len(blocks)), repeat=problem.num_ops):
            placement = Placement(
                device_of=[blocks[b][0] for b in combo], objective="throughput", value=0.0,
                lower_bound=0.0, method="enumerated",
                replicas=[block for block in blocks if len(block) > 1],
            )
            try:
                best = min(best, evaluate(problem, placement).max_load)
            except InvalidPlacementError:
                continue
    return best


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


def assignment_loads(problem: PlacementProblem):
    """``(grids, loads)``: all ``D ** n`` assignments ``(N, n)`` and each one's device loads
    ``(N, D)``, ``inf`` rows where the assignment is infeasible; the evaluator's rules applied
    column by column with NumPy (fine up to a few million assignments)."""
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
    return grids, np.where(feasible[:, None], load, np.inf)


def exhaustive_throughput(problem: PlacementProblem) -> tuple[float, float]:
    """(best max-load over all valid placements, best over contiguous ones), vectorised.

    An independent re-implementation of the evaluator's rules (:func:`assignment_loads`), so the
    solvers and the evaluator are checked against it too. Contiguity: the quotient graph over
    devices is nilpotent (acyclic) once self-loops are dropped. ``inf`` where nothing is feasible.
    """
    num_devices = problem.num_devices
    grids, loads = assignment_loads(problem)
    max_load = loads.max(axis=1)

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


def device_partitions(devices: list[int]):
    """Yield every partition of ``devices`` into non-empty blocks."""
    if not devices:
        yield []
        return
    first, rest = devices[0], devices[1:]
    for partition in device_partitions(rest):
        yield [(first,)] + partition
        for i, block in enumerate(partition):
            yield partition[:i] + [(first,) + block] + partition[i + 1:]


def exhaustive_replicated_throughput(problem: PlacementProblem) -> float:
    """Best max-load over all placements with replica groups (DiviML's data parallelism).

    For every partition of the devices into blocks (a block of several devices is a replica
    group) and every choice of one member per block, the block problem's columns are that
    member's costs divided by the block size, its capacity the block's smallest, an operator
    allowed only where every member allows it; a member's load is the block's load computed
    with its column. The best placement minimises, over partitions and assignments, the maximum
    over all members. ``inf`` where nothing is feasible.
    """
    allowed = problem.allowed()
    best = math.inf
    for blocks in device_partitions(list(range(problem.num_devices))):
        worst = None
        for members in itertools.product(*blocks):
            share = np.array([1.0 / len(block) for block in blocks])
            column = list(members)
            usable = np.stack([allowed[:, list(block)].all(axis=1) for block in blocks], axis=1)
            derived = PlacementProblem(
                graph=problem.graph,
                devices=[Device(name=str(block), memory_capacity=float(
                    problem.capacity[list(block)].min())) for block in blocks],
                compute_time=np.where(usable, problem.compute_time[:, column] * share, np.inf),
                transfer_time=problem.transfer_time[:, column] * share,
                memory=problem.memory,
                colour_classes=problem.colour_classes,
            )
            _, loads = assignment_loads(derived)
            worst = loads.max(axis=1) if worst is None else np.maximum(worst, loads.max(axis=1))
        best = min(best, float(worst.min()))
    return best


def exhaustive_latency(problem: PlacementProblem) -> float:
    """Minimum makespan over all valid placements and execution orders; ``inf`` if none.

    The same optimum as :func:`best_latency`, found by depth-first search instead of listing
    every pair: operators are appended one at a time to an order with a device each, timed by the
    evaluator's rule. Only orders whose start times never decrease (ties by index) are followed:
    sorting any order's schedule by start time gives such an order with the same schedule
    (compute times are positive, so an operator starts after its inputs and after the previous
    operator on its device). A branch is cut when its makespan so far, or an unplaced operator's
    earliest start plus its fastest path to the end, reaches the best complete schedule.
    """
    n, num_devices = problem.num_ops, problem.num_devices
    preds, succs = problem.graph.predecessors, problem.graph.successors
    allowed = problem.allowed()
    compute, transfer = problem.compute_time, problem.transfer_time
    capacity = problem.capacity * (1 + 1e-9)
    fastest = np.where(allowed, compute, np.inf).min(axis=1)
    tail = np.zeros(n)  # fastest time from an operator's start to the end of the graph
    for u in problem.graph.topological_order[::-1]:
        tail[u] = fastest[u] + max((tail[v] for v in succs[u]), default=0.0)
    colour_of = {u: i for i, colour in enumerate(problem.colour_classes) for u in colour}

    device_of = [-1] * n
    start, finish = [0.0] * n, [0.0] * n
    best = [math.inf]

    def search(done: int, device_free, memory, colour_device, last_start, last_op, makespan):
        if done == n:
            best[0] = min(best[0], makespan)
            return
        ready = [u for u in range(n) if device_of[u] < 0 and all(device_of[p] >= 0 for p in preds[u])]
        for u in ready:
            earliest = max([last_start] + [finish[p] for p in preds[u]])
            if earliest + tail[u] >= best[0]:
                return  # u must still run: no branch here can do better
        for u in ready:
            colour = colour_of.get(u)
            for d in range(num_devices):
                if not allowed[u, d] or memory[d] + problem.memory[u] > capacity[d]:
                    continue
                if colour is not None and colour_device.get(colour, d) != d:
                    continue
                begin = device_free[d]
                for p in preds[u]:
                    e = device_of[p]
                    arrival = finish[p] if e == d else finish[p] + transfer[p, e] + transfer[p, d]
                    begin = max(begin, arrival)
                if begin < last_start or (begin == last_start and u < last_op):
                    continue
                end = begin + compute[u, d]
                if max(makespan, end) >= best[0]:
                    continue
                device_of[u], start[u], finish[u] = d, begin, end
                free = list(device_free)
                free[d] = end
                used = list(memory)
                used[d] += problem.memory[u]
                colours = colour_device if colour is None else {**colour_device, colour: d}
                search(done + 1, free, used, colours, begin, u, max(makespan, end))
                device_of[u] = -1

    search(0, [0.0] * num_devices, [0.0] * num_devices, {}, 0.0, -1, 0.0)
    return best[0]
