r"""The level search: is there a contiguous placement of max-load at most ``L``? Answered exactly by
a bidirectional breadth-first search over ideals; where the answer is no, ``L`` is a bound.

Setting and notation as in :mod:`tvm_place.solvers.dp`: a contiguous placement on ``K`` devices is
a chain of ideals ``{} = I_0 ⊆ I_1 ⊆ ... ⊆ I_K = V`` of the group DAG (along contiguity edges),
device ``i`` holding the block ``I_i \ I_{i-1}`` (devices may stay empty). Every cost is taken
at its least over the devices (each group's least compute, each operator's least transfer), so
the search bounds every device mix and is exact where the devices are identical. A value
produced by ``p`` and read by its successors is the *edge* ``e = {p} ∪ succ(p)`` of weight
``w_e`` (``p``'s transfer): a block ``X`` pays it when it holds part of ``e`` but not all, so::

    load(X) = compute(X) + sum { w_e : X ∩ e ≠ {} and e ⊄ X }

(the sender's and every receiver's share of :func:`tvm_place.evaluate.evaluate`'s loads; the
same in both directions of the chain).

The test
--------
``F_t``, the ideals a chain of ``t`` blocks of load ``<= L`` reaches from ``{}``, grow layer by
layer (``F_{t+1}``: every ideal ``J ∪ X`` with ``J`` in ``F_t``'s newest layer and ``X`` a block
of load ``<= L`` above it); ``B_s`` likewise from ``V`` downward (the same search on the reversed
DAG, its ideals complemented). A chain of ``K`` blocks under ``L`` exists exactly when ``F_a``
and ``B_b`` share an ideal for some ``a + b = K`` (its ``a``-th ideal); the side whose newest
layer is smaller grows next, so the search grows where the graph is narrow. A side that reaches
the far end, or whose newest layer is empty, decides at once. Where no chain exists every
contiguous placement has a block above ``L``: ``OPT > L``. Where one does, it is a placement
under ``L`` (on identical devices; with several types only the relaxation's).

The blocks from an ideal ``J`` are enumerated without repeats by depth-first search, adding
groups in increasing topological number (each block from its block without its largest group),
and pruned where no extension fits: compute and memory only grow, an edge with a group in ``J``
stays paid once the block touches it, and an open edge with a group below the block's largest
that the block skipped stays open (blocks only grow upward). Ideals are rows of 64-bit group
words in a hash table; the inner loops are compiled (numba, :mod:`._level_kernels`).

The bound
---------
:func:`level_bound` bisects between a bound held (``floor``) and a placement's value
(``target``): a level without a chain becomes the floor, a level with one the ceiling (and its
chain a placement), a test out of its time the ceiling too: the next level lies halfway from
the floor. It stops at its time limit, after ``GIVE_UP_AFTER`` tests out of time in a row (the
graph is too wide at that level: the time goes back to the caller), or once floor and ceiling
meet; and at once where the first test (a probe ``FIRST_LEVEL`` of the way up, on
``FIRST_TEST_SHARE`` of the time) runs out of time.

The beam search
---------------
Where the search cannot finish, its forward side still finds placements: :func:`beam_chain`
grows the same layers from ``{}`` but keeps only the ``width`` ideals of most compute of each
(compute from each ideal's bytes through a 256-entry table per byte), so a chain of ``K`` blocks
under ``L`` it reaches is a placement, and missing one proves nothing. :func:`beam_placement`
steps the level down from a placement's value while chains are found, widening the beam where
none is (``BEAM_WIDTH``). Slicegraph runs it after the level search where that did not close
the gap: an incumbent, not a bound.

Complexity: the ideals reached (at most all of them: ``O((n / w + 1)^w)`` for width ``w``), each
searched from once, its blocks in ``O(d)`` per node of its search tree (``d``: the edges of a
group's operators) plus the open edges' groups; memory ``O(N W)`` for ``N`` ideals of ``W``
words per side. Measured (the 2-core machine otherwise idle, load 1.2 at the start; 16 A100s,
the k = 16 problems of docs/benchmarks.md, two runs each): RandWire-BA (234 groups) has no chain
under 0.837 of its best placement known (3.6-3.7 s in two threads, 6.2-6.5 s in one) nor under
0.918 (6.5-6.9 s; 10.1-12.9 s); on RandWire-WS and -ER, NASNet-A and T5-base no test finished in
10 s, not even 0.1 of the way up from the bound held: their layers hold 10^5 ideals and more.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ... import cores
from ...evaluate import MEMORY_TOLERANCE
from ...graph import PlacementProblem
from ..common import DeviceTypes
from ..grouping import Groups, contract
from .contiguous import combinatorial_bound
from .result import BoundResult

#: A test may use this share of the time the search has left. The first, a probe
#: ``FIRST_LEVEL`` of the way from the floor to the target, gets ``FIRST_TEST_SHARE`` of all of
#: it: where it does not finish, the graph is too wide for the search and it gives up at once.
#: Measured (one run, 10 s per probe, the k = 16 problems of docs/benchmarks.md): RandWire-BA's
#: probes at 0.1, 0.25 and 0.5 of the way finished in 0.9, 0.8 and 3.8 s; no probe on
#: RandWire-WS, -ER, NASNet-A or T5-base finished, not even at 0.1.
TEST_SHARE = 0.6
FIRST_LEVEL = 0.1
FIRST_TEST_SHARE = 0.08
#: Tests that ran out of time in a row after which the search gives up.
GIVE_UP_AFTER = 2
#: The search stops once the floor is within this share of the ceiling.
CLOSE_ENOUGH = 1e-3
#: Ideals a side may hold (its rows of group words and parents: ``8 (W + 1)`` bytes each).
MAX_IDEALS = 4_000_000
#: Threads that search from a layer's ideals at once, where it has at least _THREADED_FRONTIER.
THREADS = 4
_THREADED_FRONTIER = 64
#: Block visits per call of the compiled search at first (the clock is read between calls).
_FIRST_VISITS = 1 << 14
_CALL_SECONDS = 0.1
#: Seconds per row to move a full table into one twice its size (generous: about 0.5 us here).
_REHASH_SECONDS = 1e-6
#: The beam search (:func:`beam_placement`): ideals kept per layer at first, how much wider each
#: round and at most; the steps down from the best value (a fraction of it) at first and at
#: least. Measured (the k = 16 problems of docs/benchmarks.md from the answers of a 120 s
#: slicegraph run, one run each, the 2-core machine otherwise idle, load 1.0-1.7), fixed widths
#: 100, 250, 500 and 2000 on 10-15 s: RandWire-ER 0.951, 0.953, 0.948 and 0.979 of the answer,
#: RandWire-BA 0.985, 0.985, 0.983, 0.984, RandWire-WS 0.990 at every width; at width 100 in
#: 2.9-4.5 s, at 2000 not done in 15 s. Nothing on NASNet-A (a layer from 2,000 ideals of the
#: mobile one held 625,000).
BEAM_WIDTH = 100
BEAM_WIDEN = 4
BEAM_MAX_WIDTH = 6400
BEAM_STEP = 0.02
BEAM_LEAST_STEP = 0.002


def available() -> bool:
    """Whether the compiled search can run (numba is installed: ``pip install tvm-place[fast]``)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class _Direction:
    """The group DAG numbered for one direction of the search (reversed: groups renumbered
    ``G - 1 - g`` and edges turned round), with the arrays the compiled search reads."""

    number: np.ndarray  # this direction's number of each group
    group_compute: np.ndarray
    group_memory: np.ndarray
    member_start: np.ndarray
    member_node: np.ndarray
    node_group: np.ndarray
    edge_group_start: np.ndarray
    edge_group: np.ndarray  # each edge's groups in this numbering, ascending
    predecessor_count: np.ndarray
    successor_start: np.ndarray
    successor: np.ndarray


class _Instance:
    """What a level test needs of a problem: the least costs, the edges, both directions."""

    def __init__(self, problem: PlacementProblem, groups: Groups):
        num_groups = groups.num_groups
        self.num_groups = num_groups
        self.words = (num_groups + 63) // 64
        # The evaluator's tolerance, no less: a search stricter than it would prove too much.
        self.capacity = float(np.max(problem.capacity)) * (1 + MEMORY_TOLERANCE)
        compute = groups.least_compute(problem)
        transfer = problem.transfer_time.min(axis=1)
        members, sizes, weights = [], [], []
        for p, successors in enumerate(problem.graph.successors):
            successors = sorted(set(int(s) for s in successors))
            if successors and transfer[p] > 0:
                members.append(np.array([p] + successors, dtype=np.int64))
                sizes.append(len(successors) + 1)
                weights.append(float(transfer[p]))
        self.edge_members = members
        self.edge_size = np.array(sizes, dtype=np.int32)
        self.edge_weight = np.array(weights, dtype=np.float64)
        node_edges = [[] for _ in range(problem.num_ops)]
        for e, nodes in enumerate(members):
            for u in nodes.tolist():
                node_edges[u].append(e)
        self.node_edge_start = np.concatenate(
            [[0], np.cumsum([len(es) for es in node_edges])]).astype(np.int64)
        self.node_edge = np.array([e for es in node_edges for e in es], dtype=np.int64)
        self.forward = self._direction(problem, groups, compute, reverse=False)
        self.backward = self._direction(problem, groups, compute, reverse=True)

    def load(self, block: np.ndarray) -> float:
        """The load of ``block`` (a bool group mask, original numbering) by the rule above."""
        d = self.forward  # its numbering is the original one
        if not len(self.edge_weight):
            return float(d.group_compute[block].sum())
        inside = block[d.edge_group]
        starts = d.edge_group_start[:-1]
        touched = np.logical_or.reduceat(inside, starts)
        whole = np.logical_and.reduceat(inside, starts)
        return float(d.group_compute[block].sum() + self.edge_weight[touched & ~whole].sum())

    def _direction(self, problem, groups, compute, reverse: bool) -> _Direction:
        num_groups = self.num_groups
        number = (num_groups - 1 - np.arange(num_groups)) if reverse else np.arange(num_groups)
        node_group = number[groups.group_of].astype(np.int64)
        group_compute = np.empty(num_groups)
        group_compute[number] = compute
        group_memory = np.empty(num_groups)
        group_memory[number] = groups.memory
        successors = [[] for _ in range(num_groups)]
        for g, h in groups.edges.tolist():
            if reverse:
                successors[number[h]].append(int(number[g]))
            else:
                successors[number[g]].append(int(number[h]))
        predecessor_count = np.bincount([s for ss in successors for s in ss],
                                        minlength=num_groups).astype(np.int32)
        edge_groups = [np.unique(node_group[nodes]) for nodes in self.edge_members]
        return _Direction(
            number=number,
            group_compute=group_compute,
            group_memory=group_memory,
            member_start=np.concatenate(
                [[0], np.cumsum(np.bincount(node_group, minlength=num_groups))]).astype(np.int64),
            member_node=np.argsort(node_group, kind="stable").astype(np.int64),
            node_group=node_group,
            edge_group_start=np.concatenate(
                [[0], np.cumsum([len(gs) for gs in edge_groups])]).astype(np.int64),
            edge_group=(np.concatenate(edge_groups) if edge_groups
                        else np.zeros(0, np.int64)).astype(np.int64),
            predecessor_count=predecessor_count,
            successor_start=np.concatenate(
                [[0], np.cumsum([len(ss) for ss in successors])]).astype(np.int64),
            successor=np.array([s for ss in successors for s in ss], dtype=np.int64),
        )


class _Rows:
    """Ideals as rows of group words in a hash table, each with its parent (the ideal its block
    grew from), growing as needed."""

    def __init__(self, words: int, rows: int = 1 << 12):
        self.count = 0
        self.keys = np.zeros((rows, words), dtype=np.uint64)
        self.parent = np.full(rows, -1, dtype=np.int64)
        self.table = np.full(2 * rows, -1, dtype=np.int64)
        self.budget = _FIRST_VISITS
        self.rate = math.inf  # visits per second in the compiled search, once measured

    def enlarge(self, kernels) -> bool:
        """Twice the room; ``False`` beyond :data:`MAX_IDEALS`."""
        rows = 2 * len(self.keys)
        if rows > MAX_IDEALS:
            return False
        keys = np.zeros((rows, self.keys.shape[1]), dtype=np.uint64)
        keys[: self.count] = self.keys[: self.count]
        parent = np.full(rows, -1, dtype=np.int64)
        parent[: self.count] = self.parent[: self.count]
        self.keys, self.parent = keys, parent
        self.table = np.full(2 * rows, -1, dtype=np.int64)
        kernels.rehash(self.table, self.keys, self.count)
        return True


class _Side:
    """The ideals one direction has reached, layer by layer."""

    def __init__(self, instance: _Instance, direction: _Direction):
        from . import _level_kernels as kernels

        self.kernels = kernels
        self.instance = instance
        self.direction = direction
        self.rows = _Rows(instance.words)
        self.rows.table[-1 - kernels.find(self.rows.table, self.rows.keys, self.rows.keys, 0)] = 0
        self.rows.count = 1  # the empty ideal (all zero words)
        self.layers = [(0, 1)]

    @property
    def count(self) -> int:
        return self.rows.count

    def _search(self, frontier: np.ndarray, into: _Rows, level: float, deadline: float) -> str:
        """Every block from the ideals ``frontier`` into ``into`` (``self.rows`` itself or a
        thread's own rows); ``"done"``, ``"all"``, ``"time"`` or ``"memory"``."""
        kernels, inst, d = self.kernels, self.instance, self.direction
        position = 0
        while True:
            began = time.perf_counter()
            if began > deadline:
                return "time"
            # Never past the deadline at the rate last measured (a call that ran out of room
            # is followed by one on the same budget, which the time left may no longer cover).
            budget = int(max(1 << 12, min(into.budget, into.rate * (deadline - began))))
            status, into.count, visits, resume = kernels.expand(
                frontier, position, self.rows.keys, self.rows.table, into.keys, into.count,
                into.table, into.parent, level, d.group_compute, d.group_memory, inst.capacity,
                d.member_start, d.member_node, inst.node_edge_start, inst.node_edge,
                inst.edge_size, inst.edge_weight, d.edge_group_start, d.edge_group,
                d.predecessor_count, d.successor_start, d.successor, d.node_group, budget)
            now = time.perf_counter()
            if visits >= 1 << 12:
                into.rate = visits / max(now - began, 1e-9)
            if status == kernels.OUT_OF_VISITS:
                # Calls of about _CALL_SECONDS; more where one ideal's blocks take longer (it
                # starts over).
                wanted = 2 * budget if resume == position else into.rate * _CALL_SECONDS
                into.budget = int(min(1 << 34, max(1 << 12, wanted)))
            position = resume
            if status == kernels.REACHED_ALL:
                return "all"
            if status == kernels.NEED_ROOM:
                if now + _REHASH_SECONDS * into.count > deadline:
                    return "time"  # moving the rows would overrun the deadline
                if not into.enlarge(kernels):
                    return "memory"
            if status == kernels.DONE:
                return "done"

    def grow(self, level: float, deadline: float) -> str:
        """Add the next layer; returns ``"done"``, ``"all"`` (the far end reached), ``"time"``
        or ``"memory"`` (then the layer is incomplete and the side unusable). A large layer's
        ideals are searched from in threads, each into its own rows, merged in order after."""
        start, stop = self.layers[-1]
        frontier = np.arange(start, stop, dtype=np.int64)
        threads = cores.threads(THREADS) if len(frontier) >= _THREADED_FRONTIER else 1
        if threads == 1:
            outcome = self._search(frontier, self.rows, level, deadline)
        else:
            parts = [_Rows(self.instance.words) for _ in range(threads)]
            # Contiguous slices: a strided one is another signature for numba to compile.
            shares = [np.ascontiguousarray(frontier[i::threads]) for i in range(threads)]
            with ThreadPoolExecutor(threads) as pool:
                outcomes = list(pool.map(
                    lambda i: self._search(shares[i], parts[i], level, deadline), range(threads)))
            bad = [o for o in outcomes if o in ("time", "memory")]
            if bad:
                return bad[0]  # the side is of no more use: no merge
            for part in parts:
                while True:
                    count = self.kernels.merge(self.rows.keys, self.rows.count, self.rows.table,
                                               self.rows.parent, part.keys, part.count,
                                               part.parent)
                    if count >= 0:
                        self.rows.count = count
                        break
                    if not self.rows.enlarge(self.kernels):
                        return "memory"
            outcome = "all" if "all" in outcomes else "done"
        self.layers.append((stop, self.rows.count))
        return outcome

    def newest(self) -> int:
        start, stop = self.layers[-1]
        return stop - start

    def keep_newest(self, rows: np.ndarray) -> None:
        """Keep only ``rows`` (ascending) of the newest layer: the others leave the table too,
        so that a later layer may reach them again."""
        start, _ = self.layers[-1]
        table = self.rows
        table.keys[start:start + len(rows)] = table.keys[rows]
        table.parent[start:start + len(rows)] = table.parent[rows]
        table.count = start + len(rows)
        table.table[:] = -1
        self.kernels.rehash(table.table, table.keys, table.count)
        self.layers[-1] = (start, table.count)

    def chain(self, index: int) -> list[int]:
        """The ideals (indices) from the empty one to ``index``."""
        path = [index]
        while path[-1] != 0:
            path.append(int(self.rows.parent[path[-1]]))
        return path[::-1]

    def everything(self) -> int:
        """The index of the ideal of all groups (reached)."""
        full = np.zeros((1, self.instance.words), dtype=np.uint64)
        bits = np.zeros(8 * 8 * self.instance.words, dtype=np.uint8)
        bits[: self.instance.num_groups] = 1
        full[0] = np.packbits(bits, bitorder="little").view(np.uint64)
        return int(self.kernels.find(self.rows.table, self.rows.keys, full, 0))

    def groups_of(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), G)`` bool: the groups, in the original numbering, of these ideals."""
        bits = np.unpackbits(self.rows.keys[rows].view(np.uint8), axis=1, bitorder="little",
                             count=self.instance.num_groups).astype(bool)
        return bits[:, self.direction.number]


def _as_forward(side: _Side, rows: np.ndarray) -> np.ndarray:
    """The backward side's ideals ``rows`` as the forward ideals they leave (complements), in
    the forward numbering's words."""
    inside = ~side.groups_of(rows)
    words = side.instance.words
    packed = np.packbits(inside, axis=1, bitorder="little")
    out = np.zeros((len(rows), 8 * words), dtype=np.uint8)
    out[:, : packed.shape[1]] = packed
    return out.view(np.uint64)


def level_test(instance: _Instance, num_devices: int, level: float, deadline: float):
    """Whether a chain of ``num_devices`` blocks of load at most ``level`` exists: ``(True,
    blocks)`` with the blocks as group masks (original numbering), ``(False, None)``, or
    ``(None, None)`` where the deadline or :data:`MAX_IDEALS` came first."""
    forward = _Side(instance, instance.forward)
    backward = _Side(instance, instance.backward)
    depth = {id(forward): 0, id(backward): 0}
    while depth[id(forward)] + depth[id(backward)] < num_devices:
        side = forward if forward.newest() <= backward.newest() else backward
        outcome = side.grow(level, deadline)
        if outcome in ("time", "memory"):
            return None, None
        depth[id(side)] += 1
        if outcome == "all":
            return True, _blocks(side, None, side.everything(), None)
        if side.newest() == 0:
            return False, None
    # Meet: a backward ideal (complemented) that the forward side reached too.
    chunk = 1 << 16
    for start in range(0, backward.count, chunk):
        if time.perf_counter() > deadline:
            return None, None
        rows = np.arange(start, min(backward.count, start + chunk))
        slot, row = forward.kernels.first_common(forward.rows.table, forward.rows.keys,
                                                 _as_forward(backward, rows))
        if slot >= 0:
            return True, _blocks(forward, backward, int(slot), int(rows[row]))
    return False, None


def _blocks(first: _Side, second: _Side | None, meet: int, meet_second: int | None):
    """The chain's blocks (bool group masks, original numbering) through ``first``'s ideal
    ``meet`` and, when given, ``second``'s ideal ``meet_second`` (the same ideal, complemented)."""
    ideals = first.groups_of(np.array(first.chain(meet)))
    if first.direction is first.instance.backward:
        ideals = ~ideals[::-1]
    if second is not None:
        tail = ~second.groups_of(np.array(second.chain(meet_second)))[::-1]
        ideals = np.concatenate([ideals, tail[1:]])
    return [ideals[i + 1] & ~ideals[i] for i in range(len(ideals) - 1)]


def level_bound(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    floor: float = 0.0,
    target: float = math.inf,
    progress: Callable | None = None,
) -> tuple[BoundResult, np.ndarray | None]:
    """The highest level without a chain that the bisection of the module docstring proves
    within ``time_limit`` seconds, and the best placement a test found (``device_of``, on
    identical devices only; ``None`` otherwise).

    ``floor``: a bound held; ``target``: a placement's value (without a finite one, or without
    numba, the bound is skipped). ``details``: each test's ``level``, outcome and seconds."""
    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    num_devices = problem.num_devices
    floor = max(floor, combinatorial_bound(problem, groups))
    if num_devices < 2 or not math.isfinite(target) or not floor < target \
            or not np.isfinite(groups.least_compute(problem)).all():
        return BoundResult(0.0, "skipped", time.perf_counter() - started), None
    if not available():
        return BoundResult(0.0, "skipped", time.perf_counter() - started, details={
            "reason": "numba is not installed: pip install 'tvm-place[fast]'"}), None
    types = DeviceTypes.of(problem)
    identical = len(types.devices) == 1
    instance = _Instance(problem, groups)
    proven, ceiling = 0.0, target
    placement = None
    tests: list[dict] = []
    out_of_time = 0
    while ceiling - floor > CLOSE_ENOUGH * ceiling and out_of_time < GIVE_UP_AFTER:
        now = time.perf_counter()
        if now >= deadline:
            break
        level = floor + (0.5 if tests else FIRST_LEVEL) * (ceiling - floor)
        if progress is not None:
            progress(f"level search: a chain under {level:.6g}?", None)
        share = TEST_SHARE if tests else FIRST_TEST_SHARE
        exists, blocks = level_test(instance, num_devices, level, now + share * (deadline - now))
        tests.append({"level": level, "chain": exists, "seconds": time.perf_counter() - now})
        if exists is None:
            if len(tests) == 1:
                break  # not even the first level: too wide here, the time goes back
            out_of_time += 1
            ceiling = level
            continue
        out_of_time = 0
        if exists:
            ceiling = level
            if identical:
                placement = _placement(problem, groups, types, blocks)
        else:
            floor = proven = level
    status = "optimal" if tests and not any(t["chain"] is None for t in tests) else "time_limit"
    return (BoundResult(proven, status if tests else "skipped", time.perf_counter() - started,
                        details={"tests": tests}),
            placement)


def beam_chain(instance: _Instance, num_devices: int, level: float, width: int,
               deadline: float):
    """A chain of ``num_devices`` blocks of load at most ``level``, looked for by the forward
    search of :func:`level_test` with each layer cut to its ``width`` ideals of most compute (a
    beam search: a chain found is one; none found proves nothing where a layer was cut).
    ``(blocks, cut)``: the blocks as group masks, or ``None`` (none found, or the deadline came
    first), and whether a layer was cut (if not, ``None`` means no chain exists)."""
    forward = _Side(instance, instance.forward)
    # An ideal's compute from its bytes: the sum over each byte's 256-entry table.
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
    padded = np.zeros(64 * instance.words)
    padded[: instance.num_groups] = instance.forward.group_compute
    byte_compute = bits @ padded.reshape(-1, 8).T  # (256, bytes)
    cut = False
    for _ in range(num_devices):
        outcome = forward.grow(level, deadline)
        if outcome in ("time", "memory"):
            return None, True
        if forward.newest() == 0:
            return None, cut
        if outcome == "all":
            return _blocks(forward, None, forward.everything(), None), cut
        start, stop = forward.layers[-1]
        if stop - start > width:
            cut = True
            rows = np.arange(start, stop)
            ideal_bytes = forward.rows.keys[start:stop].view(np.uint8)
            done = np.zeros(len(rows))
            for b in range(ideal_bytes.shape[1]):  # byte by byte: memory O(rows)
                done += byte_compute[ideal_bytes[:, b], b]
            forward.keep_newest(np.sort(rows[np.argsort(-done, kind="stable")[:width]]))
    return None, cut


def beam_placement(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups,
    target: float,
    progress: Callable | None = None,
    floor: float = 0.0,
) -> tuple[float, np.ndarray | None]:
    """A contiguous placement of max-load under ``target`` (a placement's value) found by
    :func:`beam_chain` within ``time_limit`` seconds, on identical devices only: ``(its
    max-load under the least costs, device_of)`` (call overheads not counted: evaluate it), or
    ``(target, None)``.

    Levels step down from ``target`` by ``BEAM_STEP`` of the best value so far; a level without a
    chain halves the step; below ``BEAM_LEAST_STEP`` the beam widens ``BEAM_WIDEN`` times and
    the step starts over, up to ``BEAM_MAX_WIDTH``; where no layer was cut the search was exact
    and does not widen. It stops within ``BEAM_LEAST_STEP`` of ``floor`` (a bound held). The
    measurements that chose the widths are at ``BEAM_WIDTH``."""
    started = time.perf_counter()
    deadline = started + time_limit
    types = DeviceTypes.of(problem)
    if (len(types.devices) != 1 or problem.num_devices < 2 or not math.isfinite(target)
            or not available() or not np.isfinite(groups.least_compute(problem)).all()):
        return target, None
    instance = _Instance(problem, groups)
    best, placement, step, width = target, None, BEAM_STEP, BEAM_WIDTH
    while (width <= BEAM_MAX_WIDTH and best > floor * (1 + BEAM_LEAST_STEP)
           and time.perf_counter() < deadline):
        level = best * (1 - step)
        if progress is not None:
            progress(f"beam search: a chain under {level:.6g}?", None)
        blocks, cut = beam_chain(instance, problem.num_devices, level, width, deadline)
        if blocks is None:
            step /= 2
            if step < BEAM_LEAST_STEP:
                if not cut:
                    break  # exact at this width: no chain under the level, wider or not
                step, width = BEAM_STEP, width * BEAM_WIDEN
            continue
        best = max(instance.load(block) for block in blocks)
        placement = _placement(problem, groups, types, blocks)
    return best, placement


def _placement(problem: PlacementProblem, groups: Groups, types: DeviceTypes,
               blocks: list[np.ndarray]) -> np.ndarray:
    """The chain's blocks on the devices in order (one type: any order of devices will do)."""
    device_of_group = np.zeros(groups.num_groups, dtype=np.int64)
    for i, block in enumerate(blocks):
        device_of_group[block] = types.devices[0][i]
    return device_of_group[groups.group_of]
