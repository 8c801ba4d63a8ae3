"""HEFT list scheduling for the latency objective, then a local search over device choices.

Reference: H. Topcuoglu, S. Hariri, M.-Y. Wu, "Performance-Effective and Low-Complexity Task
Scheduling for Heterogeneous Computing", IEEE Trans. Parallel and Distributed Systems 13(3),
2002 (the HEFT algorithm).

Adaptation to the latency model of :func:`tvm_place.evaluate.evaluate`:

- *Upward rank*: ``rank(u) = mean compute of u + max over successors v of (mean delay of u -> v +
  rank(v))``. The mean compute is over the devices ``u`` may run on (support, pins, and the
  devices its whole colour class may share). The mean delay of an edge is HEFT's average
  communication cost, here ``transfer_time[u, d] + transfer_time[u, e]`` averaged over every pair
  of distinct devices ``d`` allowed to ``u`` and ``e`` allowed to ``v``; it is zero when no such
  pair exists or both ends are in one colour class (they always share a device).
- *Order*: operators are taken by decreasing rank among those whose inputs are all scheduled (ties:
  smaller index), so the order is topological even where zero costs make ranks equal. The
  evaluator runs each device's operators in this global order.
- *Device choice*: each operator goes to the allowed device where it finishes earliest under the
  evaluator's rules: non-insertion (a device is free when its last operator finishes), and a value
  crossing devices arrives the two transfer times after it was produced. A device that would
  overflow its memory capacity is skipped; the first member of a colour class picks a device on
  which the whole class is allowed and fits, and reserves that memory for the class.
- *Memory fallback*: if the greedy pass strands an operator (every allowed device full) a
  depth-first packing search looks for any assignment that fits; only if that fails is the problem
  reported infeasible.
- *Local search*: re-timed with the evaluator's recurrence, each pass visits the units (an
  operator, or a whole colour class) in order and keeps, per unit, the move that lowers the
  latency most: to another allowed device with room, or onto a full one while evicting one of the
  :data:`EVICTION_PARTNERS` units there nearest in the order to a device with room for it. Then
  each operator that waited for its device tries running before the operator it waited for.
  Only moves that touch the critical chain (the operators whose finishes, one after another,
  pin the latency) can shorten it, so only those are tried; a trial re-times only the suffix of
  the order from the first moved operator and stops as soon as an operator finishes no earlier
  than the best latency known. Passes repeat until none improves, :data:`MAX_PASSES` is reached,
  or the time limit is up.

Complexity, ``n`` operators, ``m`` edges, ``D`` devices: ranks ``O(m D)``, order
``O((n + m) log n)``, greedy placement ``O((n + m) D)``, one local-search pass
``O(c D^2 (n + m))`` at worst with ``c`` operators on the critical chain; the packing fallback is
capped at :data:`PACKING_STEPS` steps. Only the local search watches the clock: the greedy
phase is fast, and a placement that fits memory is found (or ruled out) whatever the time limit.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, evaluate, ready_time
from ..graph import Placement, PlacementProblem
from . import bounds
from .common import reporter, require_objective
from .grouping import check_placeable, contract

#: Local-search passes at most; they rarely run out before the search converges.
MAX_PASSES = 10

#: Units on a full device that a local-search move onto it may evict (nearest in the order first).
EVICTION_PARTNERS = 4

#: Nodes the memory-packing fallback may expand before it gives up.
PACKING_STEPS = 200_000

#: A move must lower the latency by this relative amount to count, so float noise cannot cycle.
RELATIVE_IMPROVEMENT = 1e-12


def solve(problem: PlacementProblem, objective: str, time_limit: float, progress=None) -> Placement:
    """Place ``problem`` for minimum latency: HEFT, then local search for up to ``time_limit`` s."""
    require_objective("heft", objective, ("latency",), "use objective='latency' or method='auto'")
    started = time.perf_counter()
    deadline = started + max(0.0, time_limit)
    report = reporter(progress)

    units = _Units.of(problem)  # raises for a unit that no device may run or hold
    memory_limit = (problem.capacity * (1 + MEMORY_TOLERANCE)).tolist()

    ranks = _upward_ranks(problem, units)
    order = _rank_order(problem, ranks)
    report(f"heft: ranked {problem.num_ops} operators", 0.0)

    device_of, stuck_at, used = _greedy_placement(problem, order, units, memory_limit)
    packed = device_of is None
    if packed:
        report(f"heft: greedy placement ran out of memory at {problem.graph.names[stuck_at]}; "
               "searching for a placement that fits", None)
        device_of, exhaustive = _pack_memory(problem, units, memory_limit)
        if device_of is None:
            if exhaustive:
                finding = (f", and no assignment of all the operators ({problem.memory.sum():.4g} "
                           "bytes in all) fits the capacities")
            else:
                finding = f", and a packing search of {PACKING_STEPS} steps found none that fits"
            raise InfeasibleError(_no_room_message(
                problem, units, units.unit_of[stuck_at], used, "in the greedy placement", finding
            ))
        used = np.bincount(
            device_of, weights=problem.memory, minlength=problem.num_devices
        ).tolist()

    schedule = _OrderedSchedule(problem, order)
    schedule.retime(device_of)
    initial_latency = schedule.latency
    report(f"heft: latency before local search {initial_latency:.6g}", 0.1)

    search = {"local_search_passes": 0, "moves_tried": 0, "moves_kept": 0}
    # The answer is evaluated once more after the search (about one re-timing): leave room.
    search["stopped_by"] = _local_search(
        schedule, device_of, used, units, memory_limit, deadline - schedule.longest_trial, report,
        search
    )
    order = np.array(schedule.order, dtype=np.int64)
    latency = evaluate(problem, np.array(device_of), order).latency
    report(f"heft: latency {latency:.6g}", 1.0)
    return Placement(
        device_of=np.array(device_of),
        objective="latency",
        value=latency,
        lower_bound=bounds.lower_bound(problem, "latency"),
        method="heft",
        order=order,
        stats={
            "initial_latency": initial_latency,
            "memory_packing_fallback": packed,
            "seconds": time.perf_counter() - started,
            **search,
        },
    )


@dataclass
class _Units:
    """What moves as one: each colour class (overlapping ones merged), and each other operator.

    ``devices[g]`` are the devices on which every member of unit ``g`` may run; ``memory[g]`` is
    the bytes the unit holds; ``unit_of[u]`` is operator ``u``'s unit.
    """

    members: list[list[int]]
    unit_of: list[int]
    devices: list[list[int]]
    memory: list[float]

    @classmethod
    def of(cls, problem: PlacementProblem) -> "_Units":
        """Time O(n D + m) in NumPy (a Python step per unit only to make its lists): 200,000
        operators take a fraction of a second."""
        groups = contract(problem, merge_costless=False, contiguous=False)
        check_placeable(problem, groups)  # raises for a unit no device may run or hold
        shared = groups.fits(problem)
        # Singletons (no colour class) as plain lists at once: 200,000 array views are slower.
        members = ([[u] for u in range(problem.num_ops)] if groups.num_groups == problem.num_ops
                   else [group.tolist() for group in groups.members])
        unit_of = groups.group_of
        # Units share few distinct device sets: build each list once (a set as a bit mask where
        # the devices fit in one, since np.unique over rows is slow).
        if problem.num_devices <= 62:
            keys = shared.astype(np.int64) @ (np.int64(1) << np.arange(problem.num_devices))
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            codes = shared[first]
        else:
            codes, inverse = np.unique(shared, axis=0, return_inverse=True)
        lists = [np.flatnonzero(code).tolist() for code in codes]
        devices = [lists[i] for i in inverse.reshape(-1).tolist()]
        return cls(members, unit_of.tolist(), devices, groups.memory.tolist())


def _no_room_message(problem, units: _Units, g: int, used, situation: str, finding="") -> str:
    """Why unit ``g`` finds no room (``situation``: when; ``finding``: what else is known)."""
    names = problem.graph.names
    members = units.members[g]
    what = (f"operator {names[members[0]]!r}" if len(members) == 1 else
            f"colour class {[names[u] for u in members][:6]}")
    free = ", ".join(
        f"{problem.devices[d].name} ({max(0.0, problem.capacity[d] - used[d]):.4g} of "
        f"{problem.capacity[d]:.4g} bytes free)"
        for d in units.devices[g]
    )
    return (
        f"{what} needs {units.memory[g]:.4g} bytes of memory, more than any device it may run on "
        f"has free {situation}: {free}{finding}. Raise those devices' memory_capacity, add a "
        "device, or relax the pins and colour classes that confine it"
    )


def _upward_ranks(problem: PlacementProblem, units: _Units) -> np.ndarray:
    allowed = np.zeros((problem.num_ops, problem.num_devices), dtype=bool)
    for g, members in enumerate(units.members):
        allowed[np.ix_(members, units.devices[g])] = True
    mean_compute = np.where(allowed, problem.compute_time, 0.0).sum(axis=1) / allowed.sum(axis=1)
    edges = problem.graph.edges
    mean_delay = np.zeros(len(edges))
    if len(edges):
        src, dst = edges[:, 0], edges[:, 1]
        src_allowed, dst_allowed = allowed[src].astype(float), allowed[dst].astype(float)
        sent = problem.transfer_time[src]
        src_count, dst_count = src_allowed.sum(axis=1), dst_allowed.sum(axis=1)
        # Sum over ordered pairs (d allowed to src, e allowed to dst, d != e) of sent[d] + sent[e]:
        # each d is a sender in dst_count pairs, less the one where e == d; likewise receivers.
        total = (src_allowed * sent * (dst_count[:, None] - dst_allowed)).sum(axis=1) + (
            dst_allowed * sent * (src_count[:, None] - src_allowed)
        ).sum(axis=1)
        pairs = src_count * dst_count - (src_allowed * dst_allowed).sum(axis=1)
        unit_of = np.array(units.unit_of)
        crossing = (pairs > 0) & (unit_of[src] != unit_of[dst])
        mean_delay[crossing] = total[crossing] / pairs[crossing]
    delay_to: list[list[tuple[int, float]]] = [[] for _ in range(problem.num_ops)]
    for (u, v), delay in zip(edges.tolist(), mean_delay.tolist()):
        delay_to[u].append((v, delay))
    rank = [0.0] * problem.num_ops
    mean_compute = mean_compute.tolist()
    for u in reversed(problem.graph.topological_order.tolist()):
        rank[u] = mean_compute[u] + max((delay + rank[v] for v, delay in delay_to[u]), default=0.0)
    return np.array(rank)


def _rank_order(problem: PlacementProblem, ranks: np.ndarray) -> np.ndarray:
    """Decreasing rank among operators whose inputs are scheduled: a topological order."""
    rank = ranks.tolist()
    waiting = [len(p) for p in problem.graph.predecessors]
    ready = [(-rank[u], u) for u in range(problem.num_ops) if waiting[u] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(u)
        for v in problem.graph.successors[u]:
            waiting[v] -= 1
            if waiting[v] == 0:
                heapq.heappush(ready, (-rank[v], v))
    return np.array(order, dtype=np.int64)


def _set_aside(problem: PlacementProblem, units: _Units, memory_limit):
    """``(unit_device, used, stuck)``: the units that may use one device only (pins, support,
    memory) placed there, their memory set aside from the start so that the others do not fill it
    first; ``stuck`` is an operator of such a unit that overflows its device (else ``None``)."""
    unit_device = [-1] * len(units.members)
    used = [0.0] * problem.num_devices
    for g, devices in enumerate(units.devices):
        if len(devices) == 1:
            unit_device[g] = devices[0]
            used[devices[0]] += units.memory[g]
    for g, d in enumerate(unit_device):
        if d >= 0 and used[d] > memory_limit[d]:
            return unit_device, used, units.members[g][0]
    return unit_device, used, None


def _greedy_placement(problem, order, units: _Units, memory_limit):
    """HEFT's earliest-finish-time choice along ``order``.

    Returns ``(device_of, None, used)``, or ``(None, stuck operator, used)`` when every device an
    operator may use is too full for its unit. Units that may use one device only (pins) have
    their memory set aside there from the start, so that the others do not fill it first.
    """
    compute = problem.compute_time.tolist()
    transfer = problem.transfer_time.tolist()
    preds = problem.graph.predecessors
    device_of = [-1] * problem.num_ops
    unit_device, used, stuck = _set_aside(problem, units, memory_limit)
    if stuck is not None:
        return None, stuck, used
    finish = [0.0] * problem.num_ops
    free = [0.0] * problem.num_devices
    for u in order.tolist():
        g = units.unit_of[u]
        if unit_device[g] >= 0:
            candidates = [unit_device[g]]
        else:
            candidates = [
                d for d in units.devices[g] if used[d] + units.memory[g] <= memory_limit[d]
            ]
            if not candidates:
                return None, u, used
        best_finish, best_device = math.inf, candidates[0]
        for d in candidates:
            ready = ready_time(u, d, free, finish, device_of, preds, transfer)[0]
            if ready + compute[u][d] < best_finish:
                best_finish, best_device = ready + compute[u][d], d
        if unit_device[g] < 0:
            unit_device[g] = best_device
            used[best_device] += units.memory[g]
        device_of[u] = best_device
        finish[u] = free[best_device] = best_finish
    return device_of, None, used


def _pack_memory(problem, units: _Units, memory_limit):
    """Depth-first search for any assignment of the units that fits every memory capacity.

    Units allowed on fewest devices first (pinned ones: leaving them to the end strands them on a
    device the others filled, and a depth-first search rarely backtracks that far), then largest
    first, each trying its devices from the fastest for it. Returns
    ``(device_of, True)`` on success, ``(None, exhaustive)`` on failure, ``exhaustive`` saying
    whether the whole space was searched (rather than cut at :data:`PACKING_STEPS`).
    """
    by_size = sorted(range(len(units.members)),
                     key=lambda g: (len(units.devices[g]), -units.memory[g], g))
    # Each unit's devices from the fastest for it; the sums per unit in NumPy (a NumPy sum per
    # unit and device took seconds on 200,000 operators).
    unit_of = np.asarray(units.unit_of, dtype=np.int64)
    unit_compute = np.stack([
        np.bincount(unit_of, problem.compute_time[:, d], len(units.members))
        for d in range(problem.num_devices)
    ], axis=1)
    fastest_first = np.argsort(unit_compute, axis=1, kind="stable").tolist()
    preference = []
    for g in by_size:
        allowed = set(units.devices[g])
        preference.append([d for d in fastest_first[g] if d in allowed])
    size = [units.memory[g] for g in by_size]
    # Memory still to place after each depth, to prune branches whose leftovers cannot fit.
    remaining_after = np.cumsum(size[::-1])[::-1].tolist()[1:] + [0.0]
    free = list(memory_limit)
    choice = [-1] * len(by_size)
    depth, steps = 0, 0
    while 0 <= depth < len(by_size):
        if choice[depth] >= 0:
            free[preference[depth][choice[depth]]] += size[depth]
        choice[depth] += 1
        while (choice[depth] < len(preference[depth])
               and free[preference[depth][choice[depth]]] < size[depth]):
            choice[depth] += 1
        if choice[depth] == len(preference[depth]):
            choice[depth] = -1
            depth -= 1
            continue
        steps += 1
        if steps > PACKING_STEPS:
            return None, False
        free[preference[depth][choice[depth]]] -= size[depth]
        if sum(free) >= remaining_after[depth]:
            depth += 1
    if depth < 0:
        return None, True
    device_of = [0] * problem.num_ops
    for depth, g in enumerate(by_size):
        for u in units.members[g]:
            device_of[u] = preference[depth][choice[depth]]
    return device_of, True


class _OrderedSchedule:
    """The evaluator's latency recurrence over a fixed order, keeping per-position state.

    The state before each position (device free times, latency so far) lets a trial move re-time
    only the suffix of the order that starts at the earliest moved operator. The arithmetic is the
    evaluator's, term for term, so the latency found here is the one it measures.

    ``critical`` marks one critical chain: from the last operator to finish, back through
    ``cause`` (the operator whose finish or value last held each one up: its device predecessor or
    an input). Every start on the chain is pinned by the one before it, so a move that touches no
    chain operator cannot shorten the latency; the local search tries only moves that touch it.
    """

    def __init__(self, problem: PlacementProblem, order: np.ndarray):
        self.reorder(order.tolist())
        self.preds = problem.graph.predecessors
        self.compute = problem.compute_time.tolist()
        self.transfer = problem.transfer_time.tolist()
        self.num_devices = problem.num_devices
        self.finish: list[float] = []
        self.free_before: list[list[float]] = []
        self.latency_before: list[float] = []
        self.cause: list[int] = []
        self.critical: list[bool] = []
        self.latency = 0.0
        #: Seconds of the longest trial or re-timing so far: the local search looks ahead by it.
        self.longest_trial = 0.0

    def reorder(self, order: list[int]) -> None:
        """Adopt a new order (call :meth:`retime` before the next trial)."""
        self.order = order
        self.position = [0] * len(order)
        for i, u in enumerate(order):
            self.position[u] = i

    def retime(self, device_of: list[int]) -> None:
        """Time every operator under ``device_of``; remember the state before each position."""
        started = time.perf_counter()
        self._retime(device_of)
        self.longest_trial = max(self.longest_trial, time.perf_counter() - started)

    def _retime(self, device_of: list[int]) -> None:
        preds, compute, transfer = self.preds, self.compute, self.transfer
        n = len(self.order)
        finish = [0.0] * n
        cause = [-1] * n
        free = [0.0] * self.num_devices
        last_on = [-1] * self.num_devices
        latency, last = 0.0, self.order[0]
        free_before, latency_before = [], []
        for u in self.order:
            free_before.append(list(free))
            latency_before.append(latency)
            d = device_of[u]
            ready, waited_for = ready_time(u, d, free, finish, device_of, preds, transfer)
            held_by = last_on[d] if waited_for < 0 else waited_for
            finish[u] = free[d] = ready + compute[u][d]
            cause[u], last_on[d] = held_by, u
            if finish[u] > latency:
                latency, last = finish[u], u
        critical = [False] * n
        while last >= 0:
            critical[last] = True
            last = cause[last]
        self.finish, self.free_before, self.latency_before = finish, free_before, latency_before
        self.cause, self.critical, self.latency = cause, critical, latency

    def trial(self, device_of: list[int], first: int, give_up_at: float, suffix=None) -> float:
        """Latency under ``device_of`` with the order's tail from position ``first`` on replaced by
        ``suffix`` (default: kept); nothing before ``first`` may differ from the timed schedule.

        Returns ``inf`` as soon as some operator finishes at or after ``give_up_at``.
        """
        started = time.perf_counter()
        try:
            return self._trial(device_of, first, give_up_at, suffix)
        finally:
            self.longest_trial = max(self.longest_trial, time.perf_counter() - started)

    def _trial(self, device_of: list[int], first: int, give_up_at: float, suffix) -> float:
        preds, compute, transfer = self.preds, self.compute, self.transfer
        finish = self.finish[:]
        free = list(self.free_before[first])
        latency = self.latency_before[first]
        if latency >= give_up_at:
            return math.inf
        for u in self.order[first:] if suffix is None else suffix:
            d = device_of[u]
            done = ready_time(u, d, free, finish, device_of, preds, transfer)[0] + compute[u][d]
            if done >= give_up_at:
                return math.inf
            finish[u] = free[d] = done
            if done > latency:
                latency = done
        return latency


def _local_search(schedule, device_of, used, units: _Units, memory_limit, deadline, report,
                  stats) -> str:
    """Move operators (whole colour classes) and reorder them while the latency drops.

    Mutates ``device_of``, ``used`` and ``schedule``; counts into ``stats``; returns why it
    stopped: ``"converged"``, ``"pass_limit"`` or ``"time_limit"``.
    """
    for passes in range(1, MAX_PASSES + 1):
        stats["local_search_passes"] = passes
        improved = False
        first_position = [min(schedule.position[u] for u in group) for group in units.members]
        for g in sorted(range(len(units.members)), key=first_position.__getitem__):
            if time.perf_counter() > deadline:
                return "time_limit"
            if not any(schedule.critical[u] for u in units.members[g]):
                continue
            threshold = schedule.latency * (1 - RELATIVE_IMPROVEMENT)
            best_move = None
            for move in _unit_moves(g, device_of, used, units, memory_limit, first_position):
                # One trial re-times the order's tail (a second on 200,000 operators): look
                # ahead by the longest so far, not only check once per unit.
                if time.perf_counter() + schedule.longest_trial > deadline:
                    return "time_limit"
                undo = _assign(move, units, device_of)
                latency = schedule.trial(device_of, min(first_position[h] for h, _ in move),
                                         threshold)
                _assign(undo, units, device_of)
                stats["moves_tried"] += 1
                if latency < threshold:
                    threshold, best_move = latency, move
            if best_move is not None:
                for h, d in best_move:
                    used[device_of[units.members[h][0]]] -= units.memory[h]
                    used[d] += units.memory[h]
                _assign(best_move, units, device_of)
                schedule.retime(device_of)
                stats["moves_kept"] += 1
                improved = True
        promoted = _promote_operators(schedule, device_of, deadline, stats)
        if promoted is None:
            return "time_limit"
        report(f"heft: local search pass {passes}, latency {schedule.latency:.6g}",
               0.1 + 0.9 * passes / MAX_PASSES)
        if not (improved or promoted):
            return "converged"
    return "pass_limit"


def _promote_operators(schedule, device_of, deadline, stats) -> bool | None:
    """Try running each critical operator that waited for its device before the operator it
    waited for (when none of its inputs lies between the two in the order).

    A promotion is kept as soon as it lowers the latency. Returns whether any was kept, or
    ``None`` when the deadline passed.
    """
    promoted = False
    for u in list(schedule.order):
        if time.perf_counter() + schedule.longest_trial > deadline:
            return None
        waited_for = schedule.cause[u]
        if not schedule.critical[u] or waited_for < 0 or device_of[waited_for] != device_of[u]:
            continue
        order, position = schedule.order, schedule.position
        before, at = position[waited_for], position[u]
        if any(position[p] >= before for p in schedule.preds[u]):
            continue
        suffix = [u, *order[before:at], *order[at + 1:]]
        threshold = schedule.latency * (1 - RELATIVE_IMPROVEMENT)
        stats["moves_tried"] += 1
        if schedule.trial(device_of, before, threshold, suffix) < threshold:
            schedule.reorder(order[:before] + suffix)
            schedule.retime(device_of)
            stats["moves_kept"] += 1
            promoted = True
    return promoted


def _unit_moves(g, device_of, used, units: _Units, memory_limit, first_position):
    """Candidate moves of unit ``g``, each a tuple of ``(unit, new device)``.

    To a device with room, ``g`` moves alone; onto a full one it evicts one of the
    :data:`EVICTION_PARTNERS` units there nearest in the order whose leaving makes room, sending
    it to any other device with room for it (``g``'s old one included).
    """
    memory = units.memory
    current = device_of[units.members[g][0]]
    for d in units.devices[g]:
        if d == current:
            continue
        if used[d] + memory[g] <= memory_limit[d]:
            yield ((g, d),)
            continue
        partners = [
            h
            for h, members in enumerate(units.members)
            if device_of[members[0]] == d and used[d] - memory[h] + memory[g] <= memory_limit[d]
        ]
        # Units close in the order run at similar times, so exchanging them disturbs the least.
        partners.sort(key=lambda h: (abs(first_position[h] - first_position[g]), h))
        for h in partners[:EVICTION_PARTNERS]:
            for refuge in units.devices[h]:
                room_taken = used[refuge] - (memory[g] if refuge == current else 0.0)
                if refuge != d and room_taken + memory[h] <= memory_limit[refuge]:
                    yield ((g, d), (h, refuge))


def _assign(move, units: _Units, device_of) -> tuple:
    """Put each unit of ``move`` on its device; return the move that undoes it."""
    undo = tuple((h, device_of[units.members[h][0]]) for h, _ in move)
    for h, d in move:
        for u in units.members[h]:
            device_of[u] = d
    return undo
