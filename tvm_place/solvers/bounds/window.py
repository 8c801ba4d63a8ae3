r"""The cut-window bound: a lower bound on the best *contiguous* max-load that charges the
transfers at every cut of the pipeline, by minimum cuts and a dynamic program over the work
before each cut (issue 17).

Why another bound. On wide graphs (NASNet-A cells, Inception at operator granularity) the exact
program's ideals do not fit, and the bounds at hand either ignore communication (total work /
``K``), charge it to one block only (:mod:`.contiguous`' heaviest block), or need a model of all
``K`` blocks that CP-SAT does not close in the time (the chain model). Every block of a pipeline
but the first pays for the values it receives and every block but the last for those it sends;
this bound proves those charges, cut by cut, and where the cheap cuts lie.

Setting (as :mod:`.contiguous`): groups ``g`` numbered topologically, least costs ``c*[g]`` (the
device that fits ``g`` fastest) and ``t*[u]`` (least transfer time over the devices), ``W = sum_g
c*[g]``, ``K`` devices; a contiguous placement is a chain of ``K`` blocks ``B_1 .. B_K`` whose
prefixes ``I_b`` are ideals (``I_0 = {}``, ``I_K = V``); ``anc(g)`` / ``desc(g)`` are ``g`` with
its ancestors / descendants, ``c*(X)`` sums over a set. Only for graphs whose contiguity edges
are all their edges (inference graphs: every value flows forward), where ``∂I``, the operators of
``I`` with a consumer outside ``I``, is exactly what crosses the cut ``I``.

The relaxation. Take a contiguous placement of max-load ``T``.

1. Call ``gap(u) = max_h W - c*(desc(h)) - c*(anc(g))`` over the consumer groups ``h`` of an
   operator ``u`` of group ``g``: the most work that can lie between ``u`` and a consumer.
   Block ``b`` with ``c*(B_b) > gap(u)`` *sends* ``u`` if ``u ∈ ∂I_b`` (were ``u`` in
   ``I_{b-1}``, ``B_b`` would lie between ``anc(g)`` and the complement of ``desc(h)`` for a
   consumer ``h`` outside ``I_b``: ``c*(B_b) <= gap(u)``), and *receives* ``u`` if
   ``u ∈ ∂I_{b-1}`` (likewise every consumer outside ``I_{b-1}`` is then in ``B_b``). The two
   sets are disjoint (``B_b`` against ``I_{b-1}``). So with levels ``0 = δ_0 < δ_1 < ..`` and
   ``S_ℓ = {u : gap(u) < δ_ℓ}``, a block with ``c*(B_b) >= δ_ℓ`` carries at least
   ``c*(B_b) + t*(S_ℓ ∩ ∂I_b) + t*(S_ℓ ∩ ∂I_{b-1})``, and that is ``<= T``.
2. Split ``[0, W]`` into intervals ``[l_j, r_j]`` at the values ``c*(anc(g))`` and
   ``W - c*(desc(g))``. An ideal with its work in interval ``j`` holds every group with
   ``W - c*(desc(g)) < l_j`` (leaving one out leaves out its descendants) and none with
   ``c*(anc(g)) > r_j``; ``φ^ℓ_j``, the least ``t*(S_ℓ ∩ ∂I)`` over the ideals between those two
   sets, is a minimum s-t cut (below).
3. With ``x_b = c*(I_b)`` in interval ``j_b`` (``x_0 = 0`` and ``x_K = W`` in intervals of their
   own, ``φ = 0`` there), block ``b`` has ``c*(B_b) = x_b - x_{b-1} >= l_{j_b} - r_{j_{b-1}}``;
   take ``ℓ(j_{b-1}, j_b)``, the highest level at most that. Block ``b`` carries at least
   ``x_b - x_{b-1} + φ^ℓ_{j_b} + φ^ℓ_{j_{b-1}}``.

So if no nondecreasing ``x_1 .. x_{K-1}`` in intervals ``j_1 <= .. <= j_{K-1}`` keeps every block's
term ``<= T``, every contiguous placement has max-load ``> T``. The program deciding it keeps, per
block and interval, the largest reachable ``x`` (a larger one never hurts: the terms bound
differences from above, and the levels depend on the intervals only)::

    R_0 = 0 at the start interval
    R_b[j] = min(r_j, max_{j' <= j} (R_{b-1}[j'] - φ^ℓ(j',j)_{j'} - φ^ℓ(j',j)_j) + T)   (where >= l_j)
    feasible iff  max_{j'} (R_{K-1}[j'] - φ^ℓ(j',end)_{j'}) + T >= W

``O(K J^2)`` per ``T`` for ``J`` intervals (NumPy); the bound is the least feasible ``T``, found by
bisection between a bound held and the value of a placement (whose chain is feasible, so the
bound never exceeds it). The levels are ``0`` and ``LEVELS - 1`` quantiles of the gaps below
``2 W / K`` (blocks of more work are rare: a coarser ladder only weakens the bound).

Refinement (:func:`window_bound`): the intervals start as ``COARSE_INTERVALS`` runs of elementary
ones, a cut per level each (a run's forced sets are those of its ends: valid, weaker); the chain
the program finds just above the bound shows which intervals hold it down, and those are refined:
a run split into its elementary intervals; an elementary interval whose free groups (neither
forced in nor out; their predecessors are free or forced in) have at most ``EXACT_IDEALS`` ideals
replaced by the works those ideals have in it, each a point with its exact least charges (``x``
then takes only works some ideal has); one with more (where ``REFINE_WITH_CP_SAT``; otherwise
marked refined with its plain cuts, halved all the same) given CP-SAT's least charge of the ideals
whose work lies in the interval (the least cut's ideal may lie outside it), a Boolean per free
group and per cut sender, the work window with weights rounded so that every such ideal stays
feasible, its proven objective bound under ``WINDOW_SECONDS``. A CP-SAT window on the chain
wider than ``SPLIT_WIDTH`` of ``upper`` is halved by work, each half charged again at the levels
the chain uses and those of the window (its ideals are a subset: its charge only rises). On
NASNet-A an elementary interval inside a cell spans up to a tenth of a block's work, and its
least cut may lie well below the cuts near the work the chain ends on (nasnet-a-large on 8
devices: halving raised the bound from 0.924 to 0.943 of the best value, 30 s, load about 2).
The bisection runs again, until the chain uses only points and CP-SAT windows narrower than
that, charged at the levels it uses, or the time is spent. Refining only raises ``φ``.

Pairs: a block's two cuts charged together. Each cut's charge above is the least over its
window alone, and the program may end a block at the cheapest ideal of one window and start the
next at the cheapest of another, where the block between two such ideals pays more: on
NASNet-A the program's chain cuts inside cells, where a block's two cuts together pay more than
each cut's least. So a block from interval ``j'`` to interval ``j`` is also charged
``P(j', j)``, a lower bound on the least load ``f(I \ J) = c*(I \ J) + t*(sent) + t*(received)``
(each send and receive at its least transfer time, the rule of :mod:`.contiguous`, section 6)
over the ideals ``J ⊆ I`` with ``c*(J)`` in a window holding interval ``j'`` and ``c*(I)`` in
one holding ``j``, and the program forbids the block where ``P(j', j) > T``::

    R_b[j] = min(r_j, max_{j' <= j, P(j', j) <= T} (...) + T)   (as above otherwise)

*Validity.* Take a contiguous placement of max-load ``T`` and its chain, ``x_b`` in ``j_b`` as
above. Block ``b`` is ``I_b \ I_{b-1}`` with ``I_{b-1} ⊆ I_b`` ideals whose works lie in
intervals ``j_{b-1}`` and ``j_b``, hence in every priced pair of windows holding them, so
``P(j_{b-1}, j_b) <= f(B_b) <=`` its load ``<= T``: no block of the chain is forbidden, the
chain stays feasible and the bound stays at most ``T`` (what the program keeps per interval,
the largest ``x``, is unchanged in kind: the forbidden blocks depend on the intervals only).
``P`` is CP-SAT's proven bound on a model of the block (Booleans for ``J`` and ``I`` per group,
the groups forced in or out of the windows fixed, the ideal and nesting implications, a
Boolean per sender for its send and one for its receive with the clauses of
:mod:`.contiguous`' section 4, the work windows with the weights rounded so that
every ideal of a window stays feasible as in the CP-SAT windows, costs rounded down), capped
at ``upper`` (where no block reaches the cap, ``P`` is the cap: still at most every such
block's load). A larger window only lowers ``P``, so a pair priced on windows holding
intervals ``j', j`` prices every transition between intervals inside them (the largest price).
*Refinement:* where the program's chain has a block between two intervals that are elementary
or finer (not runs of several) and not priced, the pair of its intervals is priced
(``PAIR_SECONDS`` at most); where that forbids it at the chain's ``T``, the windows widened by
``PAIR_WIDEN`` of ``upper`` on each side are priced too, so that the chain's next try between
neighbouring intervals is forbidden at once where the widened price exceeds ``T``. When nothing
else is left, the pairs of the chain whose CP-SAT time ran out are priced again with twice the
time, up to ``PAIR_MOST_SECONDS``. CP-SAT runs these models at linearization level 2: on five
blocks of the nasnet-a-mobile 8-device chain it proved each above the cap in 0.02 to 0.24 s,
where the default level proved two in 4 s and bounds of 0.40 to 0.44 ms for the others (cap
0.4995 ms). Measured from 0.4995 ms and 2.0024 ms on nasnet-a-mobile and nasnet-a-large with
8 devices (under /work/helpers/heavy, load 1.2 to 2.0), 40 s each: the bound rose from 0.4768
to 0.4821 ms (gap 4.55% to 3.49%; 0.4913 ms, 1.65%, in 100 s) and from 1.9757 ms (where it
stopped without pairs, previous session) to 2.0023 ms (1.33% to 0.008%). Pricing only blocks between intervals refined as far as they go left
mobile at 4.50% in 40 s (the windows take the time), pricing blocks between runs too at 3.95%.

*Speed* (issue 17, wide17d). Profiled on nasnet-a-mobile 8 devices from 0.4995 ms (100 s, load
about 1.2): 87 of the 100 s in CP-SAT's solves, building the models about 5 s; the pairs 69 s
(347 solves), the windows' CP-SAT charges 27 s (698 solves; 2 repeats in 500 in another run:
no cache).
Two cuts. (1) A price at most the bound proven (the bisection's bottom) forbids no block the
bisection tries, and a widened one at most ``T`` none of the chain's neighbours: CP-SAT stops at
the first block that light (its proven bound so far is still a valid price, and the price is
settled: never retried). (2) No CP-SAT windows by default (``REFINE_WITH_CP_SAT``): run side by
side for 60 s (load 2.4), with them 2.93%, without 1.83%; they help early (10 s: 5.45% against
9.05%) and then take the pairs' time. Without them, alone for 300 s (load about 1.5; gaps at
seconds of CPU): 3.95% at 20 s, 1.83% at 40 s, 0.98% at 60 s, 0.25% at 80 s, 0.02% at 100 s,
where it stopped with nothing left to refine (121 s, 1513 pair solves). Tried and measured
worse: pricing with the cap at ``T`` (a decision, re-priced where a later ``T`` passes it:
10.7% after 60 s), at most one block priced per round (7.6%), no widening (4.5%) or half the
widening (4.0%); CP-SAT's core-based and lower-bound-tree search on the pairs' models (1.5 and
3.3 times slower on 80 saved models), its symmetry and presolve settings (within 10%).
So dp within 120 s (the chain model's share cut too, :mod:`tvm_place.solvers.anytime`), under
the bench: nasnet-a-mobile 8 devices at 0.85% and 0.81% in two runs (3.25% before; the
wide table of docs/benchmarks.md). (3) The blocks of a round are priced in threads, one per core
(at most ``PRICING_THREADS``; CP-SAT's one-worker solves release the GIL): on the 2-core machine,
40 s from 0.744 of the best placement of a 120 s k = 16 run, one core (``taskset -c 0``) against
two (one run each, bench, load 0.7-1.5), nasnet-a-large 0.772 -> 0.812 (pair solves 370 -> 581),
nasnet-a-mobile 0.760 -> 0.807 (230 -> 406); one core in 80 s gave nasnet-a-large 0.812 too.

The minimum cut. Source side = the ideal. Arcs ``h -> g`` of infinite capacity for each group
edge ``g -> h`` (an ideal holding ``h`` holds ``g``); for each sender ``u`` of ``S_ℓ`` with
``t*[u] > 0``, a node ``s_u`` with ``g(u) -> s_u`` of capacity ``t*[u]`` and ``s_u -> h``
infinite for its consumer groups ``h`` (cut exactly when ``g(u)`` is in and some ``h`` out: the
send); the source feeds the groups forced in, the groups forced out drain to the sink (both
infinite); ``φ = inf`` where they conflict (no ideal has its work there). Capacities are costs
rounded down to ``scale / RESOLUTION``, which only lowers the bound; OR-Tools' ``SimpleMaxFlow``,
its arcs built once and their capacities reset per interval and level. An interval not reached
in the time limit keeps ``φ = 0``, which keeps the bound valid.

Validity uses nothing about memory, pins or device speeds beyond the least costs, so the bound
holds with heterogeneous devices too (it is weakest there). It is exact for nothing: each cut's
charge is the least over its interval, the pairs are priced only where the chain asks, and the
values that may skip a block are not charged.

Complexity: ``O(G^2 / 64)`` for the ancestor sets; ``LEVELS`` minimum cuts on ``O(G + n)`` nodes
and ``O(m)`` arcs per interval charged (``COARSE_INTERVALS`` first, at most ``2G + 1`` elementary
ones, CP-SAT on those refined), ``O(K J^2)`` per bisection step; each halving adds one interval.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ... import cores
from ...evaluate import contiguity_edges
from ...graph import PlacementProblem
from ..grouping import Groups, contract
from .contiguous import combinatorial_bound

#: Costs are rounded down to ``scale / RESOLUTION`` for the integer max-flow.
RESOLUTION = 1_000_000
#: The bisection stops once the interval is this small relative to its top.
TOLERANCE = 1e-4
#: Levels of block work (module docstring, 1), ``0`` included.
LEVELS = 8
#: Runs of elementary intervals the refinement starts from.
COARSE_INTERVALS = 64
#: Ideals of an interval's free groups listed at most, to know its works exactly.
EXACT_IDEALS = 5_000
#: Whether intervals with more ideals get CP-SAT's charge (``scripts/table_wide.py
#: --bound-variants`` measures the refinements against each other), and its time per level.
#: Off: with the pair charges the windows' CP-SAT time is better spent on pairs (module
#: docstring, pairs).
REFINE_WITH_CP_SAT = False
WINDOW_SECONDS = 0.5
#: CP-SAT windows on the program's chain wider than this share of ``upper`` are halved, each
#: half charged again (its ideals are a subset: the charge only rises).
SPLIT_WIDTH = 1e-3
#: CP-SAT's seconds per pair of windows priced (a block's least load), 0 to price none; the
#: shares of ``upper`` by which the windows of a block found too heavy are widened, in turn,
#: until the widened pair is too heavy too.
PAIR_SECONDS = 2.0
PAIR_WIDEN = (0.04, 0.01)
#: The blocks of a round are priced in up to this many threads (at most the cores the calling
#: thread may run on; a cap, since only two were measured: module docstring, speed).
PRICING_THREADS = 4
#: A pair whose price CP-SAT's time cut short is priced again, with twice the time, while the
#: program's chain still uses it and nothing else is left, up to this many seconds.
PAIR_MOST_SECONDS = 16.0
#: Seconds per (group, group) pair to build the ancestor sets and their work (measured on the
#: 2-core development machine, rounded up); the bound is skipped where that takes more than
#: half its time.
SETUP_SECONDS_PER_PAIR = 2e-8
#: Largest group count whose ancestor sets are built (``G^2`` bits).
MAX_GROUPS = 20_000


def applies(problem: PlacementProblem) -> bool:
    """Whether the bound covers ``problem``: every edge is a contiguity edge, two devices or more."""
    edges = problem.graph.edges
    return problem.num_devices >= 2 and np.array_equal(contiguity_edges(problem), edges)


def _closure_work(groups: Groups, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(c*(anc(g)), c*(desc(g)))`` for every group, from bitsets built in topological order."""
    G = groups.num_groups
    ancestors = [1 << g for g in range(G)]
    for g in range(G):
        for h in groups.successors[g]:
            ancestors[h] |= ancestors[g]
    descendants = [1 << g for g in range(G)]
    for g in reversed(range(G)):
        for h in groups.successors[g]:
            descendants[g] |= descendants[h]
    width = (G + 7) // 8

    def work(sets: list[int]) -> np.ndarray:
        out = np.empty(G)
        for start in range(0, G, 1024):
            chunk = sets[start:start + 1024]
            raw = np.frombuffer(b"".join(s.to_bytes(width, "little") for s in chunk), np.uint8)
            bits = np.unpackbits(raw.reshape(len(chunk), width), axis=1, bitorder="little")[:, :G]
            out[start:start + len(chunk)] = bits @ compute
        return out

    return work(ancestors), work(descendants)


def _least(model, seconds: float, deadline: float, linearization: int = 1,
           enough: float = -math.inf) -> tuple[float, bool]:
    """CP-SAT's proven bound on the least integer objective of ``model`` within ``seconds``
    (and by ``deadline``): ``inf`` where it is infeasible, 0 where nothing is proven; and
    whether it is settled: that least value (or infeasibility), or a solution of objective
    ``enough`` or less found (the search stops there: the caller has no use for a least value
    that low), not a bound cut short by the time. ``linearization``: CP-SAT's
    ``linearization_level`` (the pairs' models need 2, module docstring; the windows' were
    measured no faster with it)."""
    from ortools.sat.python import cp_model

    class _Enough(cp_model.CpSolverSolutionCallback):
        def __init__(self):
            super().__init__()
            self.reached = False

        def on_solution_callback(self):
            if self.objective_value <= enough:
                self.reached = True
                self.stop_search()

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.0, min(seconds, deadline - time.perf_counter()))
    solver.parameters.num_workers = 1
    solver.parameters.linearization_level = linearization
    callback = _Enough() if enough > -math.inf else None
    status = solver.solve(model, callback)
    if status == cp_model.INFEASIBLE:
        return math.inf, True
    if status == cp_model.OPTIMAL:
        return solver.objective_value, True
    feasible = status in (cp_model.FEASIBLE, cp_model.UNKNOWN)
    bound = solver.best_objective_bound if feasible else math.nan  # MODEL_INVALID: nothing
    return ((max(0.0, math.ceil(bound - 1e-6)) if math.isfinite(bound) else 0.0),
            callback is not None and callback.reached)


class _Windows:
    """The networks of the module docstring, built once; :meth:`charge` and :meth:`exact` give
    ``φ`` per level for an interval."""

    def __init__(self, problem: PlacementProblem, groups: Groups):
        from ortools.graph.python import max_flow

        G, K = groups.num_groups, problem.num_devices
        self.K = K
        fits = groups.fits(problem)
        self.compute = np.where(fits, groups.compute, np.inf).min(axis=1)
        self.transfer = problem.transfer_time.min(axis=1)
        self.total = W = float(self.compute.sum())
        self.anc_work, self.desc_work = _closure_work(groups, self.compute)
        scale = max(W / K, float(self.transfer.max(initial=0.0)), 1e-30)
        self.unit = scale / RESOLUTION
        comm = groups.comm
        cost = np.floor(self.transfer / self.unit).astype(np.int64)
        self.groups, self.operator_cost = groups, cost
        comm = comm[cost[comm[:, 0]] > 0] if len(comm) else np.zeros((0, 2), dtype=np.int64)
        senders, pair_sender = np.unique(comm[:, 0], return_inverse=True)
        pair_sender = np.asarray(pair_sender).reshape(-1)
        self.sender_cost = cost[senders]
        own = groups.group_of[senders]
        self.sender_group = own
        self.sender_consumers = (np.split(comm[:, 1], np.flatnonzero(np.diff(pair_sender)) + 1)
                                 if len(comm) else [])
        self.group_preds = [[] for _ in range(G)]
        for g, h in groups.edges.tolist():
            self.group_preds[h].append(g)
        # gap(u): the most work between u and one of its consumers (module docstring, 1).
        gap = W - self.desc_work[comm[:, 1]] - self.anc_work[groups.group_of[comm[:, 0]]]
        self.sender_gap = np.full(len(senders), -np.inf)
        np.maximum.at(self.sender_gap, pair_sender, gap)
        relevant = np.sort(self.sender_gap[self.sender_gap < 2 * W / K])
        ladder = (np.quantile(relevant, np.linspace(0, 1, LEVELS)[1:]) if len(relevant)
                  else np.zeros(0))
        # δ_ℓ just above a gap, so that the senders of that gap are short at that level.
        self.levels = np.unique(np.concatenate([[0.0], np.nextafter(ladder, np.inf)]))
        # A sender is short at level ℓ (its gap below δ_ℓ) from its sender level on.
        self.sender_level = np.searchsorted(self.levels, self.sender_gap, side="right")
        # c*(anc(g(u))), and the largest W - c*(desc(h)) over its consumer groups h (module
        # docstring, 1: the sends and receives a block pays whatever the gap).
        self.sender_anc = self.anc_work[own]
        self.sender_reach = np.full(len(senders), -np.inf)
        np.maximum.at(self.sender_reach, pair_sender, W - self.desc_work[comm[:, 1]])
        self.infinite = int(self.sender_cost.sum() + 1)
        flow = max_flow.SimpleMaxFlow()
        source, sink = G, G + 1
        send = G + 2 + np.arange(len(senders))
        edges = groups.edges
        tails = np.concatenate([edges[:, 1], send[pair_sender]]).astype(np.int32)
        heads = np.concatenate([edges[:, 0], comm[:, 1]]).astype(np.int32)
        if len(tails):
            flow.add_arcs_with_capacity(tails, heads, np.full(len(tails), self.infinite, np.int64))
        self.send_arcs = np.asarray(flow.add_arcs_with_capacity(
            own.astype(np.int32), send.astype(np.int32), np.zeros(len(senders), np.int64))
            if len(senders) else [], dtype=np.int64)
        self.in_arcs = np.asarray(flow.add_arcs_with_capacity(
            np.full(G, source, np.int32), np.arange(G, dtype=np.int32), np.zeros(G, np.int64)))
        self.out_arcs = np.asarray(flow.add_arcs_with_capacity(
            np.arange(G, dtype=np.int32), np.full(G, sink, np.int32), np.zeros(G, np.int64)))
        self.flow, self.source, self.sink = flow, source, sink
        self.max_flows = self.cp_solves = self.pair_solves = 0
        self.lock = threading.Lock()  # pair_load runs in threads

    def _set(self, arcs: np.ndarray, capacities: np.ndarray) -> None:
        if len(arcs):
            self.flow.set_arcs_capacity(arcs.astype(np.int32), capacities.astype(np.int64))

    def breakpoints(self) -> np.ndarray:
        """The ends of the elementary intervals: ``0``, ``W`` and every ``c*(anc(g))`` and
        ``W - c*(desc(g))`` in between (module docstring, 2)."""
        W = self.total
        points = np.unique(np.concatenate([[0.0, W], self.anc_work, W - self.desc_work]))
        return points[(points >= 0) & (points <= W)]

    def _forced(self, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
        slack = 1e-9 * max(self.total, 1e-30)
        return self.total - self.desc_work < low - slack, self.anc_work > high + slack

    def first_levels(self, low: float, high: float) -> np.ndarray:
        """``(2, senders)``: the lowest level from which each sender's cut counts on either
        side of a cut in ``[low, high]``: sent by the block that ends there (short, or its
        ancestors' work above ``low - δ_ℓ``: then it lies after the block's start), received
        by the block that starts there (short, or every consumer forced into that block:
        ``W - c*(desc(h)) < high + δ_ℓ``); module docstring, 1."""
        slack = 1e-9 * max(self.total, 1e-30)
        send = np.searchsorted(self.levels, low - self.sender_anc + slack, side="right")
        receive = np.searchsorted(self.levels, self.sender_reach - high + slack, side="right")
        return np.minimum(self.sender_level, np.stack([send, receive]))

    def charge(self, low: float, high: float, deadline: float,
               refine: frozenset = frozenset()) -> np.ndarray:
        """``φ`` of the interval ``[low, high]``, ``(2, levels)``: per side (sent, received)
        and level, the least cut of the ideals between its forced sets (``inf``: no ideal),
        raised at the levels of ``refine`` by CP-SAT's charge of the ideals whose work lies in
        the interval where the least cut's ideal lies outside it."""
        L = len(self.levels)
        phi = np.zeros((2, L))
        forced_in, forced_out = self._forced(low, high)
        if (forced_in & forced_out).any():
            return np.full((2, L), math.inf)
        self._set(self.in_arcs, np.where(forced_in, self.infinite, 0))
        self._set(self.out_arcs, np.where(forced_out, self.infinite, 0))
        slack = 1e-9 * max(self.total, 1e-30)
        first = self.first_levels(low, high)
        for side in range(2):
            for level in range(L):
                if time.perf_counter() > deadline:
                    break
                counted = first[side] <= level
                if not counted.any():
                    continue
                self._set(self.send_arcs, np.where(counted, self.sender_cost, 0))
                if self.flow.solve(self.source, self.sink) != self.flow.OPTIMAL:
                    continue  # nothing proven: 0
                self.max_flows += 1
                value = int(self.flow.optimal_flow())
                if value >= self.infinite:
                    return np.full((2, L), math.inf)
                phi[side, level] = value * self.unit
                cut = np.asarray(self.flow.get_source_side_min_cut(), dtype=np.int64)
                taken = float(self.compute[cut[cut < len(self.compute)]].sum())
                if (level in refine and REFINE_WITH_CP_SAT
                        and not low - slack <= taken <= high + slack):
                    phi[side, level] = max(phi[side, level], self._window_min(
                        counted, low, high, forced_in, forced_out, deadline))
        return np.maximum.accumulate(phi, axis=1)  # a higher level counts a superset

    def _window_min(self, counted: np.ndarray, low: float, high: float, forced_in: np.ndarray,
                    forced_out: np.ndarray, deadline: float) -> float:
        """A bound on the least cut of the ``counted`` senders over the ideals between the
        forced sets whose work lies in ``[low, high]``: CP-SAT's (module docstring, refinement);
        0 when it proves nothing, ``inf`` when no such ideal exists."""
        from ortools.sat.python import cp_model

        W = self.total
        free = np.flatnonzero(~forced_in & ~forced_out)
        index = {int(g): i for i, g in enumerate(free.tolist())}
        model = cp_model.CpModel()
        z = [model.new_bool_var("") for _ in range(len(free))]
        for g in free.tolist():
            for p in self.group_preds[g]:
                if p in index:
                    model.add_implication(z[index[g]], z[index[p]])
        unit = max(W, 1e-30) / RESOLUTION
        base = float(self.compute[forced_in].sum())
        work = self.compute[free]
        down, up = np.floor(work / unit).astype(np.int64), np.ceil(work / unit).astype(np.int64)
        # Every ideal of the interval has sum(down) <= floor(top) and sum(up) >= ceil(bottom).
        model.add(sum(int(w) * v for w, v in zip(down.tolist(), z))
                  <= int(math.floor((high - base) / unit * (1 + 1e-9) + 1e-6)))
        model.add(sum(int(w) * v for w, v in zip(up.tolist(), z))
                  >= int(math.ceil((low - base) / unit * (1 - 1e-9) - 1e-6)))
        terms, constant = [], 0
        for sender in np.flatnonzero(counted).tolist():
            own = int(self.sender_group[sender])
            if forced_out[own]:
                continue
            consumers = self.sender_consumers[sender].tolist()
            cost = int(self.sender_cost[sender])
            if any(forced_out[h] for h in consumers):  # cut whenever its group is in
                if own in index:
                    terms.append((cost, z[index[own]]))
                else:
                    constant += cost
                continue
            open_consumers = [z[index[h]] for h in consumers if h in index]
            if not open_consumers:
                continue  # every consumer forced in: never cut
            cut = model.new_bool_var("")
            for consumer in open_consumers:
                model.add_bool_or([consumer, cut] + ([~z[index[own]]] if own in index else []))
            terms.append((cost, cut))
        model.minimize(sum(cost * var for cost, var in terms))
        bound, _ = _least(model, WINDOW_SECONDS, deadline)
        self.cp_solves += 1
        return math.inf if math.isinf(bound) else (bound + constant) * self.unit

    def pair_load(self, start: tuple[float, float], end: tuple[float, float], deadline: float,
                  cap: float, seconds: float, enough: float = -math.inf) -> tuple[float, bool]:
        """A lower bound on the least load of a block ``I \\ J`` whose start ``J`` has its work
        in ``start`` and whose end ``I`` has its work in ``end``, ``(low, high)`` each (module
        docstring, pairs): CP-SAT's proven bound within ``seconds`` (``cap`` and above where no
        such block reaches ``cap``; 0 where it proves nothing), and whether it is settled: that
        least load (rounded), above ``cap``, or a block of load ``enough`` or less found (the
        search stops there), not a bound cut short by the time."""
        from ortools.sat.python import cp_model

        unit = self.unit
        J_in, J_out = self._forced(*start)
        I_in, I_out = self._forced(*end)
        I_in, J_out = I_in | J_in, J_out | I_out  # J ⊆ I
        if (J_in & J_out).any() or (I_in & I_out).any():
            return math.inf, True  # no such pair of ideals
        model = cp_model.CpModel()
        # Per group its membership of J and of I: 1, 0 (forced) or a Boolean (free); the forced
        # sets are closed under predecessors (J, I) and successors (not J, not I), so only free
        # groups need the ideal constraints.
        J = [1 if i else 0 if o else model.new_bool_var("") for i, o in zip(J_in, J_out)]
        I = [1 if i else 0 if o else model.new_bool_var("") for i, o in zip(I_in, I_out)]
        for g, h in self.groups.edges.tolist():
            for X in (J, I):
                if not isinstance(X[h], int) and not isinstance(X[g], int):
                    model.add_implication(X[h], X[g])
        B = []  # [g in I \ J]: 1, 0 or a Boolean
        for j, i in zip(J, I):
            if isinstance(j, int) and isinstance(i, int):
                B.append(i - j)
                continue
            if not isinstance(j, int) and not isinstance(i, int):
                model.add_implication(j, i)
            y = model.new_bool_var("")
            model.add(y == i - j)
            B.append(y)
        down = np.floor(self.compute / unit).astype(np.int64).tolist()
        up = np.ceil(self.compute / unit).astype(np.int64).tolist()
        for X, (low, high) in ((J, start), (I, end)):
            # As in the CP-SAT windows: every ideal of the window stays feasible.
            for weights, sign, bound in ((down, 1, math.floor(high / unit * (1 + 1e-9) + 1e-6)),
                                         (up, -1, -math.ceil(low / unit * (1 - 1e-9) - 1e-6))):
                fixed = sum(w for w, x in zip(weights, X) if isinstance(x, int) and x)
                free = [(w, x) for w, x in zip(weights, X) if not isinstance(x, int)]
                if not free:
                    if sign * fixed > bound:
                        return math.inf, True
                    continue
                model.add(sign * cp_model.LinearExpr.weighted_sum(
                    [x for _, x in free], [w for w, _ in free]) <= bound - sign * fixed)
        constant = sum(w for w, y in zip(down, B) if isinstance(y, int) and y)
        terms = [(y, w) for w, y in zip(down, B) if not isinstance(y, int) and w > 0]

        def holds(x, value: int):
            """``x == value`` as True, False or a literal."""
            return x == value if isinstance(x, int) else (x if value else ~x)

        for sender, consumers in enumerate(self.sender_consumers):
            own = int(self.sender_group[sender])
            for side in ((1, 0), (0, 1)):  # sent: own in B, a consumer not; received: reverse
                conditions = [(holds(B[own], side[0]), holds(B[h], side[1]))
                              for h in consumers.tolist()]
                if any(x is True and y is True for x, y in conditions):
                    constant += int(self.sender_cost[sender])  # charged whatever is free
                    continue
                clauses = [[~x for x in pair if x is not True] for pair in conditions
                           if not any(x is False for x in pair)]
                if not clauses:
                    continue
                charged = model.new_bool_var("")
                for clause in clauses:
                    model.add_bool_or([charged] + clause)
                terms.append((charged, int(self.sender_cost[sender])))
        top = int(math.floor(cap / unit * (1 + 1e-9)))
        if constant > top:
            return (top + 1) * unit, True
        load = cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [c for _, c in terms])
        model.add(load <= top - constant)
        model.minimize(load)
        bound, exact = _least(model, seconds, deadline, linearization=2,
                              enough=math.floor(enough / unit) - constant
                              if math.isfinite(enough) else enough)
        with self.lock:
            self.pair_solves += 1
        if math.isinf(bound):  # every such block's load is above the cap
            return (top + 1) * unit, True
        return (bound + constant) * unit, exact

    def exact(self, low: float, high: float, deadline: float,
              cap: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Every work in ``[low, high]`` of an ideal between the interval's forced sets, with the
        least charge per level among those ideals of that work: ``(works, charges)``, charges
        ``(levels, works)``, found by listing the ideals of the free groups. ``None`` where
        there are more than ``cap`` of them or the time runs out."""
        slack = 1e-9 * max(self.total, 1e-30)
        forced_in, forced_out = self._forced(low, high)
        L = len(self.levels)
        if (forced_in & forced_out).any():
            return np.zeros(0), np.zeros((2, L, 0))
        free = np.flatnonzero(~forced_in & ~forced_out).tolist()  # topological: ascending
        bit = {g: i for i, g in enumerate(free)}
        base = float(self.compute[forced_in].sum())
        work = [float(self.compute[g]) for g in free]
        need = [sum(1 << bit[p] for p in self.group_preds[g] if p in bit) for g in free]
        # Senders whose cut depends on the free groups: (cost, the first level it counts at when
        # sent and when received, own bit or -1 when forced in, consumer bits, whether a
        # consumer is forced out).
        first = self.first_levels(low, high)
        senders = []
        for index in np.flatnonzero(first.min(axis=0) < L).tolist():
            own = int(self.sender_group[index])
            if forced_out[own]:
                continue
            consumers = self.sender_consumers[index]
            outside = bool(forced_out[consumers].any())
            mask = sum(1 << bit[h] for h in consumers.tolist() if h in bit)
            if not outside and not mask:
                continue  # every consumer forced in: never cut
            senders.append((int(self.sender_cost[index]), int(first[0, index]),
                            int(first[1, index]), bit.get(own, -1), mask, outside))
        # Work the free groups from the i-th on could still add: ideals that cannot reach
        # ``low`` even with all of it are dropped as they go.
        rest = np.concatenate([np.cumsum(work[::-1])[::-1], [0.0]]).tolist()
        ideals = [(0, base)]  # (bits of the free groups taken, work); grown group by group
        for i in range(len(free)):
            grown = [(m | 1 << i, w + work[i]) for m, w in ideals if m & need[i] == need[i]]
            ideals = [(m, w) for m, w in ideals + grown
                      if w <= high + slack and w + rest[i + 1] >= low - slack]
            if len(ideals) > cap or time.perf_counter() > deadline:
                return None
        best: dict[float, np.ndarray] = {}
        for mask, w in ideals:
            if w < low - slack:
                continue
            by_level = np.zeros((2, L + 1), dtype=np.int64)
            for price, sent, received, own, consumers, outside in senders:
                if (own < 0 or mask >> own & 1) and (outside or consumers & ~mask):
                    by_level[0, sent] += price
                    by_level[1, received] += price
            charges = np.cumsum(by_level, axis=1)[:, :L]  # level ℓ: the senders counted by ℓ
            best[w] = np.minimum(best[w], charges) if w in best else charges
        works = np.array(sorted(best))
        charges = (np.stack([best[w] for w in works.tolist()], axis=2) * self.unit
                   if len(works) else np.zeros((2, L, 0)))
        return works, charges


class _Program:
    """The program of the module docstring over fixed intervals: ``lows``, ``highs`` (a point
    where they are equal) and ``phi`` ``(2, levels, J)`` (sent, received), with a start and an
    end interval added."""

    def __init__(self, levels: np.ndarray, lows: np.ndarray, highs: np.ndarray, phi: np.ndarray,
                 W: float, K: int):
        self.W, self.K = W, K
        self.lows = np.concatenate([[0.0], lows, [W]])
        self.highs = np.concatenate([[0.0], highs, [W]])
        L = len(levels)
        phi = np.concatenate([np.zeros((2, L, 1)), phi, np.zeros((2, L, 1))], axis=2)
        # The level of a block from interval j' to interval j: the highest δ_ℓ at most the
        # least work between them, l_j - r_j' (none where that is negative: nothing is
        # charged); it receives at j' and sends at j.
        least = self.lows[None, :] - self.highs[:, None]
        level = np.maximum(np.searchsorted(levels, least, side="right") - 1, 0)
        columns = np.arange(len(self.lows))
        cost = -(phi[1, level, columns[:, None]] + phi[0, level, columns[None, :]])
        cost[least < 0] = 0.0
        dead = np.isinf(phi[0, 0])  # intervals where no ideal has its work
        cost[dead[:, None] | dead[None, :]] = -np.inf
        cost[np.tril_indices(len(self.lows), -1)] = -np.inf  # j' <= j only
        cost[np.isnan(cost)] = -np.inf
        self.cost, self.level = cost, level
        self.pair = np.zeros_like(cost)  # the least load of a block from j' to j (pairs)

    def price(self, pairs: list[tuple[float, float, float, float, float]]) -> None:
        """Each pair of windows ``(start low, start high, end low, end high, least load)``
        priced, as the least load of every block from an interval inside its start window to
        one inside its end window (the intervals are in order of work, so those inside a
        window are a run of them)."""
        slack = 1e-9 * max(self.W, 1e-30)
        for low0, high0, low1, high1, load in pairs:
            a0 = np.searchsorted(self.lows, low0 - slack, side="left")
            b0 = np.searchsorted(self.highs, high0 + slack, side="right")
            a1 = np.searchsorted(self.lows, low1 - slack, side="left")
            b1 = np.searchsorted(self.highs, high1 + slack, side="right")
            block = self.pair[a0:b0, a1:b1]
            np.maximum(block, load, out=block)

    def blocks(self, chain: list[int]) -> list[tuple[float, float, float, float]]:
        """The windows of each block of ``chain``: ``(start low, start high, end low, end
        high)``."""
        stops = [0] + [j + 1 for j in chain] + [len(self.lows) - 1]
        return [(float(self.lows[a]), float(self.highs[a]), float(self.lows[b]),
                 float(self.highs[b])) for a, b in zip(stops[:-1], stops[1:])]

    def levels_used(self, chain: list[int]) -> dict[int, set[int]]:
        """Per interval of ``chain``, the levels of the two blocks it ends and starts."""
        stops = [0] + [j + 1 for j in chain] + [len(self.lows) - 1]
        used: dict[int, set[int]] = {}
        for b in range(1, len(stops) - 1):
            j = stops[b]
            used.setdefault(j - 1, set()).update(
                {int(self.level[stops[b - 1], j]), int(self.level[j, stops[b + 1]])})
        return used

    def chain(self, T: float) -> list[int] | None:
        """The intervals (indices into the given ones) of a chain whose every block's term is
        ``<= T``, or ``None`` where there is none."""
        J2 = len(self.lows)
        reach = np.full(J2, -np.inf)
        reach[0] = 0.0
        choices = []
        cost = np.where(self.pair > T, -np.inf, self.cost)  # no block lighter than T there
        for _ in range(1, self.K):
            options = reach[:, None] + cost  # (j', j)
            choice = options.argmax(axis=0)
            best = options[choice, np.arange(J2)]
            reach = np.minimum(self.highs, best + T)
            reach[reach < self.lows] = -np.inf
            reach[0] = reach[-1] = -np.inf  # start and end are no cut
            choices.append(choice)
        final = reach + cost[:, -1]
        if not np.isfinite(final).any() or final.max() + T < self.W:
            return None
        chain = [int(final.argmax())]
        for choice in reversed(choices[1:]):
            chain.append(int(choice[chain[-1]]))
        return [j - 1 for j in chain[::-1]]


def window_bound(problem: PlacementProblem, time_limit: float, upper: float,
                 groups: Groups | None = None, floor: float = 0.0) -> tuple[float, dict]:
    """The cut-window bound (module docstring) within ``time_limit`` seconds: ``(bound, stats)``.

    ``upper``: the max-load of a placement at hand (the bisection's top; the bound never exceeds
    it); ``floor``: a bound already held (its bottom). Returns at least ``floor`` and the
    combinatorial bound, which is all it returns where the bound does not apply. The intervals
    are refined where the program's chain lies (module docstring, refinement)."""
    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    floor = max(floor, combinatorial_bound(problem, groups))
    stats: dict = {}
    if not applies(problem):
        stats["skipped"] = "not an inference graph (some edge is not a contiguity edge)"
    elif groups.num_groups > MAX_GROUPS:
        stats["skipped"] = f"more than {MAX_GROUPS} groups"
    elif groups.num_groups ** 2 * SETUP_SECONDS_PER_PAIR > 0.5 * time_limit:
        stats["skipped"] = "too little time to build the ancestor sets"
    elif not math.isfinite(upper) or upper <= floor:
        stats["skipped"] = "no placement above the bound held"
    if "skipped" in stats:
        return floor, stats
    windows = _Windows(problem, groups)
    points = windows.breakpoints()
    W, K, L = windows.total, windows.K, len(windows.levels)
    # Runs [a, b, state, φ, low, high, refined]: the works low .. high of elementary intervals
    # a .. b - 1 (points[a] .. points[b]); state 0: several, 1: one with its plain cuts, 2: a
    # window of one, CP-SAT's charges at the levels ``refined``, 3: one work (low = high) an
    # ideal of the interval has, with its exact least charges.
    ends = np.unique(np.linspace(0, len(points) - 1, min(len(points), COARSE_INTERVALS + 1))
                     .round().astype(np.int64))
    runs = [[int(a), int(b), 0 if b - a > 1 else 1, np.zeros((2, L)), float(points[a]),
             float(points[b]), frozenset()] for a, b in zip(ends[:-1], ends[1:])]
    for run in runs:
        if time.perf_counter() > deadline:
            break
        run[3] = windows.charge(run[4], run[5], deadline)

    def program() -> _Program:
        lows = np.array([r[4] for r in runs])
        highs = np.array([r[5] for r in runs])
        return _Program(windows.levels, lows, highs, np.stack([r[3] for r in runs], axis=2), W, K)

    def bisect(low: float, high: float) -> tuple[float, float, _Program]:
        """The bracket of the least feasible T: infeasible at ``low``, feasible at ``high``
        (``high`` first tried as a guess: refining may have made it infeasible)."""
        relaxation = program()
        relaxation.price(pairs)
        if high < upper and relaxation.chain(high) is None:
            low, high = high, upper
        while high - low > TOLERANCE * high:
            T = 0.5 * (low + high)
            if relaxation.chain(T) is None:
                low = T
            else:
                high = T
        return low, high, relaxation

    def refinable(run: list, levels: set[int]) -> bool:
        """Whether refining ``run`` may raise its charges at ``levels``: not yet refined, a
        CP-SAT window still wide, or one not charged by CP-SAT at a level the chain uses."""
        return run[2] < 2 or (run[2] == 2 and (run[5] - run[4] > SPLIT_WIDTH * upper
                                               or not levels <= run[6]))

    def price(block: tuple[float, float, float, float], bottom: float, T: float,
              seconds: float) -> tuple[list, tuple[float, float, bool] | None]:
        """Price the windows of a block of the chain at ``T`` (``seconds`` for CP-SAT); where
        that forbids the block, its windows widened too, to forbid the blocks between its
        neighbours (pairs). A price at most ``bottom`` (the bound proven) can forbid nothing
        the bisection tries, nor a widened one at most ``T`` the chain's neighbours: CP-SAT
        stops at a block that light. Returns the priced pairs of windows and the block's
        entry of ``priced`` (``None`` where the time is up); changes nothing of the bound's
        state but the solve count (the blocks of a round run in threads)."""
        if time.perf_counter() > deadline:
            return [], None
        start, end = block[:2], block[2:]
        load, proven = windows.pair_load(start, end, deadline, upper, seconds, enough=bottom)
        found = [(*block, load)]
        entry = (load, seconds, proven)
        if load <= T:
            return found, entry
        for share in PAIR_WIDEN:
            if time.perf_counter() > deadline:
                break
            m = share * upper
            wide = (max(0.0, start[0] - m), min(W, start[1] + m),
                    max(0.0, end[0] - m), min(W, end[1] + m))
            load, _ = windows.pair_load(wide[:2], wide[2:], deadline, upper, PAIR_SECONDS,
                                        enough=T)
            found.append((*wide, load))
            if load > T:
                break
        return found, entry

    pairs: list[tuple[float, float, float, float, float]] = []
    # Per block priced: (its least load, CP-SAT's seconds, whether it is settled: more time
    # cannot raise it usefully).
    priced: dict[tuple[float, float, float, float], tuple[float, float, bool]] = {}
    low, high, relaxation = bisect(floor, upper)
    rounds = halved = banned = 0
    while time.perf_counter() < deadline:
        chain = relaxation.chain(high)
        levels_used = relaxation.levels_used(chain or [])
        used = sorted({j for j in chain or () if refinable(runs[j], levels_used[j])},
                      reverse=True)
        # The blocks of the chain between elementary intervals or finer ones (not runs of
        # several) and not priced; where none, those whose price CP-SAT's time cut short, with
        # twice the time.
        ends = [None, *(chain or []), None]  # runs; None: the chain's start or end
        settled = [block for a, b, block in zip(ends[:-1], ends[1:],
                                                relaxation.blocks(chain or []))
                   if all(j is None or runs[j][2] > 0 for j in (a, b)) and PAIR_SECONDS > 0]
        unpriced = [(block, PAIR_SECONDS) for block in settled if block not in priced]
        if not used and not unpriced:
            unpriced = [(block, 2 * priced[block][1]) for block in settled
                        if not priced[block][2] and 2 * priced[block][1] <= PAIR_MOST_SECONDS]
        if not used and not unpriced:
            break
        rounds += 1
        for j in used:  # from the right, so that splitting keeps the indices to the left
            a, b, state, phi, start, stop, refined = runs[j]
            wanted = refined | levels_used[j]
            if state == 0:
                pieces = [[k, k + 1, 1, np.zeros((2, L)), float(points[k]), float(points[k + 1]),
                           frozenset()] for k in range(a, b)]
                for piece in pieces:
                    piece[3] = windows.charge(piece[4], piece[5], deadline)
                runs[j:j + 1] = pieces
            elif state == 2:  # halve a wide window; charge it at the levels wanted
                halves = ([(start, 0.5 * (start + stop)), (0.5 * (start + stop), stop)]
                          if stop - start > SPLIT_WIDTH * upper else [(start, stop)])
                halved += len(halves) - 1
                runs[j:j + 1] = [[a, b, 2, np.maximum(phi, windows.charge(x, y, deadline, wanted)),
                                  x, y, wanted] for x, y in halves]
            else:
                exact = windows.exact(start, stop, deadline, EXACT_IDEALS)
                if exact is None:  # too many ideals: CP-SAT's charges
                    runs[j][3] = np.maximum(phi, windows.charge(start, stop, deadline, wanted))
                    runs[j][2], runs[j][6] = 2, wanted
                else:  # each work an ideal of the interval has, as a point
                    works, charges = exact
                    runs[j:j + 1] = ([[a, b, 3, charges[:, :, i], float(x), float(x), frozenset()]
                                      for i, x in enumerate(works)]
                                     or [[a, b, 3, np.full((2, L), math.inf), start, start,
                                          frozenset()]])
            if time.perf_counter() > deadline:
                break
        # The blocks' CP-SAT solves (one worker each, the GIL released) on the calling thread's
        # cores, at most PRICING_THREADS.
        todo = [(block, low, high, seconds) for block, seconds in unpriced]
        with ThreadPoolExecutor(cores.threads(min(len(todo), PRICING_THREADS))) as pool:
            for (block, _), (found, entry) in zip(unpriced,
                                                  pool.map(lambda job: price(*job), todo)):
                if entry is not None:  # (None: the time was up)
                    pairs += found
                    priced[block] = entry
                    banned += entry[0] > high
        low, high, relaxation = bisect(low, high)
    stats.update(intervals=len(runs), elementary=len(points) - 1, levels=L, rounds=rounds,
                 halved=halved, pairs=len(priced), pairs_banned=banned,
                 pair_solves=windows.pair_solves,
                 max_flows=windows.max_flows, cp_solves=windows.cp_solves,
                 seconds=time.perf_counter() - started)
    # The max-flows work on costs rounded down; a relative safety covers float sums.
    return low * (1 - 1e-9), stats
