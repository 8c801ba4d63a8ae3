"""SliceGraph searched by a biased random-key genetic algorithm, for the throughput objective.

Reference: A. Archer, M. Fahrbach, K. Liu, P. Prabhu, "Practical Performance Guarantees for
Pipelined DNN Inference", ICML 2024 (arXiv 2311.03703): SliceGraph, an exact dynamic program that
cuts one topological order into at most ``k`` consecutive blocks minimising the largest block cost
(communication included), searched over topological orders with a BRKGA (J. F. Gonçalves and
M. G. C. Resende, "Biased random-key genetic algorithms for combinatorial optimization", J.
Heuristics 17, 2011). Lower bounds: :mod:`tvm_place.solvers.bounds.contiguous`.

Why slicing orders suffices. A placement is contiguous when the devices' quotient graph over the
contiguity edges is acyclic. Slicing a topological order into consecutive blocks on distinct
devices gives a contiguous placement (every edge goes to the same or a later block); conversely
a contiguous placement is the slicing of the order "devices in a topological order of their
quotient, each device's operators in a topological order": so the best slicing over *all* orders
is the contiguous optimum, and each order's best slicing is an upper bound on it.

Units. Operators that must share a device (colour classes, the quotient cycles they create) and
costless satellites are grouped first (:func:`tvm_place.solvers.grouping.contract`); orders are orders of the
groups and cuts fall between groups. :func:`slice_order` slices an order of the operators instead,
cutting only where no colour class straddles the cut.

The slicing program. For an order of ``U`` units, devices grouped into *types* (identical compute,
transfer, capacity and support columns; ``c_t`` devices of type ``t``) and usage vectors
``v <= c``::

    best[0][0] = 0
    best[v][i] = min over types t with v_t > 0, j < i of max(best[v - e_t][j], cost_t(j, i))
    answer     = min over v of best[v][U]

where ``cost_t(j, i)`` is the evaluator's load of the units ``j..i-1`` on a device of type ``t``
(``inf`` when a member may not run there or the memory exceeds its capacity)::

    cost_t(j, i) = compute + sum_{u in block, a successor outside} t[u, t]
                           + sum_{u outside, a successor inside} t[u, t]

(each value once per direction; successors may lie on both sides of the block when the
contiguity edges are a subset of the edges, as in training graphs). All ``O(U^2)`` block costs of
one order come from a 2-D difference array: an operator at unit ``p`` with consumers in units
``s_1 < ... < s_m`` adds its transfer time to the rectangle of blocks ``[l, r] ∋ p`` minus the
rectangle that also holds every consumer (its sends), and, for each consumer ``s_j``, to the
rectangle of blocks whose nearest consumer to ``p`` is ``s_j`` (its receives); two prefix sums
finish it. Then the program runs one vectorised ``max``/``min`` over ``j`` per (usage vector,
type): ``O(m log m + U^2 (T + V T))`` time per order with ``V = prod (c_t + 1)``, ``O(T U^2)``
memory.

The genetic algorithm. A chromosome is one random key in ``[0, 1)`` per group; it decodes to the
topological order that repeatedly takes the ready group of smallest key (Kahn's algorithm with a
heap), and its fitness is that order's best slicing. Each generation keeps the elite (the best
``elite`` fraction), adds ``mutants`` fresh random chromosomes, and fills the rest with children of
one elite and one non-elite parent, each key taken from the elite parent with probability
``rho``. The first population holds the keys of a few structured orders (the group numbering,
a depth-first order, a breadth-first order) and random ones. Everything random comes from
``numpy.random.default_rng(seed)``: for a given seed the result is the same whenever the search
ends by its generation cap, its patience (generations without improvement) or by reaching the
lower bound rather than by the clock, and the last step (below) runs no chain model (``bounds``
without ``"chain"``, devices that are not identical, or an answer already proven optimal): the
chain model is CP-SAT on two workers until its time is spent.

Time budget (``time_limit`` seconds): the GA runs up to 50% of it, the lower bounds up to 90%
(where they end sooner, the GA resumes until then, less two evaluations, which rebuild the answer);
then, up to 97.5%, :func:`tvm_place.solvers.anytime.improve` lowers the answer: the iterated local
search of :mod:`tvm_place.solvers.chain_search` moves groups across its cuts (until
``IMPROVE_PATIENCE`` kicks in a row find nothing better), then, where ``bounds`` names ``"chain"``
and the devices are identical, the chain model of :mod:`tvm_place.solvers.bounds.contiguous` hinted
with its placement searches for a better chain (and its own bound counts). Measured on the
slicegraph answers of 120 s runs at k = 16 (one run each, 5 s per step): the local search lowered
nasnet-a-mobile by 4.3% where the GA's 72 s had stopped, and on randwire-er the local search and
then the chain model by 5.9%; in the Archer table at k = 16 (120 s, docs/benchmarks.md) the answers
on the wide graphs fell by up to 10% in three runs (NASNet-A 4-9%, RandWire 1.5-10%, T5-base
0-0.5%). The clock is checked before each batch of evaluations, looking ahead by the longest
evaluation so far; an interrupted generation resumes where it stopped. The population is 50 up to
200 groups and shrinks beyond (at least 20), since an evaluation costs about ``groups^2``; where
one takes ``THREADED_EVALUATION_SECONDS``, a generation's orders are sliced
``EVALUATION_THREADS`` at a time in threads (the search is the same for any number). The bound
phase: the combinatorial bound at once; then, where the covering bound of
:mod:`tvm_place.solvers.bounds.covering` would get less than ``COVERING_LEAST_SECONDS`` (short
limits), the cut-window bound of :mod:`tvm_place.solvers.bounds.window` on up to ``WINDOW_SHARE``
of the phase and the MIPs of :mod:`tvm_place.solvers.bounds.contiguous` on the rest, each under its
own time limit, skipped when too little time is left for them to prove anything; otherwise the MIPs
first, the level search of :mod:`tvm_place.solvers.bounds.levels` on up to ``LEVEL_SHARE`` of what
is left (exact where the graph's ideals allow; its chain becomes the answer where it is better
than the GA's), where it did not close the gap its beam search (``BEAM_SHARE`` of what is then
left; a chain it finds likewise, and the bounds after it start from the best value known), the
covering bound, which stops where it has proven nothing in ``COVERING_PROBE``
of its time, and the cut windows on what the covering bound left (at least
``WINDOW_SHARE_LEAST`` of the phase). The Placement's ``lower_bound`` is the best bound proven
(never above the value found; a bound that would be is dropped and named in
``stats["bound_conflict"]``), and ``stats["optimal"]`` says the value is within ``2e-6`` of it.

Limitations: the usage vectors multiply with the number of distinct device types (``V = 2^D``
for ``D`` all-different devices; beyond 4,096 the method refuses); the block-cost matrix needs
``8 T U^2`` bytes (32 MB per type at 2,000 units) and an evaluation takes about 10 ms at 200
groups, 30 ms at 450, 130 ms at 1,000 on one core; the GA is a heuristic: its answer is an upper
bound on the contiguous optimum, with the bound's gap as the only guarantee.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from .. import cores
from ..errors import InfeasibleError, TvmPlaceError
from ..evaluate import MEMORY_TOLERANCE, evaluate
from ..graph import Placement, PlacementProblem
from . import anytime
from .bounds import contiguous
from .bounds import covering, levels
from .bounds import window as window_bound
from .common import DeviceTypes, Progress, require_objective, single_device
from .grouping import Groups, check_placeable, contract, groups_from

#: GA parameters (Gonçalves and Resende's usual ranges).
DEFAULT_POPULATION = 50
ELITE_FRACTION = 0.2
MUTANT_FRACTION = 0.15
RHO_ELITE = 0.7
#: The GA evaluates up to this many chromosomes at once in threads (at most the cores the
#: calling thread may run on; a cap, since only two were measured), once an evaluation takes
#: ``THREADED_EVALUATION_SECONDS``: on 2 cores two threads sliced 1.7x as many orders per second
#: as one on nasnet-a-large's 750 groups (31.5 ms each), and 1.7-1.8x at 200 groups (3.5 ms), but
#: under 0.7x at 30-120 groups (0.3-1 ms each: the threads' overhead; one run each, load 2-3).
EVALUATION_THREADS = 4
THREADED_EVALUATION_SECONDS = 0.002
#: Evaluations without improvement after which the search stops (in whole generations, at least
#: 40 of them): 40 generations of 50, more generations of a smaller population.
DEFAULT_PATIENCE_EVALUATIONS = 2000
#: Shares of the time limit: GA first, then bounds, then GA again (see the module docstring).
_GA_SHARE, _BOUNDS_END, _GA_END, _POLISH_END = 0.5, 0.9, 0.9, 0.975
#: Where the covering bound does not run: the share of the bound phase the cut-window bound may
#: take first (max-flows, CP-SAT windows: on wide graphs it halves windows until its share is
#: spent; on narrow ones it usually stops sooner), the MIPs the rest.
WINDOW_SHARE = 0.3
#: The covering bound of :mod:`tvm_place.solvers.bounds.covering` runs where
#: ``COVERING_SHARE * (1 - WINDOW_SHARE)`` of the bound phase is at least
#: ``COVERING_LEAST_SECONDS`` (its column generation needs tens of seconds on the wide graphs it
#: is for, and the MIPs keep their whole share on the rest). Where it runs, the MIPs get the
#: rest of that share first, the covering bound all but ``WINDOW_SHARE_LEAST`` of what is left,
#: and the cut windows the rest: the covering bound stops where it has proven nothing in
#: ``COVERING_PROBE`` of its time, so that time goes to the cut windows.
COVERING_SHARE = 0.7
#: Before the covering bound, the level search of :mod:`tvm_place.solvers.bounds.levels` may
#: take this share of its time (it hands back what it cannot use: a graph too wide at its first
#: level).
LEVEL_SHARE = 0.6
#: Then the beam search of :func:`tvm_place.solvers.bounds.levels.beam_placement` may take this
#: share of what is left, where the level search did not close the gap (a better placement
#: lowers the covering bound's levels too).
BEAM_SHARE = 0.15
COVERING_LEAST_SECONDS = 10.0
COVERING_PROBE = 0.4
#: 0.1 before session 20; on RandWire (k = 16) the cut windows then proved nothing after the
#: covering bound in their 14-33 s (one slicegraph run each), which the covering bound now uses (where it gives up, its
#: time still goes to the windows).
WINDOW_SHARE_LEAST = 0.02
#: Relative gap under which the answer counts as proven optimal (covers the bounds' safety margin).
_OPTIMAL_TOLERANCE = 2 * contiguous.MIP_SAFETY
#: Usage-vector states the slicing program accepts (types x vectors x units^2 work per order).
MAX_USAGE_VECTORS = 4096
#: Seconds one order's evaluation takes per (unit^2 x device type x (usage vectors + 1)),
#: measured on the 2-core development machine (1.6 s for 3,200 units and 3 types, 8 vectors),
#: rounded up (:func:`_evaluation_seconds`).
EVALUATION_SECONDS_PER_CELL = 7e-9
#: Evaluations the GA should get at least: where one evaluation of every group would take more
#: than this share of the time, consecutive groups are merged first (:func:`coarsen`).
MIN_EVALUATIONS = 40


class _Slicer:
    """The slicing program of the module docstring, for any order of any units."""

    def __init__(self, problem: PlacementProblem, types: DeviceTypes):
        self.problem = problem
        self.types = types
        edges = problem.graph.edges
        self.src = edges[:, 0] if len(edges) else np.zeros(0, dtype=np.int64)
        self.dst = edges[:, 1] if len(edges) else np.zeros(0, dtype=np.int64)
        counts = types.counts
        self.num_types = len(counts)
        self.counts = counts

    def _usage(self, num_units: int):
        counts = np.minimum(self.counts, num_units)
        stride = np.concatenate([[1], np.cumprod(counts + 1)]).astype(np.int64)
        num_vectors = int(stride[-1])
        if num_vectors > MAX_USAGE_VECTORS:
            raise TvmPlaceError(
                f"{len(counts)} device types give {num_vectors} device-usage vectors, more than the "
                f"slicing program handles ({MAX_USAGE_VECTORS}); give identical devices identical "
                "costs, or use fewer distinct devices"
            )
        usage = (np.arange(num_vectors)[:, None] // stride[:-1]) % (counts + 1)
        return stride, usage

    def block_costs(self, unit_of: np.ndarray, num_units: int) -> np.ndarray:
        """``(T, U + 1, U + 1)``: ``[t, j, i]`` = load of units ``j..i-1`` on type ``t``."""
        U, T = num_units, self.num_types
        types = self.types
        size = U + 1
        # Compute, support and memory by prefix sums over the units.
        unit_compute = np.zeros((U, T))
        unit_bad = np.zeros((U, T))
        for t in range(T):
            unit_compute[:, t] = np.bincount(unit_of, types.compute[:, t], U)
            unit_bad[:, t] = np.bincount(unit_of, ~types.allowed[:, t], U)
        unit_memory = np.bincount(unit_of, self.problem.memory, U)
        prefix = lambda a: np.concatenate([np.zeros((1,) + a.shape[1:]), np.cumsum(a, axis=0)])
        p_compute, p_bad, p_memory = prefix(unit_compute), prefix(unit_bad), prefix(unit_memory)

        # Transfers: a difference array over (l, r) per type, rectangles added in bulk.
        rows0, rows1, cols0, cols1, nodes, signs = [], [], [], [], [], []
        if len(self.src):
            cu = self.src
            cs = unit_of[self.dst]
            cross = unit_of[cu] != cs
            pair = np.unique(np.stack([cu[cross], cs[cross]], axis=1), axis=0)
            if len(pair):
                u, s = pair[:, 0], pair[:, 1]  # sorted by (u, s)
                p = unit_of[u]
                first = np.ones(len(u), dtype=bool)
                first[1:] = u[1:] != u[:-1]
                last = np.ones(len(u), dtype=bool)
                last[:-1] = u[:-1] != u[1:]
                # Sends: blocks [l, r] holding p, minus those that also hold every consumer.
                su, smin, smax, sp = u[first], s[first], s[last], p[first]
                rows0 += [np.zeros_like(sp), np.zeros_like(sp)]
                rows1 += [sp, np.minimum(sp, smin)]
                cols0 += [sp, np.maximum(sp, smax)]
                cols1 += [np.full_like(sp, U - 1)] * 2
                nodes += [su, su]
                signs += [np.ones(len(sp)), -np.ones(len(sp))]
                # Receives: blocks off p whose nearest consumer (towards p) is s.
                prev_s = np.where(first, -1, np.roll(s, 1))
                next_s = np.where(last, U, np.roll(s, -1))
                after = s > p
                lo = np.maximum(p, prev_s) + 1
                rows0.append(lo[after])
                rows1.append(s[after])
                cols0.append(s[after])
                cols1.append(np.full(int(after.sum()), U - 1))
                nodes.append(u[after])
                signs.append(np.ones(int(after.sum())))
                before = ~after
                hi = np.minimum(p, next_s) - 1
                rows0.append(np.zeros(int(before.sum()), dtype=np.int64))
                rows1.append(s[before])
                cols0.append(s[before])
                cols1.append(hi[before])
                nodes.append(u[before])
                signs.append(np.ones(int(before.sum())))
        costs = np.empty((T, size, size))
        if rows0:
            r0, r1 = np.concatenate(rows0), np.concatenate(rows1) + 1
            c0, c1 = np.concatenate(cols0), np.concatenate(cols1) + 1
            node, sign = np.concatenate(nodes), np.concatenate(signs)
            corner_index = np.concatenate(
                [r0 * size + c0, r1 * size + c0, r0 * size + c1, r1 * size + c1]
            )
            corner_sign = np.concatenate([sign, -sign, -sign, sign])
            corner_node = np.concatenate([node] * 4)
        for t in range(T):
            if rows0:
                weights = corner_sign * types.transfer[corner_node, t]
                grid = np.bincount(corner_index, weights, size * size).reshape(size, size)
                transfer = np.cumsum(np.cumsum(grid, axis=0), axis=1)[:U, :U]
            else:
                transfer = np.zeros((U, U))
            # Block of units l..r (r >= l) -> costs[t, l, r + 1].
            block = (p_compute[1:, t][None, :] - p_compute[:-1, t][:, None]) + transfer
            bad = (p_bad[1:, t][None, :] - p_bad[:-1, t][:, None]) > 0.5
            memory = p_memory[1:][None, :] - p_memory[:-1][:, None]
            bad |= memory > types.capacity[t] * (1 + MEMORY_TOLERANCE)
            bad |= np.tri(U, U, -1, dtype=bool)  # r < l
            block[bad] = np.inf
            costs[t, :U, 1:] = block
            costs[t, :, 0] = np.inf
            costs[t, U, :] = np.inf
        return costs

    def best(self, costs: np.ndarray, reconstruct: bool = False):
        """Run the program on ``costs``; return the value and, if asked, ``[(j, i, type)]``."""
        T, size, _ = costs.shape
        U = size - 1
        stride, usage = self._usage(U)
        num_vectors = len(usage)
        best = np.full((num_vectors, size), np.inf)
        best[0, 0] = 0.0
        if reconstruct:
            chosen_j = np.zeros((num_vectors, size), dtype=np.int64)
            chosen_t = np.zeros((num_vectors, size), dtype=np.int64)
        for v in range(1, num_vectors):
            row = best[v]
            for t in range(T):
                if usage[v, t] == 0:
                    continue
                previous = best[v - stride[t]]
                finite = np.flatnonzero(previous < np.inf)
                if not len(finite):
                    continue
                candidates = np.maximum(previous[finite, None], costs[t, finite])
                if reconstruct:
                    pick = candidates.argmin(axis=0)
                    value = candidates[pick, np.arange(size)]
                    better = value < row
                    row[better] = value[better]
                    chosen_j[v, better] = finite[pick[better]]
                    chosen_t[v, better] = t
                else:
                    np.minimum(row, candidates.min(axis=0), out=row)
        final = best[:, U]
        vector = int(final.argmin())
        value = float(final[vector])
        if not reconstruct:
            return value, None
        blocks = []
        if math.isfinite(value):
            i = U
            while i > 0:
                j, t = int(chosen_j[vector, i]), int(chosen_t[vector, i])
                blocks.append((j, i, t))
                vector -= int(stride[t])
                i = j
        return value, blocks[::-1]

    def assign(self, unit_of: np.ndarray, blocks) -> np.ndarray:
        """Device per operator: each block on its own device of its type."""
        used = [0] * self.num_types
        unit_device = np.zeros(max((i for _, i, _ in blocks), default=0), dtype=np.int64)
        for j, i, t in blocks:
            unit_device[j:i] = self.types.devices[t][used[t]]
            used[t] += 1
        return unit_device[np.asarray(unit_of, dtype=np.int64)]


def slice_order(problem: PlacementProblem, order) -> tuple[float, np.ndarray | None]:
    """SliceGraph on one topological order of the *operators*: the best max-load of a slicing
    into consecutive blocks on distinct devices, never cutting through a colour class; returns
    ``(value, device_of)`` (``(inf, None)`` if no slicing fits)."""
    order = np.asarray(order, dtype=np.int64)
    n = problem.num_ops
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    # A cut after position q is forbidden when a colour class has members on both sides.
    blocked = np.zeros(n + 1, dtype=np.int64)
    for colour in problem.colour_classes:
        where = position[colour]
        blocked[where.min() + 1] += 1
        blocked[where.max() + 1] -= 1
    open_cut = np.cumsum(blocked)[1:n] == 0  # cut between positions q-1 and q, q = 1..n-1
    unit_at_position = np.concatenate([[0], np.cumsum(open_cut)])
    unit_of = unit_at_position[position]
    num_units = int(unit_at_position[-1]) + 1
    slicer = _Slicer(problem, DeviceTypes.of(problem))
    value, blocks = slicer.best(slicer.block_costs(unit_of, num_units), reconstruct=True)
    if not math.isfinite(value):
        return math.inf, None
    return value, slicer.assign(unit_of, blocks)


# ----------------------------------------------------------------------------------------------
# The genetic algorithm
# ----------------------------------------------------------------------------------------------


class _Brkga:
    def __init__(
        self,
        groups: Groups,
        slicer: _Slicer,
        rng: np.random.Generator,
        population: int,
        deadline_check: Callable[[float], bool],
    ):
        self.groups = groups
        self.slicer = slicer
        self.rng = rng
        self.size = max(4, population)
        self.num_elite = max(1, int(round(ELITE_FRACTION * self.size)))
        self.num_mutants = max(1, int(round(MUTANT_FRACTION * self.size)))
        self.G = groups.num_groups
        self.cache: dict[bytes, float] = {}
        self.evaluations = 0
        self.best_value = math.inf
        self.best_rank: np.ndarray | None = None
        self.generation = 0
        self.stalled = 0
        self.out_of_time = deadline_check
        self.eval_seconds = 0.0  # the longest evaluation so far: the clock checks look ahead by it
        self.pending: tuple | None = None  # (keys, values, next index, best before) under way
        self.initialised = False
        self.keys = np.empty((0, self.G))
        self.fitness = np.empty(0)

    def decode(self, keys: np.ndarray) -> np.ndarray:
        """The rank of each group in the smallest-key-first topological order."""
        indegree = self.groups.num_predecessors.copy()
        successors = self.groups.successors
        ready = [(float(keys[g]), g) for g in np.flatnonzero(indegree == 0).tolist()]
        heapq.heapify(ready)
        rank = np.empty(self.G, dtype=np.int64)
        position = 0
        while ready:
            _, g = heapq.heappop(ready)
            rank[g] = position
            position += 1
            for h in successors[g]:
                indegree[h] -= 1
                if indegree[h] == 0:
                    heapq.heappush(ready, (float(keys[h]), h))
        return rank

    def _slice(self, rank: np.ndarray) -> tuple[float, float]:
        """The best slicing's value of the order ``rank`` and the seconds it took (threads run
        several at once: NumPy releases the GIL in the block-cost arrays)."""
        started = time.perf_counter()
        value, _ = self.slicer.best(self.slicer.block_costs(rank[self.groups.group_of], self.G))
        return value, time.perf_counter() - started

    def evaluate_batch(self, batch: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
        """The values of the chromosomes ``batch``, in order: the orders not cached yet sliced
        in ``pool``'s threads (or here), the cache and the best updated in the batch's order,
        so that the search does not depend on the number of threads."""
        ranks = [self.decode(keys) for keys in batch]
        signatures = [rank.tobytes() for rank in ranks]
        new = {signature: rank for signature, rank in zip(signatures, ranks)
               if signature not in self.cache}
        work = list(new.values())
        results = pool.map(self._slice, work) if pool is not None and len(work) > 1 \
            else map(self._slice, work)
        for signature, (value, seconds) in zip(new, results):
            self.cache[signature] = value
            self.evaluations += 1
            self.eval_seconds = max(self.eval_seconds, seconds)
        values = np.array([self.cache[signature] for signature in signatures])
        for value, rank in zip(values.tolist(), ranks):
            if value < self.best_value:
                self.best_value, self.best_rank = value, rank
        return values

    def _run_pending(self) -> np.ndarray | None:
        """Evaluate the pending chromosomes, a batch at a time; ``None`` if the clock stops
        it first (it resumes where it stopped, so an interrupted search continues exactly as an
        uninterrupted one)."""
        keys, values, index, best_before = self.pending
        threads = cores.threads(EVALUATION_THREADS)
        with contextlib.ExitStack() as stack:
            pool = None
            while index < len(keys):
                if self.out_of_time(self.eval_seconds):
                    self.pending = (keys, values, index, best_before)
                    return None
                workers = 1
                if threads > 1 and self.eval_seconds >= THREADED_EVALUATION_SECONDS:
                    pool = pool or stack.enter_context(ThreadPoolExecutor(threads))
                    workers = threads
                values[index:index + workers] = self.evaluate_batch(
                    keys[index:index + workers], pool if workers > 1 else None)
                index += workers
        self.pending = None
        return values

    def initialise(self, seed_orders: list[np.ndarray]) -> bool:
        if self.pending is None:
            keys = self.rng.random((self.size, self.G))
            for i, order in enumerate(seed_orders[: self.size]):
                rank = np.empty(self.G)
                rank[order] = np.arange(self.G)
                keys[i] = (rank + 0.5) / self.G
            self.pending = (keys, np.full(self.size, np.inf), 0, math.inf)
        keys = self.pending[0]
        values = self._run_pending()
        if values is None:
            return False
        self.keys, self.fitness = keys, values
        self.initialised = True
        self.stalled = 0
        self._sort()
        return True

    def _sort(self) -> None:
        order = np.argsort(self.fitness, kind="stable")
        self.keys, self.fitness = self.keys[order], self.fitness[order]

    def step(self) -> bool:
        """One generation; ``False`` if the clock stopped it (it resumes on the next call)."""
        size, ne, nm = self.size, self.num_elite, self.num_mutants
        if self.pending is None:
            num_children = size - ne - nm
            rng = self.rng
            mutants = rng.random((nm, self.G))
            elite_parent = rng.integers(0, ne, num_children)
            other_parent = rng.integers(ne, size, num_children) if size > ne else elite_parent
            take_elite = rng.random((num_children, self.G)) < RHO_ELITE
            children = np.where(take_elite, self.keys[elite_parent], self.keys[other_parent])
            fresh = np.concatenate([mutants, children])
            self.pending = (fresh, np.full(len(fresh), np.inf), 0, self.best_value)
        fresh, best_before = self.pending[0], self.pending[3]
        values = self._run_pending()
        if values is None:
            return False
        self.stalled = 0 if self.best_value < best_before else self.stalled + 1
        self.keys = np.concatenate([self.keys[:ne], fresh])
        self.fitness = np.concatenate([self.fitness[:ne], values])
        self._sort()
        self.generation += 1
        return True


def _population(requested: int | None, num_groups: int) -> int:
    """``requested``, or by default 50 chromosomes, fewer beyond 200 groups (an evaluation costs
    about ``groups^2``; at least 20), so that large graphs still see generations."""
    if requested is not None:
        return requested
    if num_groups <= 200:
        return DEFAULT_POPULATION
    return max(20, int(round(DEFAULT_POPULATION * 200 / num_groups)))


def _structured_orders(groups: Groups) -> list[np.ndarray]:
    """Group orders to seed the first population: numbering, depth-first, breadth-first."""
    G = groups.num_groups
    orders = [np.arange(G)]
    # Depth first: keep following the newest ready group (good locality along branches).
    indegree = groups.num_predecessors.copy()
    stack = sorted(np.flatnonzero(indegree == 0).tolist(), reverse=True)
    depth_first = []
    while stack:
        g = stack.pop()
        depth_first.append(g)
        for h in sorted(groups.successors[g], reverse=True):
            indegree[h] -= 1
            if indegree[h] == 0:
                stack.append(h)
    orders.append(np.array(depth_first, dtype=np.int64))
    # Breadth first by level (longest path from a source), then numbering.
    level = np.zeros(G, dtype=np.int64)
    for g in range(G):  # the numbering is topological
        for h in groups.successors[g]:
            level[h] = max(level[h], level[g] + 1)
    orders.append(np.lexsort((np.arange(G), level)))
    return orders


def _single_device_answer(problem: PlacementProblem, started: float, lower: float,
                          expected: float) -> Placement | None:
    """The answer when not even one order can be evaluated in time: everything on the best
    single device (a contiguous placement), with the combinatorial bound; ``None`` where no single
    device holds the model."""
    device_of = single_device(problem)
    if device_of is None:
        return None
    value = evaluate(problem, device_of).max_load
    return Placement(
        device_of=device_of, objective="throughput", value=value,
        lower_bound=min(value, lower), method="slicegraph",
        stats={"search_space": "contiguous", "optimal": False, "evaluations": 0,
               "stopped": f"time limit: one order's evaluation takes about {expected:.2g} s, "
                          "so the best single device is returned",
               "seconds": time.perf_counter() - started},
    )


def _evaluation_seconds(slicer: "_Slicer", num_units: int) -> float:
    """About how long one order's evaluation takes (the program is ``O(U^2 T (V + 1))``)."""
    num_vectors = int(np.prod(np.minimum(slicer.counts, num_units) + 1))
    return EVALUATION_SECONDS_PER_CELL * num_units**2 * slicer.num_types * (num_vectors + 1)


def coarsen(problem: PlacementProblem, groups: Groups, types: DeviceTypes, max_units: int) -> Groups:
    """Groups merged into runs of consecutive ones, about ``max_units`` runs, each still fitting
    some device type (support, pins, memory).

    The groups are numbered in a topological order of the contiguity quotient, so every edge
    between runs goes forward: the runs' quotient is acyclic, any slicing of an order of the runs
    is a contiguous placement, and the search over them is a restriction of the search over the
    groups (its answers are valid; its bounds are not, and are computed on ``groups``). Why: one
    evaluation costs ``O(U^2)``, hours at 200,000 groups. Time O(G T) plus :func:`groups_from`.
    """
    G, T = groups.num_groups, len(types.devices)
    first = [ds[0] for ds in types.devices]
    supported = np.isfinite(groups.compute[:, first])
    masks = (supported.astype(np.int64) << np.arange(T)).sum(axis=1).tolist() if T <= 62 else None
    if masks is None:
        return groups
    capacity = types.capacity * (1 + MEMORY_TOLERANCE)
    by_capacity = np.argsort(capacity)
    sorted_capacity = capacity[by_capacity].tolist()
    # room[i]: the types whose capacity is at least the i-th smallest one's.
    room = [int(sum(1 << int(t) for t in by_capacity[i:])) for i in range(T + 1)]
    run_length = max(1, -(-G // max(1, max_units)))
    memory = groups.memory.tolist()
    run_of = np.empty(G, dtype=np.int64)
    run, mask, used, count = 0, 0, 0.0, 0
    for g in range(G):
        joined, total = mask & masks[g], used + memory[g]
        # Join the current run while it is short enough and some type still holds all of it.
        if count and count < run_length and joined & room[bisect.bisect_left(sorted_capacity,
                                                                              total)]:
            mask, used, count = joined, total, count + 1
        else:
            if count:
                run += 1
            mask, used, count = masks[g], memory[g], 1
        run_of[g] = run
    return groups_from(problem, run_of[groups.group_of])


def _runs_for(problem: PlacementProblem, groups: Groups, types: DeviceTypes, slicer: "_Slicer",
              seconds: float) -> Groups:
    """``groups``, or runs of them (:func:`coarsen`) few enough that one order's evaluation
    takes about ``seconds``."""
    if _evaluation_seconds(slicer, groups.num_groups) <= seconds:
        return groups
    per_cell = max(_evaluation_seconds(slicer, 1000) / 1000**2, 1e-15)
    return coarsen(problem, groups, types, max(2, int(math.sqrt(max(seconds, 0.0) / per_cell))))


def slicing_seconds(problem: PlacementProblem, num_units: int) -> float:
    """About how long the slicing program takes on one order of ``num_units`` units."""
    return _evaluation_seconds(_Slicer(problem, DeviceTypes.of(problem)), num_units)


def sliced_runs(problem: PlacementProblem, time_limit: float) -> np.ndarray | None:
    """A contiguous placement (a device per operator) in about ``time_limit`` seconds at any
    size, or ``None`` where none is found: the best slicing of the groups' own numbering (a
    topological order), merged into runs few enough to evaluate in time. The cheap answer of the
    contiguous methods (dp, pipedream) when their own search cannot finish. Time O(n + m) plus
    one evaluation, sized to the limit."""
    started = time.perf_counter()
    try:
        groups = contract(problem)
        check_placeable(problem, groups)
        types = DeviceTypes.of(problem)
        slicer = _Slicer(problem, types)
        slicer._usage(groups.num_groups)
    except TvmPlaceError:  # no device for some group, or too many device types
        return None
    left = time_limit - (time.perf_counter() - started)
    search = _runs_for(problem, groups, types, slicer, 0.5 * left)
    if _evaluation_seconds(slicer, search.num_groups) > left:
        return None
    value, blocks = slicer.best(slicer.block_costs(search.group_of, search.num_groups),
                                reconstruct=True)
    return slicer.assign(search.group_of, blocks) if math.isfinite(value) else None


def solve(
    problem: PlacementProblem,
    objective: str,
    time_limit: float,
    progress: Progress | None = None,
    *,
    seed: int = 0,
    population: int | None = None,
    generations: int | None = None,
    patience: int | None | str = "auto",
    bounds: tuple[str, ...] = contiguous.BOUNDS + ("window", "levels", "covering"),
) -> Placement:
    """Best contiguous placement SliceGraph + BRKGA finds within ``time_limit``; see above.

    ``seed`` fixes every random choice; ``population`` sizes the GA (default: 50, fewer on graphs
    beyond 200 groups); ``generations`` caps it; ``patience`` stops it after
    that many generations without improvement (``None``: never; ``"auto"``: 40 generations, more
    for a population under 50, about 2,000 evaluations); ``bounds`` names the lower bounds
    of :mod:`~tvm_place.solvers.bounds.contiguous` and ``"window"``, the cut-window bound of :mod:`~tvm_place.solvers.bounds.window`, to
    compute (``()``: only the combinatorial one, always cheap); where ``"levels"`` or
    ``"covering"`` is named and the limit gives the long bound phase, the beam search runs too
    (a placement search, not a bound: ``stats["from_beam_search"]`` where its chain is the answer).
    """
    require_objective("slicegraph", objective, ("throughput",))
    started = time.perf_counter()
    groups = contract(problem)
    check_placeable(problem, groups)
    types = DeviceTypes.of(problem)
    slicer = _Slicer(problem, types)
    slicer._usage(groups.num_groups)  # fail early on too many device types

    bound_results = {
        "combinatorial": contiguous.BoundResult(
            contiguous.combinatorial_bound(problem, groups), "optimal", 0.0
        )
    }
    lower = bound_results["combinatorial"].value

    # The GA searches orders of ``search``: the groups, or runs of them where one evaluation of
    # the groups would leave the GA fewer than MIN_EVALUATIONS (the bounds stay on ``groups``).
    left = time_limit - (time.perf_counter() - started)
    search = _runs_for(problem, groups, types, slicer, left / MIN_EVALUATIONS)
    expected = _evaluation_seconds(slicer, search.num_groups)
    left = time_limit - (time.perf_counter() - started)
    if 3 * expected > left:
        single = _single_device_answer(problem, started, lower, expected)
        if single is not None:
            return single
        raise InfeasibleError(
            f"slicegraph cannot evaluate one order of the {search.num_groups} groups in the "
            f"{left:.3g} s left (about {expected:.2g} s each), and no single device holds the "
            "model; raise the time limit"
        )

    phase_end = [started + _GA_SHARE * time_limit]
    ga = _Brkga(
        search,
        slicer,
        np.random.default_rng(seed),
        _population(population, search.num_groups),
        lambda ahead: time.perf_counter() + ahead > phase_end[0],
    )
    finished = []  # why the GA stopped for good
    if patience == "auto":
        patience = max(40, DEFAULT_PATIENCE_EVALUATIONS // ga.size)

    found: list[tuple[str, np.ndarray, float]] = []  # chains the searches over ideals found

    def keep(source: str, placement: np.ndarray | None) -> None:
        if placement is not None:
            found.append((source, placement, evaluate(problem, placement).max_load))

    def best_known() -> float:
        return min([ga.best_value] + [value for _, _, value in found])

    def reached_bound() -> bool:
        # The MIP bounds are lowered by a relative MIP_SAFETY for solver tolerances: a value
        # within that of the bound is optimal as far as floating point can tell.
        return best_known() <= lower * (1 + _OPTIMAL_TOLERANCE) + 1e-15

    def run_ga() -> None:
        if finished:
            return
        if not ga.initialised:
            if not ga.initialise(_structured_orders(search)):
                return
        while True:
            if reached_bound():
                finished.append("reached the lower bound")
                return
            if generations is not None and ga.generation >= generations:
                finished.append("generation cap")
                return
            if patience is not None and ga.stalled >= patience:
                finished.append(f"{patience} generations without improvement")
                return
            if not ga.step():
                return
            if progress is not None:
                progress(f"slicegraph: generation {ga.generation}, best {ga.best_value:.6g}",
                         min(1.0, (time.perf_counter() - started) / time_limit))

    run_ga()
    bounds_end = started + _BOUNDS_END * time_limit
    phase = bounds_end - time.perf_counter()
    mip_bounds = tuple(b for b in bounds
                       if b not in ("combinatorial", "window", "levels", "covering"))
    # The long bound phase: the level search and the covering bound (either named) have time.
    long_phase = (("covering" in bounds or "levels" in bounds)
                  and COVERING_SHARE * (1 - WINDOW_SHARE) * phase >= COVERING_LEAST_SECONDS)

    def window(seconds: float) -> None:
        nonlocal lower
        if "window" not in bounds or reached_bound() or seconds <= 0.01:
            return
        t0 = time.perf_counter()
        value, run = window_bound.window_bound(problem, seconds, best_known(), groups, lower)
        bound_results["window"] = contiguous.BoundResult(
            value, "skipped" if "skipped" in run else "optimal", time.perf_counter() - t0,
            details=run)
        lower = max(lower, value)

    def mips(seconds: float) -> None:
        nonlocal lower
        if not mip_bounds or reached_bound() or seconds <= 0.05:
            return
        if progress is not None:
            progress("slicegraph: lower bounds (MIP)", None)
        computed = contiguous.lower_bounds(problem, seconds, groups, which=mip_bounds,
                                           target=ga.best_value)
        bound_results.update(computed)
        # An infinite bound (a relaxation with no solution) only serves the infeasibility
        # message below; the GA's stopping rule uses the finite ones.
        lower = max([lower] + [r.value for r in computed.values() if math.isfinite(r.value)])

    if not long_phase:
        # The cut-window bound first: max-flows only, and its value is the MIPs' floor.
        window(WINDOW_SHARE * phase)
        mips(bounds_end - time.perf_counter())
    else:
        # The MIPs first (the heaviest block proves in seconds what the cut windows take tens
        # of seconds to: RandWire, k = 16), then the covering bound, which hands back the time
        # it cannot use (no level certified in COVERING_PROBE of it: NASNet-A, T5), then the
        # cut windows on at least WINDOW_SHARE_LEAST of the phase and whatever was handed back.
        mips((1 - COVERING_SHARE) * (1 - WINDOW_SHARE) * phase)
        seconds = bounds_end - WINDOW_SHARE_LEAST * phase - time.perf_counter()
        if "levels" in bounds and seconds > 0.05 and not reached_bound():
            result, placement = levels.level_bound(problem, LEVEL_SHARE * seconds, groups,
                                                   lower, ga.best_value, progress)
            bound_results["levels"] = result
            lower = max(lower, result.value)
            keep("from_level_search", placement)
        # The beam search looks for a better chain (it stops at once where the level search
        # closed the gap): the covering bound's levels start from the best value known.
        seconds = bounds_end - WINDOW_SHARE_LEAST * phase - time.perf_counter()
        if seconds > 0.05 and not reached_bound():
            keep("from_beam_search", levels.beam_placement(
                problem, BEAM_SHARE * seconds, groups, best_known(), progress, lower)[1])
        seconds = bounds_end - WINDOW_SHARE_LEAST * phase - time.perf_counter()
        if "covering" in bounds and seconds > 0.05 and not reached_bound():
            if progress is not None:
                progress("slicegraph: lower bound (covering LP)", None)
            result = covering.covering_bound(problem, seconds, groups, lower, best_known(),
                                             certify_within=COVERING_PROBE * seconds)
            bound_results["covering"] = result
            lower = max(lower, result.value)
        window(bounds_end - time.perf_counter())
    # The answer is rebuilt once more at the end (about two evaluations): leave room for it.
    phase_end[0] = started + _GA_END * time_limit - 2 * ga.eval_seconds
    run_ga()

    stats = {
        "search_space": "contiguous",
        "groups": groups.num_groups,
        "searched_units": search.num_groups,
        "device_types": len(types.devices),
        "seed": seed,
        "population": ga.size,
        "generations": ga.generation,
        "evaluations": ga.evaluations,
        "stopped": finished[0] if finished else "time limit",
    }
    if ga.best_rank is None or not math.isfinite(ga.best_value):
        proven = any(r.value == math.inf for r in bound_results.values())
        raise InfeasibleError(
            f"no contiguous placement of the {problem.num_ops} operators on "
            f"{problem.device_names} fits the memory capacities and pins"
            + (
                " (proven by the lower-bound relaxation)"
                if proven
                else f"; none was found in {ga.evaluations} topological orders either (not "
                "proven infeasible: give more time, or check capacities and pins)"
            )
        )
    unit_of = ga.best_rank[search.group_of]
    value, blocks = slicer.best(slicer.block_costs(unit_of, search.num_groups), reconstruct=True)
    device_of = slicer.assign(unit_of, blocks)
    winner = None
    for source, placement, found_value in found:  # chains the level and beam searches found
        if found_value < value:
            value, device_of, winner = found_value, placement, source
            blocks = np.unique(device_of)
    if winner is not None:
        stats[winner] = True
    # The local search moves groups across the cuts the slicing chose (a slicing cuts one order
    # only), then the chain model hinted with its placement searches for a better chain.
    if value > lower * (1 + _OPTIMAL_TOLERANCE):
        polish: dict = {}
        device_of, _, _ = anytime.improve(problem, device_of, lower,
                                          started + _POLISH_END * time_limit, groups, polish,
                                          seed=seed, chain_model="chain" in bounds)
        stats["polish"] = polish
        for run in polish.get("chain_models", []):  # its own bound, as proven (checked below)
            bound_results["hinted chain"] = contiguous.BoundResult(run["bound"], run["status"],
                                                                   run["seconds"])
    stats["bounds"] = {
        name: {"value": r.value, "status": r.status, "seconds": r.seconds, "mips": r.mips}
        for name, r in bound_results.items()
    }
    measured = evaluate(problem, device_of).max_load
    # A bound above a placement found would be a bug (or a solver's numerical failure): never let
    # one claim optimality, and say so in the stats.
    limit = measured * (1 + _OPTIMAL_TOLERANCE) + 1e-12
    conflicts = [name for name, r in bound_results.items() if r.value > limit]
    if conflicts:
        stats["bound_conflict"] = conflicts
    proven = [r.value for r in bound_results.values() if r.value <= limit]
    lower = min(measured, max(proven, default=0.0))
    stats.update(
        blocks=len(blocks),
        optimal=bool(measured <= lower * (1 + _OPTIMAL_TOLERANCE) + 1e-15),
        seconds=time.perf_counter() - started,
    )
    return Placement(
        device_of=device_of,
        objective="throughput",
        value=measured,
        lower_bound=lower,
        method="slicegraph",
        stats=stats,
    )
