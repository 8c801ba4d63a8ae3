"""Communication-minimising, load-balanced partitioning (method ``comm-balanced``), and runtime
rebalancing from measured operator times.

Reference: S. Tavarageri, S. Sridharan, B. Kaul, "Automatic Model Parallelism for Deep Neural
Networks with Compiler and Hardware Support", arXiv 1906.08168, 2019.

*Their method* (from the paper's abstract; the full text was not in the reference corpus this was
written from): a compiler models the computation and the communication cost of the dataflow graph
of DNN training, then partitions that graph over the devices with heuristics chosen so that the
communication between devices is minimal and the load is well balanced; "hardware scheduling
assistants" then fine-tune the distribution of work at runtime.

*Our reading*, a multilevel min-cut with balance and refinement in the style of METIS (G. Karypis,
V. Kumar, SIAM J. Sci. Comput. 20(1), 1998), on the cost model of :mod:`tvm_place.graph`:

1. *Units*: each colour class (overlapping ones merged) moves as one; other operators alone
   (:class:`tvm_place.solvers.heft._Units`).
2. *Coarsening* by heavy-edge matching: nodes are visited in a seeded random order (so the result
   is deterministic); each unmatched node merges with the unmatched neighbour joined by the
   heaviest communication (an edge ``u -> v`` weighs ``2 * mean_d transfer[u, d]``, a sender and a
   receiver), if the pair can share a device (support, pins), holds at most half the memory of the
   roomiest device it may share, and at most ``1 / (3 D)`` of the total work (fastest times), so
   the coarsest graph can still be balanced. Levels are built until at most ``max(16, 8 D)`` nodes
   remain or a level shrinks by less than 10%.
3. *Initial partition* of the coarsest graph, balancing compute in proportion to the devices'
   speeds, two ways: longest-processing-time first on unrelated machines (nodes by decreasing
   work, each to the device where its compute load ends lowest, ties to the device it
   communicates most with), and the ``greedy`` baseline's fill of the devices by speed share
   with the nodes in topological order (:func:`tvm_place.solvers.baselines.fill_in_order`); a
   device without room for a node is skipped. The placements with everything on one device that
   fits are tried too; each candidate is refined on the coarsest graph and the best kept. If the
   coarsest graph cannot be packed the next finer one is tried, down to a depth-first packing
   search over the units (:func:`tvm_place.solvers.heft._pack_memory`).
4. *Uncoarsening with refinement*: the partition is projected level by level to the units; on each
   level, Kernighan-Lin / Fiduccia-Mattheyses style passes visit the nodes in topological order
   and move each to the device (allowed, with room) that lowers the objective most, keeping only
   moves that lower it. For *throughput* the objective is the evaluator's max-load, ties broken by
   the sum of the loads (that is, less communication and faster devices), kept exactly under each
   single-operator move; only nodes on the most loaded device or on a device boundary are tried.
   For *latency* it is the evaluator's makespan in one topological order (HEFT's upward-rank
   order), re-timed from the moved node on with early exit
   (:class:`tvm_place.solvers.heft._OrderedSchedule`); only nodes on the critical chain are tried.
   Passes repeat until none improves, :data:`MAX_PASSES`, or the time limit.
5. *V-cycles* (iterated multilevel refinement, as METIS refines a given partition): coarsen again
   joining only units on one device (another matching each time), refine from the coarsest level
   down; repeat while a cycle improves, up to :data:`MAX_CYCLES`. For latency each cycle first
   adopts the order of the placement's own upward ranks (compute on the chosen device, transfers
   only on edges that cross) if that is faster. Last, a second start is refined by V-cycles and
   the better result kept: the best pipeline slicing of a topological order (the ``pipedream``
   baseline, :func:`tvm_place.solvers.baselines.pipedream`, given :data:`PIPELINE_SHARE` of the
   time left), else the ``greedy`` fill of the units in topological order. Contiguous stages cut
   few edges, so this start is the communication-minimising one; the refinement then moves
   operators out of order wherever that lowers the objective.

*Runtime rebalancing* (our reading of the hardware scheduling assistants) is :func:`rebalance`: from
the operators' measured times it corrects the costs (:func:`tvm_place.cost.correction.corrected_compute`: a measured operator gets its time on its
device; every other cost on a device is scaled by that device's measured / predicted ratio), then
runs the V-cycles of step 5 from the current placement: chunks of operators that share a device
move first, then single units, and only while the objective drops, so the placement changes where
the measurements say it is off.

Complexity, ``n`` operators, ``m`` edges, ``D`` devices, ``L = O(log n)`` levels: coarsening
``O(n + m)`` per level; the initial partitions ``O(k (D + d))`` on ``k <= max(16, 8 D)`` nodes
of degree ``d``; one throughput pass ``O((n + m) D)`` per level (a trial move of an operator
costs ``O(its degree)``), one latency pass ``O(c D (n + m))`` with ``c`` nodes on the critical
chain. The refinement watches the clock; coarsening and the initial partitions are fast.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..cost.correction import corrected_compute
from ..errors import InfeasibleError
from ..evaluate import evaluate
from ..graph import Placement, PlacementProblem
from . import bounds
from .baselines import Context, fill_in_order, pipedream
from .heft import _OrderedSchedule, _rank_order, _Units, _upward_ranks

#: Refinement passes per level at most.
MAX_PASSES = 8

#: Coarsening stops at ``max(COARSEST_MIN, COARSEST_PER_DEVICE * D)`` nodes ...
COARSEST_MIN = 16
COARSEST_PER_DEVICE = 8

#: ... or when a level keeps more than this fraction of the nodes of the one below.
MIN_SHRINK = 0.9

#: A coarse node holds at most ``1 / (NODE_WORK_SHARE * D)`` of the total work.
NODE_WORK_SHARE = 3

#: Seed of the node visiting order in coarsening (fixed: the method is deterministic).
SEED = 0

#: V-cycles (coarsen within devices, refine down) after the first descent, at most.
MAX_CYCLES = 4

#: Share of the time left that the second start's pipeline slicing may take, and the share of
#: the limit that must be left for it to be tried.
PIPELINE_SHARE = 0.25
PIPELINE_MIN_LEFT = 0.25

#: Share of the time limit after which the first hierarchy builds no further level.
HIERARCHY_SHARE = 0.3

#: Passes over the graph (each the time of one state's set-up) kept back at the end.
FINISH_PASSES = 3

#: A move must lower the objective by this relative amount to count, so float noise cannot cycle.
RELATIVE_IMPROVEMENT = 1e-12


def solve(problem: PlacementProblem, objective: str, time_limit: float,
          progress=None) -> Placement:
    """Multilevel communication-minimising, load-balanced partitioning for ``objective``."""
    context = Context.open(problem, objective, "comm-balanced", ("throughput", "latency"),
                           time_limit, progress)
    units = context.units
    rng = np.random.default_rng(SEED)
    order = _latency_order(problem, units) if objective == "latency" else None
    levels = _hierarchy(problem, units, None, rng,
                        context.started + HIERARCHY_SHARE * (context.deadline - context.started))
    context.report(f"{len(levels)} levels, coarsest {len(levels[-1].members)} nodes", 0.05)
    stats = {"levels": [len(level.members) for level in levels], "moves_kept": 0,
             "moves_tried": 0}

    start_level, starts, stuck = _initial_partitions(problem, levels, context.memory_limit)
    if not starts:  # nothing packs greedily at any level: any assignment that fits memory
        start_level, starts = 0, [("packing", context.pack(*stuck))]
    state, stats["initial_partition"] = None, None
    for name, device_of in starts:
        timed = time.perf_counter()
        candidate = _state(problem, objective, device_of, order)
        if state is None:
            # A state's set-up is one pass over the graph; the refinement stops that many passes
            # (FINISH_PASSES) early, leaving room for the resyncs and the final evaluation,
            # which on 200,000 operators took it past its limit otherwise.
            context = dataclasses.replace(context, deadline=context.deadline - FINISH_PASSES * (
                time.perf_counter() - timed))
        _refine(candidate, levels[start_level], context, stats)
        if state is None or candidate.better(candidate.key(), state.key()):
            state, stats["initial_partition"] = candidate, name
    stats["initial_level"] = start_level
    stats["stopped_by"] = "converged"
    for index in range(start_level - 1, -1, -1):
        stats["stopped_by"] = _refine(state, levels[index], context, stats)
        context.report(f"level {index}: {objective} {state.key()[0]:.6g}",
                       0.1 + 0.5 * (start_level - index) / max(1, start_level))
    state = _v_cycles(problem, units, state, context, rng, stats)
    # A second start: the best pipeline slicing of a topological order (the ``pipedream``
    # baseline, on a share of the time left), else the topological fill of the units; refined by
    # V-cycles, the better of the two results is kept.
    name, second = _pipeline_start(problem, context)
    if second is None:
        name, second = "topological fill", _topological_fill(problem, levels[0],
                                                              context.memory_limit)
    if second is not None and time.perf_counter() < context.deadline:
        other = _v_cycles(problem, units, _state(problem, objective, second, order), context,
                          rng, stats)
        if other.better(other.key(), state.key()):
            state, stats["initial_partition"] = other, f"{name}, finest level"
    return context.placement(state.device_of, state.order, stats)


def _pipeline_start(problem: PlacementProblem, context: Context):
    """``("pipeline slicing", device_of)`` from the ``pipedream`` baseline, or ``(None, None)``
    when it finds no slicing or too little time is left."""
    left = context.deadline - time.perf_counter()
    # pipedream's preparation alone is O(n + m) Python steps (seconds at 200,000 operators):
    # only with a fair share of the limit left.
    if left <= PIPELINE_MIN_LEFT * (context.deadline - context.started):
        return None, None
    try:
        return "pipeline slicing", pipedream(problem, "throughput", PIPELINE_SHARE * left).device_of
    except InfeasibleError:
        return None, None


def rebalance(problem: PlacementProblem, placement: Placement, measured_compute_time,
              time_limit: float = 10.0, progress=None) -> Placement:
    """Re-place ``placement`` with measured operator times, starting from it and moving few ops.

    ``measured_compute_time`` is either ``(n,)``: each operator's measured time on the device it
    runs on in ``placement``, or ``(n, D)``: measured times per device; ``nan`` (or ``inf``) marks
    an operator not measured. The costs are corrected (see the module docstring) and the returned
    placement's value is measured on the corrected costs; ``stats`` says how many operators moved
    and the value the old placement has on the corrected costs.
    """
    corrected, factor = corrected_compute(problem, placement.device_of, measured_compute_time)
    objective = placement.objective
    context = Context.open(corrected, objective, "comm-balanced", ("throughput", "latency"),
                           time_limit, progress)
    order = None
    if objective == "latency":
        order = placement.order if placement.order is not None else \
            _latency_order(corrected, context.units)
    before = evaluate(corrected, placement.device_of, order).objective(objective)
    stats = {"rebalanced": True, "moves_kept": 0, "moves_tried": 0, "value_before": before,
             "device_factor": [float(f) for f in factor], "stopped_by": "converged"}
    state = _state(corrected, objective, placement.device_of, order)
    state = _v_cycles(corrected, context.units, state, context, np.random.default_rng(SEED),
                      stats)
    moved = int((np.asarray(state.device_of) != placement.device_of).sum())
    stats["moved_ops"] = moved
    context.report(f"moved {moved} operators: {objective} {before:.6g} -> "
                   f"{state.key()[0]:.6g}", 1.0)
    return context.placement(state.device_of, state.order, stats)


def _v_cycles(problem: PlacementProblem, units: _Units, state, context: Context, rng,
              stats: dict):
    """Refine ``state`` by V-cycles: coarsen joining only units on one device, refine from the
    coarsest level down; repeat (other matchings) while a cycle improves, up to
    :data:`MAX_CYCLES`. For latency each cycle first tries the order of the current placement's
    upward ranks. Returns the refined state (a new one when the order changed)."""
    stats.setdefault("cycles", 0)
    for _ in range(MAX_CYCLES):
        if time.perf_counter() > context.deadline:
            stats["stopped_by"] = "time_limit"
            break
        before = state.key()
        state = state.reordered()
        unit_device = [state.device_of[members[0]] for members in units.members]
        levels = _hierarchy(problem, units, unit_device, rng, context.deadline)
        for level in reversed(levels):
            stats["stopped_by"] = _refine(state, level, context, stats)
        stats["cycles"] += 1
        if not state.better(state.key(), before):
            break
    return state


def _latency_order(problem: PlacementProblem, units: _Units) -> np.ndarray:
    return _rank_order(problem, _upward_ranks(problem, units))


# -- the hierarchy --------------------------------------------------------------------------------


@dataclass
class _Level:
    """One graph of the hierarchy: node ``a`` holds operators ``members[a]``."""

    members: list[list[int]]
    devices: list[list[int]]
    memory: list[float]
    work: list[float]
    adjacency: list[dict[int, float]]
    #: Node -> node of the next coarser level (set when that level is built).
    parent: list[int] = field(default_factory=list)
    #: Nodes by the topological position of their first operator: the refinement's visiting order.
    visit: list[int] = field(default_factory=list)


def _level_work(problem: PlacementProblem, members: list[list[int]],
                devices: list[list[int]]) -> list[float]:
    """Each node's work: its members' least compute over the node's devices. In NumPy, one
    pass per distinct device set (a NumPy call per node took most of the method's time on
    200,000 operators). Time O(n S) for ``S`` distinct sets."""
    sizes = np.fromiter((len(m) for m in members), dtype=np.int64, count=len(members))
    flat = np.fromiter(itertools.chain.from_iterable(members), dtype=np.int64, count=sizes.sum())
    node = np.repeat(np.arange(len(members)), sizes)
    index: dict[tuple[int, ...], int] = {}
    set_of = np.array([index.setdefault(tuple(ds), len(index)) for ds in devices], dtype=np.int64)
    least = np.stack([problem.compute_time[:, list(ds)].min(axis=1) for ds in index])
    return np.bincount(node, weights=least[set_of[node], flat], minlength=len(members)).tolist()


def _first_positions(position: np.ndarray, members: list[list[int]]) -> np.ndarray:
    """Each node's least ``position`` over its members (non-empty), in NumPy."""
    sizes = np.fromiter((len(m) for m in members), dtype=np.int64, count=len(members))
    flat = np.fromiter(itertools.chain.from_iterable(members), dtype=np.int64, count=sizes.sum())
    return np.minimum.reduceat(position[flat], np.concatenate([[0], np.cumsum(sizes)[:-1]]))


def _hierarchy(problem: PlacementProblem, units: _Units, same_device, rng,
               stop_at: float = math.inf) -> list[_Level]:
    """The finest level (units) and coarser ones by heavy-edge matching.

    ``same_device`` (a device per unit, or ``None``) forbids joining units on different devices.
    No level is started after ``stop_at`` (``time.perf_counter()``): each costs O(n + m) Python
    steps, seconds on 200,000 operators, and the coarsest level built so far serves.
    """
    edge_weight = 2.0 * problem.transfer_time.mean(axis=1)
    adjacency: list[dict[int, float]] = [{} for _ in units.members]
    for u, v in problem.graph.edges.tolist():
        a, b = units.unit_of[u], units.unit_of[v]
        if a != b:
            adjacency[a][b] = adjacency[a].get(b, 0.0) + edge_weight[u]
            adjacency[b][a] = adjacency[b].get(a, 0.0) + edge_weight[u]
    finest = _Level(
        members=[list(m) for m in units.members],
        devices=[list(ds) for ds in units.devices],
        memory=list(units.memory),
        work=_level_work(problem, units.members, units.devices),
        adjacency=adjacency,
    )
    levels = [finest]
    total_work = float(bounds.fastest_times(problem).sum())
    work_limit = total_work / (NODE_WORK_SHARE * problem.num_devices)
    target = max(COARSEST_MIN, COARSEST_PER_DEVICE * problem.num_devices)
    label = same_device
    while len(levels[-1].members) > target and time.perf_counter() < stop_at:
        coarse = _coarsen(problem, levels[-1], work_limit, rng, label)
        if coarse is None:
            break
        if label is not None:
            coarse_label = [-1] * len(coarse.members)
            for a, parent in enumerate(levels[-1].parent):
                coarse_label[parent] = label[a]
            label = coarse_label
        levels.append(coarse)
    position = np.empty(problem.num_ops, dtype=np.int64)
    position[problem.graph.topological_order] = np.arange(problem.num_ops)
    for level in levels:
        first = _first_positions(position, level.members)
        level.visit = np.argsort(first, kind="stable").tolist()
    return levels


def _coarsen(problem: PlacementProblem, level: _Level, work_limit: float, rng,
             label) -> _Level | None:
    """Heavy-edge matching of ``level``; ``None`` when it would not shrink enough."""
    count = len(level.members)
    capacity = problem.capacity
    match = [-1] * count
    for a in rng.permutation(count).tolist():
        if match[a] >= 0:
            continue
        best, best_weight = -1, -math.inf
        for b, weight in level.adjacency[a].items():
            if match[b] >= 0 or weight < best_weight or (weight == best_weight and b > best):
                continue
            if label is not None and label[a] != label[b]:
                continue
            common = [d for d in level.devices[a] if d in level.devices[b]]
            memory = level.memory[a] + level.memory[b]
            if not common or memory > 0.5 * max(capacity[d] for d in common):
                continue
            if level.work[a] + level.work[b] > work_limit:
                continue
            best, best_weight = b, weight
        match[a] = a if best < 0 else best
        if best >= 0:
            match[best] = a
    parent = [-1] * count
    groups: list[list[int]] = []
    for a in range(count):
        if parent[a] < 0:
            parent[a] = parent[match[a]] = len(groups)
            groups.append([a] if match[a] == a else [a, match[a]])
    if len(groups) > MIN_SHRINK * count:
        return None
    level.parent = parent
    members = [sorted(u for a in group for u in level.members[a]) for group in groups]
    devices = [
        [d for d in level.devices[group[0]] if all(d in level.devices[a] for a in group)]
        for group in groups
    ]
    adjacency: list[dict[int, float]] = [{} for _ in groups]
    for a in range(count):
        for b, weight in level.adjacency[a].items():
            pa, pb = parent[a], parent[b]
            if pa != pb:
                adjacency[pa][pb] = adjacency[pa].get(pb, 0.0) + weight
    return _Level(
        members=members,
        devices=devices,
        memory=[sum(level.memory[a] for a in group) for group in groups],
        work=_level_work(problem, members, devices),
        adjacency=adjacency,
    )


# -- initial partition ----------------------------------------------------------------------------


def _initial_partitions(problem: PlacementProblem, levels: list[_Level], memory_limit):
    """``(level index, [(name, device per operator), ...], stuck)`` on the coarsest level that
    packs; ``stuck`` (operator, memory used per device) says where the finest level's balanced
    partition ran out of memory when none packs."""
    stuck = None
    for index in range(len(levels) - 1, -1, -1):
        level = levels[index]
        starts = []
        lpt, stuck = _longest_processing_time(problem, level, memory_limit)
        if lpt is not None:
            starts.append(("balanced", lpt))
        fill = _topological_fill(problem, level, memory_limit)
        if fill is not None:
            starts.append(("topological fill", fill))
        total_memory = sum(level.memory)
        for d in range(problem.num_devices):
            if total_memory <= memory_limit[d] and all(d in ds for ds in level.devices):
                starts.append((f"single device {problem.devices[d].name}",
                               np.full(problem.num_ops, d, dtype=np.int64)))
        if starts:
            return index, starts, None
    return 0, [], stuck


def _topological_fill(problem: PlacementProblem, level: _Level, memory_limit):
    """The nodes in topological order filling the devices by speed (the ``greedy`` baseline's
    rule, :func:`tvm_place.solvers.baselines.fill_in_order`); ``None`` if one finds no room."""
    placed, _, _ = fill_in_order(
        problem, level.visit, [level.work[a] for a in level.visit],
        [level.devices[a] for a in level.visit], [level.memory[a] for a in level.visit],
        memory_limit,
    )
    if placed is None:
        return None
    device_of = np.zeros(problem.num_ops, dtype=np.int64)
    for a, d in zip(level.visit, placed):
        device_of[level.members[a]] = d
    return device_of


def _longest_processing_time(problem: PlacementProblem, level: _Level, memory_limit):
    """Nodes by decreasing work, each where its device's compute load ends lowest (ties: where it
    communicates most, then the smaller index). Returns ``(device per operator, None)``, or
    ``(None, (a stranded operator, memory used per device))`` if a node finds no room."""
    num_devices = problem.num_devices
    load = [0.0] * num_devices
    used = [0.0] * num_devices
    node_device = [-1] * len(level.members)
    device_of = np.zeros(problem.num_ops, dtype=np.int64)
    for a in sorted(range(len(level.members)), key=lambda a: (-level.work[a], a)):
        compute = problem.compute_time[level.members[a]].sum(axis=0)
        ties = [0.0] * num_devices
        for b, weight in level.adjacency[a].items():
            if node_device[b] >= 0:
                ties[node_device[b]] += weight
        options = [
            (load[d] + compute[d], -ties[d], d)
            for d in level.devices[a]
            if used[d] + level.memory[a] <= memory_limit[d]
        ]
        if not options:
            return None, (level.members[a][0], used)
        ends, _, d = min(options)
        load[d], used[d], node_device[a] = ends, used[d] + level.memory[a], d
        device_of[level.members[a]] = d
    return device_of, None


# -- refinement -----------------------------------------------------------------------------------


def _state(problem: PlacementProblem, objective: str, device_of, order):
    if objective == "throughput":
        return _ThroughputState(problem, device_of)
    return _LatencyState(problem, device_of, order)


def _refine(state, level: _Level, context: Context, stats: dict) -> str:
    """FM/KL-style passes over ``level``'s nodes, keeping the moves that lower the objective.

    Returns why it stopped: ``"converged"``, ``"pass_limit"`` or ``"time_limit"``.
    """
    memory_limit = context.memory_limit
    device_of = state.device_of
    used = [0.0] * context.problem.num_devices
    for u, d in enumerate(device_of):
        used[d] += context.problem.memory[u]
    for _ in range(MAX_PASSES):
        state.resync()
        improved = False
        for a in level.visit:
            if time.perf_counter() > context.deadline:
                return "time_limit"
            ops = level.members[a]
            if not state.worth_trying(ops):
                continue
            current = device_of[ops[0]]
            reference, best = state.key(), None
            for d in level.devices[a]:
                if d == current or used[d] + level.memory[a] > memory_limit[d]:
                    continue
                if time.perf_counter() > context.deadline:  # a latency trial re-times a tail
                    return "time_limit"
                stats["moves_tried"] += 1
                key = state.trial(ops, d, reference)
                if state.better(key, reference):
                    reference, best = key, d
            if best is not None:
                state.commit(ops, best)
                used[current] -= level.memory[a]
                used[best] += level.memory[a]
                stats["moves_kept"] += 1
                improved = True
        if not improved:
            return "converged"
    return "pass_limit"


class _ThroughputState:
    """The evaluator's device loads, kept exactly under single-operator moves.

    ``count[u][e]`` is how many consumers of ``u`` run on device ``e``. Device ``e != device(u)``
    receives ``u`` (pays ``transfer[u, e]``) iff ``count[u][e] > 0``; ``device(u)`` sends it (pays
    ``transfer[u, device(u)]``) iff ``count[u][device(u)]`` is less than ``u``'s consumers.
    """

    def __init__(self, problem: PlacementProblem, device_of):
        self.problem = problem
        self.compute = problem.compute_time.tolist()
        self.transfer = problem.transfer_time.tolist()
        self.preds = problem.graph.predecessors
        self.succs = problem.graph.successors
        self.consumers = [len(vs) for vs in self.succs]
        self.num_devices = problem.num_devices
        self.device_of = [int(d) for d in device_of]
        self.order = None
        self.resync()

    def resync(self) -> None:
        """Recount everything from scratch (clears float drift from many moves)."""
        n, num_devices = self.problem.num_ops, self.num_devices
        device_of = np.array(self.device_of, dtype=np.int64)
        load = np.bincount(device_of, minlength=num_devices,
                           weights=self.problem.compute_time[np.arange(n), device_of])
        count = np.zeros((n, num_devices), dtype=np.int64)
        edges = self.problem.graph.edges
        if len(edges):
            src, dst = edges[:, 0], edges[:, 1]
            np.add.at(count, (src, device_of[dst]), 1)
            crossing = device_of[src] != device_of[dst]
            copies = np.unique(src[crossing] * num_devices + device_of[dst[crossing]])
            value, receiver = copies // num_devices, copies % num_devices
            transfer = self.problem.transfer_time
            load += np.bincount(receiver, weights=transfer[value, receiver],
                                minlength=num_devices)
            senders = np.unique(value)
            load += np.bincount(device_of[senders], minlength=num_devices,
                                weights=transfer[senders, device_of[senders]])
        self.load, self.count = load.tolist(), count.tolist()

    def reordered(self) -> "_ThroughputState":
        return self

    def key(self) -> tuple[float, float]:
        return max(self.load), sum(self.load)

    @staticmethod
    def better(new, old) -> bool:
        if new[0] < old[0] * (1 - RELATIVE_IMPROVEMENT):
            return True
        return new[0] <= old[0] * (1 + RELATIVE_IMPROVEMENT) and \
            new[1] < old[1] * (1 - 1e3 * RELATIVE_IMPROVEMENT)

    def worth_trying(self, ops) -> bool:
        """On the most loaded device, or with a neighbour on another device."""
        device = self.device_of[ops[0]]
        if self.load[device] >= max(self.load):
            return True
        device_of = self.device_of
        return any(device_of[w] != device for u in ops for w in (*self.preds[u], *self.succs[u]))

    def move(self, x: int, b: int) -> None:
        """Move operator ``x`` to device ``b``, updating the loads as the evaluator counts them."""
        load, transfer, device_of, consumers = self.load, self.transfer, self.device_of, \
            self.consumers
        a = device_of[x]
        if a == b:
            return
        count = self.count[x]
        sent_x = transfer[x]
        # x as a producer: its compute, who receives it, who sends it (``device(u)`` sends ``u``
        # iff fewer than all its consumers run there).
        if count[a] < consumers[x]:
            load[a] -= sent_x[a]
        load[a] -= self.compute[x][a]
        load[b] += self.compute[x][b]
        if count[a]:
            load[a] += sent_x[a]
        if count[b]:
            load[b] -= sent_x[b]
        device_of[x] = b
        if count[b] < consumers[x]:
            load[b] += sent_x[b]
        # x as a consumer of each input p.
        for p in self.preds[x]:
            home = device_of[p]
            count_p = self.count[p]
            sent_p = transfer[p]
            if a == home:  # p loses a local consumer: it may start sending
                if count_p[a] == consumers[p]:
                    load[home] += sent_p[home]
                count_p[a] -= 1
            else:
                count_p[a] -= 1
                if count_p[a] == 0:
                    load[a] -= sent_p[a]
            if b == home:  # p gains a local consumer: it may stop sending
                count_p[b] += 1
                if count_p[b] == consumers[p]:
                    load[home] -= sent_p[home]
            else:
                count_p[b] += 1
                if count_p[b] == 1:
                    load[b] += sent_p[b]

    def trial(self, ops, d: int, reference) -> tuple[float, float]:
        back = self.device_of[ops[0]]
        for u in ops:
            self.move(u, d)
        key = self.key()
        for u in reversed(ops):
            self.move(u, back)
        return key

    def commit(self, ops, d: int) -> None:
        for u in ops:
            self.move(u, d)


class _LatencyState:
    """The evaluator's makespan over a fixed order, re-timed from a moved node on."""

    def __init__(self, problem: PlacementProblem, device_of, order: np.ndarray):
        self.problem = problem
        self.device_of = [int(d) for d in device_of]
        self.order = np.asarray(order, dtype=np.int64)
        self.schedule = _OrderedSchedule(problem, self.order)
        self.schedule.retime(self.device_of)

    def resync(self) -> None:
        pass

    def reordered(self) -> "_LatencyState":
        """This state, or one in the order of this placement's upward ranks if that is faster.

        ``rank(u) = compute[u, device(u)] + max over consumers v of (delay + rank(v))`` with the
        delay the two transfer times when ``v`` runs on another device, zero otherwise."""
        problem, device_of = self.problem, self.device_of
        compute, transfer = problem.compute_time.tolist(), problem.transfer_time.tolist()
        rank = [0.0] * problem.num_ops
        for u in reversed(problem.graph.topological_order.tolist()):
            d, sent = device_of[u], transfer[u]
            rank[u] = compute[u][d] + max(
                (rank[v] + (0.0 if device_of[v] == d else sent[d] + sent[device_of[v]])
                 for v in problem.graph.successors[u]),
                default=0.0,
            )
        other = _LatencyState(problem, device_of, _rank_order(problem, np.array(rank)))
        return other if other.better(other.key(), self.key()) else self

    def key(self) -> tuple[float]:
        return (self.schedule.latency,)

    @staticmethod
    def better(new, old) -> bool:
        return new[0] < old[0] * (1 - RELATIVE_IMPROVEMENT)

    def worth_trying(self, ops) -> bool:
        """Only a move touching the critical chain can shorten the makespan."""
        critical = self.schedule.critical
        return any(critical[u] for u in ops)

    def trial(self, ops, d: int, reference) -> tuple[float]:
        back = self.device_of[ops[0]]
        for u in ops:
            self.device_of[u] = d
        first = min(self.schedule.position[u] for u in ops)
        latency = self.schedule.trial(self.device_of, first,
                                      reference[0] * (1 - RELATIVE_IMPROVEMENT))
        for u in ops:
            self.device_of[u] = back
        return (latency,)

    def commit(self, ops, d: int) -> None:
        for u in ops:
            self.device_of[u] = d
        self.schedule.retime(self.device_of)
