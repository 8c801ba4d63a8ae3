"""Baselines users compare a placement against: one device, greedy fill, ETF, PipeDream's DP.

Each method is one function with the solver signature ``(problem, objective, time_limit,
progress=None) -> Placement``; they are registered in :data:`tvm_place.solvers.METHODS`. Every one honours
support, pins, colour classes and memory capacities, returns the value
:func:`tvm_place.evaluate.evaluate` measures and the general lower bound of
:func:`tvm_place.solvers.bounds.lower_bound`, and raises :class:`~tvm_place.errors.InfeasibleError`
with the reason when it cannot place. ``n`` operators, ``m`` edges, ``D`` devices below.

- ``fastest-device`` (both objectives): everything on the one device that gives the best value and
  can hold every operator (support, pins, memory); with no such device it says so and raises, even
  when a split over several devices would fit. ``O(n D + m)``.
- ``greedy`` (both objectives): the "fill in priority order" placement of OpenVINO HETERO and ONNX
  Runtime, with uneven shares. Devices are ranked by speed, ``speed[d]`` = (sum of the fastest
  times of the operators ``d`` may run) / (their sum on ``d``); each gets the share
  ``speed[d] / sum(speed)`` of the total work (operators weighted by their fastest time). Operators
  are walked in the graph's topological order and go to the current device until its share is
  filled (an operator belongs to the device whose share interval holds its midpoint), then to the
  next. An operator the current device may not run, or has no memory left for, goes to the first
  later (then earlier) device in the ranking that may run it and has room; a device that ran out
  of memory is done. A colour class is one item, at its first member's place in the walk.
  ``O(n D + m)``.
- ``etf`` (latency): Earliest Time First list scheduling, J.-J. Hwang, Y.-C. Chow, F. D. Anger,
  C.-Y. Lee, "Scheduling Precedence Graphs in Systems with Interprocessor Communication Times",
  SIAM J. Computing 18(2), 1989. At each step, over every ready operator (all inputs scheduled) and
  every device it may use, the pair that can *start* earliest is scheduled (the evaluator's
  rules: a device runs one operator at a time, non-insertion, a value crossing devices arrives the
  two transfer times after it was produced); ties go to the higher static level (longest path to an
  exit with mean compute times, no communication, as in the paper), then to the earlier finish,
  then to the smaller index. A device without room for an operator's colour class is not a
  candidate. The scheduling sequence is the execution order. Two heaps per device (ready
  operators by arrival of their inputs there, and those already there by static level) make it
  ``O(n D log n + m D)``.
- ``pipedream`` (throughput): PipeDream's planner (D. Narayanan et al., "PipeDream: Generalized
  Pipeline Parallelism for DNN Training", SOSP 2019, Sec. 3.1) without replication: a dynamic
  program that cuts one linear order of the operators into contiguous stages, one distinct
  device each, minimising the largest stage time. The order (:func:`pipeline_order`) is a
  depth-first topological order of the graph with colour classes (and cycles through them)
  contracted, so a class is never split and branches stay together; for a training graph it is
  the order of the forward part with each layer's backward nodes beside their forward mates, so
  a stage runs both passes of its layers. A stage ``[i, j)`` of the order on device ``d`` costs
  what the evaluator charges: its compute on ``d``, plus the transfer times on ``d`` of the values
  it receives (produced outside ``[i, j)``, consumed in it) and sends (produced in it, consumed
  outside). Devices with identical columns (compute, transfer, capacity, pins) form a type, and
  the program runs over ``(prefix, devices used per type)``::

      best[v][0] = 0 if v = 0,   best[v][j] = min over i < j, types t with v_t > 0 of
                                               max(best[v - e_t][i], load_t(i, j)),

  a stage must fit its device's memory, hold only operators it may run, and not split a
  contracted group. The answer is the best pipeline (contiguous) slicing of that one order (other
  orders may do better: see ``slicegraph``). ``O(n^2 T V)`` time with
  ``T`` types and ``V = prod (c_t + 1)`` usage vectors, vectorised over ``i``; ``O(n V)`` memory.
  Where that exceeds :data:`PIPEDREAM_RATE` cells per second of the time limit (many distinct
  devices), the slowest devices are left out (``stats["devices_considered"]``); should the clock
  still run out, the best single stage is returned (``stats["stopped_by"]``).

Operators stranded by memory in ``greedy`` or ``etf`` (every allowed device full) fall back to a
depth-first packing search (:func:`tvm_place.solvers.heft._pack_memory`); the placement is then that
packing (``greedy``) or ETF's order over it (``etf``), flagged in ``stats``.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, evaluate
from ..graph import Placement, PlacementProblem
from . import bounds, heft
from .budget import HEFT_ALWAYS_SECONDS, heft_pass_seconds
from .common import require_objective, single_device
from .grouping import contract
from .heft import PACKING_STEPS, _no_room_message, _pack_memory, _set_aside, _Units

#: The pipedream program keeps a value and a choice per (usage vector, prefix); past this many it
#: plans on the fastest devices only.
PIPEDREAM_MAX_STATES = 4_000_000

#: Program cells (type x usage vector x stage start x stage end) per second of time limit it plans
#: for (about half of what numpy did on one core of the 2-core dev machine); past that it drops
#: the slowest devices.
PIPEDREAM_RATE = 1.5e8


# -- shared helpers -------------------------------------------------------------------------------


@dataclass
class Context:
    """What every method starts from: the units that move as one, memory limits, the bound."""

    problem: PlacementProblem
    objective: str
    method: str
    units: _Units
    memory_limit: list[float]
    lower_bound: float
    started: float
    deadline: float
    progress: Callable | None

    @classmethod
    def open(cls, problem: PlacementProblem, objective: str, method: str,
             objectives: tuple[str, ...], time_limit: float, progress=None) -> "Context":
        """Check the objective and that each operator and colour class fits somewhere alone."""
        started = time.perf_counter()
        require_objective(method, objective, objectives,
                          f"use objective={objectives[0]!r} or method='auto'")
        lower_bound = bounds.lower_bound(problem, objective)  # raises for stranded operators
        units = _Units.of(problem)  # raises for a unit that no device may run or hold
        memory_limit = (problem.capacity * (1 + MEMORY_TOLERANCE)).tolist()
        return cls(problem, objective, method, units, memory_limit, lower_bound, started,
                   started + max(0.0, time_limit), progress)

    def report(self, message: str, fraction: float | None) -> None:
        if self.progress is not None:
            self.progress(f"{self.method}: {message}", fraction)

    def pack(self, stuck_at: int, used) -> np.ndarray:
        """Any assignment that fits memory (after a greedy pass stranded ``stuck_at``), or raise."""
        self.report(f"out of memory at {self.problem.graph.names[stuck_at]}; searching for a "
                    "placement that fits", None)
        device_of, exhaustive = _pack_memory(self.problem, self.units, self.memory_limit)
        if device_of is None:
            if exhaustive:
                finding = (f", and no assignment of all the operators "
                           f"({self.problem.memory.sum():.4g} bytes in all) fits the capacities")
            else:
                finding = f", and a packing search of {PACKING_STEPS} steps found none that fits"
            raise InfeasibleError(_no_room_message(
                self.problem, self.units, self.units.unit_of[stuck_at], used,
                f"in the {self.method} placement", finding
            ))
        return np.array(device_of, dtype=np.int64)

    def placement(self, device_of, order=None, stats: dict | None = None) -> Placement:
        """The Placement of ``device_of``, valued by the evaluator (``order``: for latency)."""
        device_of = np.asarray(device_of, dtype=np.int64)
        if self.objective == "throughput":
            order = None
        elif order is None:
            order = self.problem.graph.topological_order.copy()
        value = evaluate(self.problem, device_of, order).objective(self.objective)
        self.report(f"{self.objective} {value:.6g}", 1.0)
        return Placement(
            device_of=device_of,
            objective=self.objective,
            value=value,
            lower_bound=min(value, self.lower_bound),
            method=self.method,
            order=None if order is None else np.asarray(order, dtype=np.int64),
            stats={"seconds": time.perf_counter() - self.started, **(stats or {})},
        )


def single_device_blocker(problem: PlacementProblem, d: int) -> str | None:
    """Why device ``d`` cannot hold every operator alone, or ``None`` when it can."""
    allowed = problem.allowed()[:, d]
    if not allowed.all():
        u = int(np.flatnonzero(~allowed)[0])
        why = "is pinned elsewhere" if u in problem.pins and d not in problem.pins[u] else \
            "is not supported there"
        return f"operator {problem.graph.names[u]!r} {why} ({int((~allowed).sum())} such)"
    need, capacity = float(problem.memory.sum()), float(problem.capacity[d])
    if need > capacity * (1 + MEMORY_TOLERANCE):
        return f"the operators need {need:.4g} bytes, over its capacity {capacity:.4g}"
    return None


def device_speeds(problem: PlacementProblem) -> np.ndarray:
    """Per device: (sum of fastest times) / (sum of its own times) over the operators it may run."""
    allowed = problem.allowed()
    fastest = bounds.fastest_times(problem)
    own = np.where(allowed, problem.compute_time, 0.0).sum(axis=0)
    best = (allowed * fastest[:, None]).sum(axis=0)
    speed = np.zeros(problem.num_devices)
    for d in range(problem.num_devices):
        if allowed[:, d].any():
            speed[d] = best[d] / own[d] if own[d] > 0 else 1.0
    return speed


# -- fastest-device -------------------------------------------------------------------------------


def fastest_device(problem: PlacementProblem, objective: str, time_limit: float,
                   progress=None) -> Placement:
    """Everything on the single device with the best value that holds every operator."""
    context = Context.open(problem, objective, "fastest-device", ("throughput", "latency"),
                           time_limit, progress)
    device_of = single_device(problem)
    if device_of is None:
        blockers = [f"{device.name}: {single_device_blocker(problem, d)}"
                    for d, device in enumerate(problem.devices)]
        raise InfeasibleError(
            "no single device can run the whole model: " + "; ".join(blockers) + ". Use a "
            "method that splits it over several devices (e.g. 'greedy', 'comm-balanced', 'dp')"
        )
    options = sum(single_device_blocker(problem, d) is None for d in range(problem.num_devices))
    return context.placement(device_of, stats={
        "device": problem.devices[int(device_of[0])].name, "single_device_options": options
    })


# -- cheap answers for the other methods -----------------------------------------------------------


def cheap_incumbent(problem: PlacementProblem, objective: str) -> Placement | None:
    """The ``greedy`` placement (time O(n D + m), plus a packing search where filling in order
    runs out of memory), or ``None`` where it finds none: what a method returns when its time
    runs out with nothing better (:mod:`tvm_place.solvers.budget`)."""
    try:
        return greedy(problem, objective, 0.0)
    except InfeasibleError:
        return None


def heft_or_greedy(problem: PlacementProblem, search_seconds: float,
                   within: float) -> Placement | None:
    """HEFT's placement with ``search_seconds`` of local search where its passes fit in
    ``within`` seconds, else :func:`cheap_incumbent`'s (latency); ``None`` where neither finds
    one. The warm start of the exact latency methods and DiviML's."""
    if heft_pass_seconds(problem) <= max(within, HEFT_ALWAYS_SECONDS):
        try:
            return heft.solve(problem, "latency", search_seconds)
        except InfeasibleError:
            pass
    return cheap_incumbent(problem, "latency")


# -- greedy ---------------------------------------------------------------------------------------


def fill_in_order(problem: PlacementProblem, items, weight, devices, memory, memory_limit):
    """Fill devices, fastest first, with ``items`` in the given order, each up to its share.

    Item ``k`` (``items[k]`` is only a label) weighs ``weight[k]``, may use ``devices[k]`` and needs
    ``memory[k]``. Device ``d`` gets the share ``speed[d] / sum(speed)`` of the total weight
    (:func:`device_speeds`); an item goes to the device whose share interval holds its midpoint,
    or, if that device may not run it or has no room, to the first later (then earlier) device in
    the ranking that may and has room; a device too full for an item it may run is done. Items
    that may use one device only (pins) have their memory set aside on it from the start: filled
    in order, a device would otherwise run out before a pinned item late in the order reaches it.

    Returns ``(device per item, None, overflowed)`` or ``(None, (k, used memory), overflowed)``
    when item ``k`` finds no device with room.
    """
    num_devices = problem.num_devices
    speed = device_speeds(problem)
    ranking = sorted(range(num_devices), key=lambda d: (-speed[d], d))
    share_end = (np.cumsum([speed[d] for d in ranking]) / speed.sum() * sum(weight)).tolist()
    share_end[-1] = math.inf
    placed = [-1] * len(items)
    used = [0.0] * num_devices
    reserved = [len(devices[k]) == 1 for k in range(len(items))]
    for k in np.flatnonzero(reserved).tolist():
        used[devices[k][0]] += memory[k]
    for k in np.flatnonzero(reserved).tolist():
        if used[devices[k][0]] > memory_limit[devices[k][0]]:
            return None, (k, used), 0  # the pinned items alone overfill their device
    current, done, overflowed = 0, 0.0, 0
    for k in range(len(items)):
        while current < num_devices - 1 and done + weight[k] / 2 > share_end[current]:
            current += 1
        done += weight[k]
        # The current device, else later ones in the ranking, else earlier ones.
        for rank in [*range(current, num_devices), *range(current)]:
            d = ranking[rank]
            if d not in devices[k]:
                continue
            if reserved[k] or used[d] + memory[k] <= memory_limit[d]:
                break
            if rank == current and current < num_devices - 1:
                current += 1  # it may run there but the device is full: it is done
        else:
            return None, (k, used), overflowed
        overflowed += d != ranking[current]
        placed[k] = d
        used[d] += 0.0 if reserved[k] else memory[k]
    return placed, None, overflowed


def greedy(problem: PlacementProblem, objective: str, time_limit: float,
           progress=None) -> Placement:
    """Fill devices, fastest first, in topological order up to each one's share of the work."""
    context = Context.open(problem, objective, "greedy", ("throughput", "latency"), time_limit,
                           progress)
    units = context.units
    position = np.empty(problem.num_ops, dtype=np.int64)
    position[problem.graph.topological_order] = np.arange(problem.num_ops)
    # Per unit in NumPy (its first position, its work): a Python step per unit was most of
    # greedy's time on 200,000 operators.
    unit_of = np.asarray(units.unit_of, dtype=np.int64)
    first = np.full(len(units.members), problem.num_ops, dtype=np.int64)
    np.minimum.at(first, unit_of, position)
    walk = np.argsort(first, kind="stable").tolist()
    work = np.bincount(unit_of, weights=bounds.fastest_times(problem), minlength=len(first))
    placed, stuck, overflowed = fill_in_order(
        problem, walk,
        work[walk].tolist(),
        [units.devices[g] for g in walk],
        [units.memory[g] for g in walk],
        context.memory_limit,
    )
    if placed is None:
        k, used = stuck
        return context.placement(context.pack(units.members[walk[k]][0], used), stats={
            "memory_packing_fallback": True
        })
    device_of_unit = np.empty(len(walk), dtype=np.int64)
    device_of_unit[walk] = placed
    device_of = device_of_unit[unit_of]
    return context.placement(device_of, stats={
        "memory_packing_fallback": False,
        "overflowed_units": overflowed,
    })


# -- etf ------------------------------------------------------------------------------------------


def static_levels(problem: PlacementProblem, units: _Units) -> list[float]:
    """Longest path to an exit, each operator at its mean time over the devices it may use."""
    level = [0.0] * problem.num_ops
    for u in reversed(problem.graph.topological_order.tolist()):
        devices = units.devices[units.unit_of[u]]
        mean = sum(problem.compute_time[u, d] for d in devices) / len(devices)
        level[u] = mean + max((level[v] for v in problem.graph.successors[u]), default=0.0)
    return level


def _etf_schedule(problem: PlacementProblem, units: _Units, memory_limit, level,
                  fixed: np.ndarray | None = None, deadline: float = math.inf):
    """ETF over the evaluator's rules. Returns ``(device_of, order, None, used)``, or
    ``(None, None, stranded operator, used)`` when an operator finds every device full, or
    ``(None, None, None, used)`` when ``deadline`` (``time.perf_counter()``) passed first.
    Units that may use one device only (pins) have their memory set aside there from the start.
    Time O(n D log n + m D).

    Per device two heaps hold the ready operators that may run there: ``waiting``, by the time
    their inputs arrive there, and ``available``, by decreasing static level, for those whose
    inputs are there by the time the device is free (they all start when it is free). The
    device's best pair is the top of ``available``, else of ``waiting``; each step schedules the
    best pair of all devices, by (start, -level, index, finish, device). Operators that can no
    longer use a device (its memory filled up, or their colour class went elsewhere) leave its
    heaps lazily. ``fixed`` (a device per operator) turns ETF into ordering only.
    """
    n, num_devices = problem.num_ops, problem.num_devices
    compute = problem.compute_time.tolist()
    transfer = problem.transfer_time.tolist()
    preds, succs = problem.graph.predecessors, problem.graph.successors
    unit_of, unit_memory = units.unit_of, units.memory
    waiting_inputs = [len(p) for p in preds]
    finish = [0.0] * n
    device_of = [-1] * n
    free = [0.0] * num_devices
    if fixed is not None:
        used = [0.0] * num_devices
        unit_device = [int(fixed[members[0]]) for members in units.members]
    else:
        unit_device, used, stuck = _set_aside(problem, units, memory_limit)
        if stuck is not None:
            return None, None, stuck, used
    waiting: list[list] = [[] for _ in range(num_devices)]
    available: list[list] = [[] for _ in range(num_devices)]

    def usable(u: int, d: int) -> bool:
        g = unit_of[u]
        if unit_device[g] >= 0:
            return unit_device[g] == d
        return used[d] + unit_memory[g] <= memory_limit[d]

    def make_ready(u: int) -> None:
        g = unit_of[u]
        devices = [unit_device[g]] if unit_device[g] >= 0 else units.devices[g]
        for d in devices:
            if not usable(u, d):
                continue
            arrival = 0.0
            for p in preds[u]:
                e = device_of[p]
                time_in = finish[p] if e == d else finish[p] + transfer[p][e] + transfer[p][d]
                if time_in > arrival:
                    arrival = time_in
            heapq.heappush(waiting[d], (arrival, -level[u], u))

    def best_on(d: int):
        """``(start, -level, operator)`` of device ``d``'s best ready operator, or ``None``."""
        pending, ready = waiting[d], available[d]
        while pending and pending[0][0] <= free[d]:
            _, key, u = heapq.heappop(pending)
            heapq.heappush(ready, (key, u))
        while ready and (device_of[ready[0][1]] >= 0 or not usable(ready[0][1], d)):
            heapq.heappop(ready)
        if ready:
            return free[d], ready[0][0], ready[0][1]
        while pending and (device_of[pending[0][2]] >= 0 or not usable(pending[0][2], d)):
            heapq.heappop(pending)
        return pending[0] if pending else None

    for u in range(n):
        if waiting_inputs[u] == 0:
            make_ready(u)
    order = []
    while True:
        if len(order) % 1024 == 0 and time.perf_counter() > deadline:
            return None, None, None, used
        choice = None
        for d in range(num_devices):
            option = best_on(d)
            if option is not None:
                start, key, u = option
                candidate = (start, key, u, start + compute[u][d], d)
                if choice is None or candidate < choice:
                    choice = candidate
        if choice is None:
            break
        _, _, u, done, d = choice
        g = unit_of[u]
        if unit_device[g] < 0:
            unit_device[g] = d
            used[d] += unit_memory[g]
        device_of[u], finish[u], free[d] = d, done, done
        order.append(u)
        for v in succs[u]:
            waiting_inputs[v] -= 1
            if waiting_inputs[v] == 0:
                make_ready(v)
    if len(order) < n:  # some operator found no device with room; its consumers never got ready
        stranded = next(u for u in range(n) if device_of[u] < 0 and waiting_inputs[u] == 0)
        return None, None, stranded, used
    return np.array(device_of, dtype=np.int64), np.array(order, dtype=np.int64), None, used


def etf(problem: PlacementProblem, objective: str, time_limit: float,
        progress=None) -> Placement:
    """Earliest Time First list scheduling (Hwang et al. 1989) for the latency objective."""
    context = Context.open(problem, objective, "etf", ("latency",), time_limit, progress)
    level = static_levels(problem, context.units)
    device_of, order, stuck_at, used = _etf_schedule(
        problem, context.units, context.memory_limit, level, deadline=context.deadline)
    packed = device_of is None and stuck_at is not None
    if packed:
        fixed = context.pack(stuck_at, used)
        device_of, order, _, _ = _etf_schedule(
            problem, context.units, context.memory_limit, level, fixed, context.deadline)
    if device_of is None:  # out of time before the schedule was complete: greedy's answer
        cheap = greedy(problem, objective, 0.0)
        return context.placement(cheap.device_of, cheap.order, stats={
            "memory_packing_fallback": packed, "stopped_by": "time_limit", "fallback": "greedy"})
    return context.placement(device_of, order, stats={"memory_packing_fallback": packed})


# -- pipedream ------------------------------------------------------------------------------------


def device_types(problem: PlacementProblem, devices: list[int]) -> list[list[int]]:
    """``devices`` grouped by :meth:`~tvm_place.graph.PlacementProblem.identical_devices`, each
    group and the groups in the order of ``devices``."""
    class_of = {d: i for i, members in enumerate(problem.identical_devices()) for d in members}
    groups: dict[int, list[int]] = {}
    for d in devices:
        groups.setdefault(class_of[d], []).append(d)
    return list(groups.values())


def pipeline_order(problem: PlacementProblem) -> tuple[np.ndarray, np.ndarray]:
    """The linear order ``pipedream`` slices, and the cuts it may not make.

    The graph over :func:`tvm_place.evaluate.contiguity_edges` (all edges; for a training graph
    those of its forward part, so that a stage runs the forward and backward passes of its layers
    as in PipeDream) with each colour class contracted, and then each strongly connected set of
    classes, is ordered depth-first (reverse post-order, roots and successors by their first
    operator's topological position), which keeps branches together; each group's operators follow
    one another in topological order. Returns ``(order, forbidden)``: ``forbidden[k]`` is true when
    a cut before position ``k`` would split a group (a colour class, or a cycle through classes,
    which no pipeline can split).
    """
    n = problem.num_ops
    groups = contract(problem, merge_costless=False)  # colour classes and cycles through them
    topological_position = np.empty(n, dtype=np.int64)
    topological_position[problem.graph.topological_order] = np.arange(n)
    members: dict[int, list[int]] = {}
    for u in problem.graph.topological_order.tolist():
        members.setdefault(int(groups.group_of[u]), []).append(u)
    first = {c: topological_position[ops[0]] for c, ops in members.items()}
    by_first = sorted(members, key=first.__getitem__)
    successors = {c: sorted(groups.successors[c], key=first.__getitem__) for c in by_first}
    finished, seen = [], set()
    for start in by_first:  # iterative depth-first search, post-order
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(successors[start]))]
        while stack:
            c, children = stack[-1]
            child = next((d for d in children if d not in seen), None)
            if child is None:
                finished.append(c)
                stack.pop()
            else:
                seen.add(child)
                stack.append((child, iter(successors[child])))
    order, forbidden = [], np.zeros(n + 1, dtype=bool)
    for c in reversed(finished):
        forbidden[len(order) + 1:len(order) + len(members[c])] = True
        order.extend(members[c])
    return np.array(order, dtype=np.int64), forbidden


def _stage_loads(problem: PlacementProblem, order: np.ndarray, columns: list[int],
                 memory_limit: np.ndarray):
    """Yield ``(j, loads)`` for ``j = 1..n``: ``loads[t, i]`` the evaluator's load of the stage
    ``order[i:j]`` on a device of column ``columns[t]`` (``inf`` where it may not run or fit).

    With positions in ``order``, a stage ``[i, j)`` receives value ``q`` iff ``q`` lies outside
    it and some consumer inside: (a) ``q < i`` and ``i <= latest(q) `` where ``latest(q)`` is the
    latest consumer before ``j``, or (b) ``q >= j`` and ``i <= latest(q)``; it sends value ``p``
    in it iff some consumer lies outside: the last one at ``j`` or later, or the first before
    ``i``. (b) and the second way of sending only occur when ``order`` is not topological.
    """
    n, num_types = problem.num_ops, len(columns)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    allowed = problem.allowed()[order][:, columns]
    compute = np.where(allowed, problem.compute_time[order][:, columns], 0.0)
    prefix_compute = np.vstack([np.zeros(num_types), np.cumsum(compute, axis=0)])
    prefix_banned = np.vstack([np.zeros(num_types), np.cumsum(~allowed, axis=0)])
    prefix_memory = np.concatenate([[0.0], np.cumsum(problem.memory[order])])
    transfer = problem.transfer_time[order][:, columns]  # by position
    edges = problem.graph.edges
    producer, consumer = (position[edges[:, 0]], position[edges[:, 1]]) if len(edges) else \
        (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    last_use = np.full(n, -1, dtype=np.int64)  # by position: the last consumer's position
    np.maximum.at(last_use, producer, consumer)
    first_use = np.full(n, n, dtype=np.int64)  # by position: the first consumer's position
    np.minimum.at(first_use, producer, consumer)
    backward_flow = bool((consumer < producer).any())
    # Values whose consumers all lie before ``j``, with one before the value itself: sent by the
    # stages [i, j) holding them with i > first use, registered once j passes them all.
    sent_late: dict[int, list[int]] = {}
    for p in np.flatnonzero(first_use < np.arange(n)).tolist():
        sent_late.setdefault(max(p, int(last_use[p])) + 1, []).append(p)
    # received (a) and sent (late) for the current j, as difference arrays in i.
    received_diff = np.zeros((num_types, n + 1))
    sent_diff = np.zeros((num_types, n + 1))
    latest_use = np.full(n, -1, dtype=np.int64)  # by position: latest consumer before j
    for j in range(1, n + 1):
        v = int(order[j - 1])
        for u in problem.graph.predecessors[v]:
            q = position[u]
            if q < j - 1:
                start_at = q + 1 if latest_use[q] <= q else latest_use[q] + 1
                received_diff[:, start_at] += transfer[q]
                received_diff[:, j] -= transfer[q]
            latest_use[q] = j - 1
        for p in sent_late.get(j, ()):
            sent_diff[:, first_use[p] + 1] += transfer[p]
            sent_diff[:, p + 1] -= transfer[p]
        received = np.cumsum(received_diff[:, :j], axis=1)
        outgoing = transfer[:j].T * (last_use[:j] >= j)
        sent = np.cumsum(outgoing[:, ::-1], axis=1)[:, ::-1]
        if backward_flow:
            sent += np.cumsum(sent_diff[:, :j], axis=1)
            later = np.flatnonzero(latest_use[j:] >= 0) + j  # (b): after the stage, used in it
            if later.size:
                by_latest = np.zeros((j, num_types))
                np.add.at(by_latest, latest_use[later], transfer[later])
                received += np.cumsum(by_latest[::-1], axis=0)[::-1].T
        loads = (prefix_compute[j][:, None] - prefix_compute[:j].T) + received + sent
        banned = (prefix_banned[j][:, None] - prefix_banned[:j].T) > 0
        too_big = (prefix_memory[j] - prefix_memory[:j])[None, :] > memory_limit[:, None]
        loads[banned | too_big] = np.inf
        yield j, loads


#: Where pipedream's program does not fit its time on all devices, the slicing of runs
#: (:func:`tvm_place.solvers.slicegraph.sliced_runs`) gets this share of the time left.
RUNS_SHARE = 0.7


def pipedream(problem: PlacementProblem, objective: str, time_limit: float,
              progress=None) -> Placement:
    """The best slicing of :func:`pipeline_order` into pipeline stages on distinct devices."""
    context = Context.open(problem, objective, "pipedream", ("throughput",), time_limit, progress)
    n = problem.num_ops
    speed = device_speeds(problem)
    devices = sorted(range(problem.num_devices), key=lambda d: (-speed[d], d))
    time_limit = context.deadline - context.started
    while True:  # drop the slowest devices until the program fits in memory and time
        types = device_types(problem, devices)
        counts = np.array([len(ds) for ds in types], dtype=np.int64)
        num_states = int(np.prod(counts + 1))
        work = len(types) * num_states * (n + 1) ** 2 / 2
        fits = num_states * (n + 1) <= PIPEDREAM_MAX_STATES and work <= PIPEDREAM_RATE * time_limit
        if len(devices) == problem.num_devices and not fits and n > 1:
            # Too many operators for the O(n^2) program on every device (thousands): slice runs
            # of consecutive operators of a topological order instead, on all the devices.
            from .slicegraph import sliced_runs

            left = context.deadline - time.perf_counter()
            device_of = sliced_runs(problem, RUNS_SHARE * left)
            if device_of is not None:
                return context.placement(device_of, stats={
                    "search_space": "contiguous slicings of runs of one linear order",
                    "stopped_by": "too many operators: runs of consecutive ones sliced",
                })
        if len(devices) == 1 or fits:
            break
        devices = devices[:-1]
    order, forbidden = pipeline_order(problem)
    # Usage vector v <-> state index in mixed radix (counts + 1).
    radix = np.concatenate([[1], np.cumprod(counts + 1)[:-1]]).astype(np.int64)
    usage = (np.arange(num_states)[:, None] // radix[None, :]) % (counts + 1)[None, :]
    columns = [ds[0] for ds in types]
    memory_limit = np.array([context.memory_limit[d] for d in columns])

    best = np.full((num_states, n + 1), np.inf)
    best[0, 0] = 0.0
    cut_from = np.full((num_states, n + 1), -1, dtype=np.int64)
    type_of = np.full((num_states, n + 1), -1, dtype=np.int64)
    stopped_by = "complete"
    for j, loads in _stage_loads(problem, order, columns, memory_limit):
        if time.perf_counter() > context.deadline:
            stopped_by = "time_limit"
            break
        if j % 64 == 0:
            context.report(f"{j} of {n} prefixes", j / n)
        if forbidden[j]:
            continue
        loads[:, forbidden[:j]] = np.inf
        for t in range(len(types)):
            states = np.flatnonzero(usage[:, t] > 0)
            previous = states - radix[t]
            candidate = np.maximum(best[previous, :j], loads[t][None, :])
            cut = candidate.argmin(axis=1)
            value = candidate[np.arange(len(states)), cut]
            better = value < best[states, j]
            best[states[better], j] = value[better]
            cut_from[states[better], j] = cut[better]
            type_of[states[better], j] = t
    final = int(best[:, n].argmin()) if stopped_by == "complete" else -1
    if final < 0 or not math.isfinite(best[final, n]):
        if stopped_by == "time_limit":
            # Out of time: the best single stage (the whole order on one device), if any fits.
            return _single_stage_fallback(context, columns)
        raise InfeasibleError(
            f"no slicing of the pipeline order into at most {len(devices)} contiguous stages "
            f"on distinct devices of {problem.device_names} fits the memory capacities, support, "
            "pins and colour classes; use a method that places operators non-contiguously "
            "(e.g. 'greedy', 'comm-balanced')"
        )
    device_of = np.zeros(n, dtype=np.int64)
    free_devices = [list(ds) for ds in types]
    state, j, stages = final, n, 0
    while j > 0:
        i, t = int(cut_from[state, j]), int(type_of[state, j])
        device_of[order[i:j]] = free_devices[t].pop(0)
        state, j, stages = state - radix[t], i, stages + 1
    return context.placement(device_of, stats={
        "search_space": "contiguous slicings of one linear order",
        "stages": stages,
        "device_types": len(types),
        "devices_considered": len(devices),
        "stopped_by": stopped_by,
    })


def _single_stage_fallback(context: Context, columns: list[int]) -> Placement:
    problem = context.problem
    options = [
        (float(problem.compute_time[:, d].sum()), d)
        for d in columns if single_device_blocker(problem, d) is None
    ]
    if not options:
        raise InfeasibleError(
            f"pipedream ran out of time (limit {context.deadline - context.started:.3g} s) "
            "before finding a slicing, and no single device holds the whole model; raise the "
            "time limit"
        )
    return context.placement(np.full(problem.num_ops, min(options)[1]), stats={
        "search_space": "contiguous slicings of one linear order",
        "stages": 1,
        "stopped_by": "time_limit",
    })
