"""The one validator and the one evaluator of a placement, used for every solver alike.

``validate`` checks a placement against its problem; ``evaluate`` recomputes both objectives from
the costs alone, so no solver's own arithmetic is trusted. Cost rules: :mod:`tvm_place.graph`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import schedule
from .errors import InvalidPlacementError
from .graph import Placement, PlacementProblem

#: Relative slack on memory capacities, so that float sums of exact fits are not rejected.
MEMORY_TOLERANCE = 1e-9


@dataclass
class Evaluation:
    """Both objectives of one placement, and what makes them up.

    ``load[d]`` is device ``d``'s time per input in a pipeline: ``compute[d] + transfer_in[d] +
    transfer_out[d] + calls[d]`` (``calls``: its stages' starts, at its ``call_overhead`` each);
    ``max_load`` (the max-stage time) is its maximum. ``latency`` is the makespan
    of one input; ``start`` and ``finish`` are each operator's times in that run. ``copies`` lists
    each ``(value, destination device)`` pair that crosses devices, once.
    """

    compute: np.ndarray
    transfer_in: np.ndarray
    transfer_out: np.ndarray
    memory: np.ndarray
    latency: float
    start: np.ndarray
    finish: np.ndarray
    copies: list[tuple[int, int]]
    calls: np.ndarray | None = None

    @property
    def load(self) -> np.ndarray:
        load = self.compute + self.transfer_in + self.transfer_out
        return load if self.calls is None else load + self.calls

    @property
    def max_load(self) -> float:
        return float(self.load.max())

    def objective(self, name: str) -> float:
        return self.max_load if name == "throughput" else self.latency


def placement_arrays(placement: Placement | np.ndarray, order: np.ndarray | None):
    """``(device_of, order, replicas)`` of a placement or of a bare device array."""
    if isinstance(placement, Placement):
        return (placement.device_of, placement.order if order is None else order,
                placement.replicas)
    return np.asarray(placement, dtype=np.int64), order, []


def cross_device_copies(problem: PlacementProblem, device_of: np.ndarray) -> list[tuple[int, int]]:
    """Sorted ``(value, destination device)`` pairs of every value consumed off its device."""
    edges = problem.graph.edges
    if len(edges) == 0:
        return []
    src, dst = edges[:, 0], edges[:, 1]
    crossing = device_of[src] != device_of[dst]
    pairs = {(int(u), int(device_of[v])) for u, v in zip(src[crossing], dst[crossing])}
    return sorted(pairs)


def contiguity_edges(problem: PlacementProblem) -> np.ndarray:
    """The ``(producer, consumer)`` pairs that a contiguous split must send forward only.

    A graph without backward nodes: all its edges. A training graph (Tarnawski et al., NeurIPS
    2020, training setting, as their published ``dp.cpp`` implements it): only its forward part
    must form a pipeline, so only the edges between two non-backward nodes count; a backward node
    follows the forward nodes of its colour class onto their device. A backward node whose colour
    class holds no forward node (an "orphan", e.g. a gradient accumulation) stands in for its own
    forward mate: each edge between two backward nodes that touches an orphan counts reversed, as
    its forward mirror image. The loads still count every edge (:func:`evaluate`).
    """
    edges = problem.graph.edges
    backward = np.array([node.is_backward for node in problem.graph.nodes], dtype=bool)
    if not backward.any() or len(edges) == 0:
        return edges
    with_forward_mate = ~backward
    for colour in problem.colour_classes:
        if not backward[colour].all():
            with_forward_mate[colour] = True
    orphan = ~with_forward_mate
    src, dst = edges[:, 0], edges[:, 1]
    forward = edges[~backward[src] & ~backward[dst]]
    mirrored = edges[backward[src] & backward[dst] & (orphan[src] | orphan[dst])][:, ::-1]
    return np.concatenate([forward, mirrored])


def validate(
    problem: PlacementProblem,
    placement: Placement | np.ndarray,
    order: np.ndarray | None = None,
    contiguous: bool = False,
) -> None:
    """Raise :class:`InvalidPlacementError` if the placement breaks any constraint of ``problem``.

    Checks: the placement's operator names (where it records them) are the graph's; one valid
    device per operator; the operator is supported there and within its pin;
    colour classes share a device; memory fits each device; ``order`` (if any) is a topological
    permutation; with ``contiguous=True``, the devices' quotient graph over
    :func:`contiguity_edges` is acyclic (a pipeline; for a training graph, of its forward part).
    Replica groups (:class:`~tvm_place.graph.Placement`) are disjoint, their other members hold no
    operator of their own, and each member supports, is allowed and holds its group's operators.
    """
    device_of, order, replicas = placement_arrays(placement, order)
    n, num_devices = problem.num_ops, problem.num_devices
    names = problem.graph.names
    operators = getattr(placement, "operators", None)
    if operators is not None and list(operators) != list(names):
        if len(operators) != n:
            what = f"it names {len(operators)} operators, the model has {n}"
        else:
            u = next(u for u in range(n) if operators[u] != names[u])
            what = f"its operator {u} is {operators[u]!r}, the model's is {names[u]!r}"
        raise InvalidPlacementError(
            f"the placement no longer matches the graph: {what} (was it made for another model, "
            "or before the model changed?); solve again, or save a new plan"
        )
    if device_of.shape != (n,):
        raise InvalidPlacementError(
            f"the placement gives {device_of.size} devices for {n} operators; it no longer matches "
            "the graph (was it made for another model?)"
        )
    if n and (device_of.min() < 0 or device_of.max() >= num_devices):
        raise InvalidPlacementError(
            f"the placement uses a device index outside 0..{num_devices - 1}"
        )
    allowed = problem.allowed()
    bad = np.flatnonzero(~allowed[np.arange(n), device_of])
    if bad.size:
        u = int(bad[0])
        where = problem.devices[device_of[u]].name
        reason = (
            f"it is pinned to {[problem.devices[d].name for d in problem.pins[u]]}"
            if u in problem.pins
            else "it is not supported there"
        )
        raise InvalidPlacementError(
            f"operator {names[u]!r} is placed on {where}, but {reason} ({bad.size} such operators)"
        )
    for colour in problem.colour_classes:
        if len({int(device_of[u]) for u in colour}) > 1:
            raise InvalidPlacementError(
                f"operators {[names[u] for u in colour][:4]} must share a device (colour class) "
                "but are split"
            )
    _validate_replicas(problem, device_of, replicas, allowed)
    used = _replicated(np.bincount(device_of, weights=problem.memory, minlength=num_devices),
                       replicas)
    capacity = problem.capacity
    over = np.flatnonzero(used > capacity * (1 + MEMORY_TOLERANCE))
    if over.size:
        d = int(over[0])
        raise InvalidPlacementError(
            f"device {problem.devices[d].name} holds {used[d]:.4g} bytes, over its capacity "
            f"{capacity[d]:.4g}"
        )
    if order is not None:
        order = np.asarray(order)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise InvalidPlacementError("the execution order is not a permutation of the operators")
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        edges = problem.graph.edges
        if len(edges) and (position[edges[:, 0]] >= position[edges[:, 1]]).any():
            raise InvalidPlacementError("the execution order runs an operator before its input")
    if contiguous:
        quotient = {(int(device_of[u]), int(device_of[v])) for u, v in contiguity_edges(problem)}
        quotient = {(a, b) for a, b in quotient if a != b}
        if _has_cycle(num_devices, quotient):
            raise InvalidPlacementError(
                "the placement is not contiguous: data flows from one device to another and back, "
                "so the devices cannot form a pipeline"
            )


def _validate_replicas(problem: PlacementProblem, device_of: np.ndarray,
                       replicas: list[tuple[int, ...]], allowed: np.ndarray) -> None:
    names = problem.device_names
    seen: set[int] = set()
    for group in replicas:
        if len(group) < 2 or any(not 0 <= d < problem.num_devices for d in group):
            raise InvalidPlacementError(
                f"replica group {list(group)} must name at least two devices of "
                f"0..{problem.num_devices - 1}"
            )
        if seen & set(group):
            raise InvalidPlacementError(
                f"device {names[min(seen & set(group))]} is in two replica groups; a device can "
                "replicate one group only"
            )
        seen |= set(group)
        first, others = group[0], group[1:]
        squatters = np.flatnonzero(np.isin(device_of, others))
        if squatters.size:
            raise InvalidPlacementError(
                f"operator {problem.graph.names[int(squatters[0])]!r} is placed on "
                f"{names[int(device_of[squatters[0]])]}, a replica of {names[first]}: place the "
                f"group's operators on its first device, {names[first]}"
            )
        ops = np.flatnonzero(device_of == first)
        bad = ops[~allowed[np.ix_(ops, others)].all(axis=1)]
        if bad.size:
            raise InvalidPlacementError(
                f"operator {problem.graph.names[int(bad[0])]!r} is replicated over "
                f"{[names[d] for d in group]}, but it is unsupported on or pinned away from "
                "one of them"
            )


def _replicated(per_device: np.ndarray, replicas: list[tuple[int, ...]]) -> np.ndarray:
    """Copy each replica group's first entry to its other members."""
    per_device = per_device.copy()
    for group in replicas:
        per_device[list(group[1:])] = per_device[group[0]]
    return per_device


def ready_time(u: int, d: int, free: list[float], finish: list[float], device_of: list[int],
               predecessors, transfer: list[list[float]]) -> tuple[float, int]:
    """When operator ``u`` may start on device ``d``, and what it waits for: ``(ready, p)``.

    ``d`` is free at ``free[d]``; a value of predecessor ``p`` made on device ``e = device_of[p]``
    arrives at ``finish[p]``, or ``transfer[p][e] + transfer[p][d]`` later where ``e != d`` (the
    star topology of :mod:`tvm_place.graph`). ``p`` is the predecessor whose value arrives last,
    where it arrives after ``free[d]``, else -1 (``u`` waits for the device). The cost model's one
    rule for a start, used by :func:`evaluate` and by the list schedules of HEFT; Python lists,
    not arrays, as the recurrences that call it once per operator (and candidate device) are hot.
    Time O(in-degree).
    """
    ready, waited_for = free[d], -1
    for p in predecessors[u]:
        e = device_of[p]
        arrival = finish[p] if e == d else finish[p] + transfer[p][e] + transfer[p][d]
        if arrival > ready:
            ready, waited_for = arrival, p
    return ready, waited_for


def _has_cycle(num_vertices: int, edges: set[tuple[int, int]]) -> bool:
    indegree = [0] * num_vertices
    out: list[list[int]] = [[] for _ in range(num_vertices)]
    for a, b in edges:
        out[a].append(b)
        indegree[b] += 1
    ready = [v for v in range(num_vertices) if indegree[v] == 0]
    seen = 0
    while ready:
        a = ready.pop()
        seen += 1
        for b in out[a]:
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    return seen != num_vertices


def evaluate(
    problem: PlacementProblem, placement: Placement | np.ndarray, order: np.ndarray | None = None
) -> Evaluation:
    """Recompute the loads and the latency of a placement (it is validated first).

    Latency model (:mod:`tvm_place.schedule`, the rule the runtime follows): each device runs its
    operators one at a time in ``order`` (default: the graph's topological order); an operator starts when its device is free and every input has arrived; a
    value crossing from ``d`` to ``e`` arrives ``transfer_time[u, d] + transfer_time[u, e]`` after
    it was produced. Transfers delay but do not occupy the devices. Where devices have a
    ``call_overhead``, the first operator of each stage (:func:`tvm_place.schedule.stage_of`)
    starts that much later, and each stage adds it to its device's load.

    Replicas (throughput): each member of a group carries, per input, ``1 / len(group)`` of the
    compute and transfers that its group's operators would cost on it alone (inputs are dealt
    round-robin); the latency is that of an input run on the groups' first devices.
    """
    device_of, order, replicas = placement_arrays(placement, order)
    validate(problem, placement, order)
    n, num_devices = problem.num_ops, problem.num_devices
    ops = np.arange(n)
    op_time = problem.compute_time[ops, device_of]
    compute = np.bincount(device_of, weights=op_time, minlength=num_devices)

    copies = cross_device_copies(problem, device_of)
    transfer_in = np.zeros(num_devices)
    transfer_out = np.zeros(num_devices)
    for u, e in copies:
        transfer_in[e] += problem.transfer_time[u, e]
    for u in sorted({u for u, _ in copies}):
        transfer_out[device_of[u]] += problem.transfer_time[u, device_of[u]]
    for group in replicas:
        first, share = group[0], 1.0 / len(group)
        ops = device_of == first
        received = [u for u, e in copies if e == first]
        sent = sorted({u for u, _ in copies if device_of[u] == first})
        for e in group:
            compute[e] = problem.compute_time[ops, e].sum() * share
            transfer_in[e] = problem.transfer_time[received, e].sum() * share
            transfer_out[e] = problem.transfer_time[sent, e].sum() * share

    # The schedule's rule (tvm_place.schedule), which the runtime's executor follows too.
    order = problem.graph.topological_order if order is None else np.asarray(order)
    overhead = np.array([d.call_overhead for d in problem.devices])
    opens = np.zeros(n)  # each operator's wait for its stage to start
    calls = None
    if overhead.any():
        stage = schedule.stage_of(device_of, problem.graph.edges, order)
        firsts = np.unique(stage, return_index=True)[1]
        opens[firsts] = overhead[device_of[firsts]]
        stages = np.bincount(device_of[firsts], minlength=num_devices).astype(np.float64)
        for group in replicas:  # each member starts its group's stages for every other input
            stages[list(group)] = stages[group[0]] / len(group)
        calls = stages * overhead
    # The recurrence runs on Python lists: NumPy scalar indexing made it seconds at 200,000.
    start = [0.0] * n
    finish = [0.0] * n
    device_free = [0.0] * num_devices
    transfer = problem.transfer_time.tolist()
    devices, opening, durations = device_of.tolist(), opens.tolist(), op_time.tolist()
    predecessors = problem.graph.predecessors
    for u in np.asarray(order).tolist():
        d = devices[u]
        start[u] = ready_time(u, d, device_free, finish, devices, predecessors, transfer)[0] + opening[u]
        finish[u] = start[u] + durations[u]
        device_free[d] = finish[u]
    start, finish = np.array(start), np.array(finish)
    memory = _replicated(np.bincount(device_of, weights=problem.memory, minlength=num_devices),
                         replicas)
    return Evaluation(
        compute=compute,
        transfer_in=transfer_in,
        transfer_out=transfer_out,
        memory=memory,
        latency=float(finish.max()) if n else 0.0,
        start=start,
        finish=finish,
        copies=copies,
        calls=calls,
    )


def stage_costs(problem: PlacementProblem, device_of: np.ndarray, order: np.ndarray | None = None):
    """The stages of a placement as the stream rule (:class:`tvm_place.schedule.Stream`) sees
    them: ``(stage, stage_device, busy, needs)``.

    ``stage[u]``: operator ``u``'s stage (:func:`tvm_place.schedule.stage_of`);
    ``stage_device[s]``: its device; ``busy[s, p]``: the seconds stage ``s`` occupies device
    ``p`` if run there (a replica group's member runs its first device's stages): its operators'
    compute, its ``call_overhead``, and its halves of the copies it receives (at its first stage
    that reads the value) and sends (once per value): :func:`evaluate`'s loads, stage by stage (on
    Ray a copy's export and import run on the workers); ``needs[s]``: the stages whose values
    stage ``s`` reads. Time O(n + m) (times the devices for ``busy``).
    """
    device_of = np.asarray(device_of, dtype=np.int64)
    n = problem.num_ops
    order = problem.graph.topological_order if order is None else np.asarray(order)
    stage = schedule.stage_of(device_of, problem.graph.edges, order)
    num_stages = int(stage.max()) + 1 if n else 0
    stage_device = np.zeros(num_stages, dtype=np.int64)
    stage_device[stage] = device_of
    overhead = np.array([d.call_overhead for d in problem.devices], dtype=np.float64)
    busy = np.tile(overhead, (num_stages, 1))
    np.add.at(busy, stage, problem.compute_time)
    copies = cross_device_copies(problem, device_of)
    for u, e in copies:  # the receiver's half, at its first stage that reads the value
        receiving = [v for v in problem.graph.successors[u] if device_of[v] == e]
        busy[min(stage[v] for v in receiving)] += problem.transfer_time[u]
    for u in sorted({u for u, _ in copies}):  # the sender's half, once per value
        busy[stage[u]] += problem.transfer_time[u]
    needs: list[set[int]] = [set() for _ in range(num_stages)]
    for u, v in np.asarray(problem.graph.edges, dtype=np.int64).reshape(-1, 2).tolist():
        if stage[u] != stage[v]:
            needs[stage[v]].add(int(stage[u]))
    return stage, stage_device, busy, needs


def stream_interval(problem: PlacementProblem, placement: Placement | np.ndarray, depth: int,
                    inputs: int | None = None, order: np.ndarray | None = None) -> float:
    """Seconds per input in steady state of a stream with at most ``depth`` inputs in flight,
    input ``k`` entering when input ``k - depth`` has left (as ``run_stream(depth=...)`` admits
    them, and as a decode loop feeds a micro-batch's next step once its last one is out).

    The schedule the runtime runs (:class:`tvm_place.schedule.Stream`, on :func:`stage_costs`):
    each device runs one stage at a time; a copy's halves occupy the devices at either end. The
    interval is at least ``max_load``, which a contiguous split reaches with enough inputs in
    flight; with few in flight and a split that goes back and forth between devices it is
    larger, which the bound ``max(max_load, latency / depth)`` misses. With ``depth=1`` it is
    the latency with copies occupying their devices (:func:`evaluate`'s latency lets them
    overlap). Replica groups take alternate inputs.

    ``inputs``: how many are simulated (default ``8 * depth + 8``); the interval is measured
    between the ends of the inputs at a quarter and three quarters of them. Time
    O(inputs * (n + m) * depth).
    """
    device_of, order, replicas = placement_arrays(placement, order)
    validate(problem, placement, order)
    if depth < 1:
        raise InvalidPlacementError(f"depth must be at least 1, not {depth}")
    if problem.num_ops == 0:
        return 0.0
    _, stage_device, busy, needs = stage_costs(problem, device_of, order)
    total = inputs if inputs is not None else 8 * depth + 8
    members = schedule.stream_members(replicas, sorted(set(stage_device.tolist())))
    stream = schedule.Stream(stage_device, busy, needs, depth, total, members)
    return stream.interval()


def regret(problem: PlacementProblem, placement: Placement | np.ndarray,
           reference: Placement | np.ndarray, objective: str) -> float:
    """How much worse ``placement`` is than ``reference`` on ``problem``'s costs, as a fraction
    of the reference's objective: a placement made on predicted costs, judged on measured ones
    against the placement made on the measured costs (0: as good; negative where the reference,
    a heuristic's or a time-limited solve's, was not optimal)."""
    best = evaluate(problem, reference).objective(objective)
    return evaluate(problem, placement).objective(objective) / best - 1.0
