r"""The covering bound: the heaviest-block bound under weights that a covering LP chooses.

Setting and notation as in :mod:`tvm_place.solvers.bounds.contiguous`: ``K`` devices, ``G``
groups, a contiguous placement is a chain of ``K`` blocks ``B = I \ J`` (``J ⊆ I`` ideals),
``f(B)`` is a block's load with each cost at its least over the devices, ``OPT`` the best
contiguous max-load.

Weighted heaviest block
-----------------------
For any weights ``pi`` on the groups with ``P = sum_g pi[g] > 0``::

    OPT >= h(pi) = min { f(B) : B = I \ J a block, pi(B) >= P / K }.

*Validity.* An optimal chain's ``K`` blocks partition the groups, so their weights sum to ``P``
and some block has ``pi(B) >= P / K`` (negative weights allowed); its load is ``>= f(B)`` and
``<= OPT``. With ``pi`` the least compute this is the heaviest-block bound (contiguous, 6);
:func:`~tvm_place.solvers.bounds.contiguous.heaviest_block_bound` computes ``h`` for any weights
(one CP-SAT model of one block). On graphs whose communication is costly (RandWire, NASNet-A,
k = 16) the work is a poor choice: cheap blocks of ``1 / K`` of the work exist where the graph
is narrow, and prove nothing about the rest.

Choosing the weights: the covering LP
-------------------------------------
For a level ``L``, the blocks of load ``f(B) <= L`` and::

    z(L) = min sum_B x_B   s.t.  sum_{B ∋ g} x_B = 1 (every group g),  x >= 0
    dual:  max sum_g pi[g] s.t.  pi(B) <= 1 for every block with f(B) <= L.

A chain of max-load ``<= L`` is an integer solution with at most ``K`` nonempty blocks, so
``z(L) > K`` proves ``OPT > L``, and an optimal dual ``pi`` has ``P = z(L) > K``: every block with
``pi(B) >= P / K > 1`` then has ``f(B) > L``, so ``h(pi) > L``. The LP weights the groups that only
costly blocks can hold (the middle of a wide cell) rather than the work.

Column generation (Gilmore and Gomory 1961; Desrosiers and Lübbecke, "A primer in column
generation", 2005): the master LP over the blocks found so far (GLOP; an artificial column per
group keeps it feasible) gives the duals ``pi``; pricing looks for blocks with ``f(B) <= L`` and
``pi(B) > 1``:

1. intervals of topological orders of the groups (each interval is a block): for an order, the
   loads of all ``G^2 / 2`` intervals in ``O(G (G + n))`` NumPy time, kept for the pool of orders
   (the group numbering, random orders, and orders that keep each block CP-SAT found in one
   piece, so its neighbours are intervals too); the best interval from each start joins;
2. when the intervals offer none, the certificate's model (below) with the level as the cap:
   CP-SAT looks for a block under the level holding ``P / K`` of the weight on the
   certificate's time, and stops at the first it finds; that
   block prices out (``P / K > 1`` while the master's value exceeds ``K``; CP-SAT sees the
   weights rounded up, so a block that does not is dropped) and joins. An earlier
   pricing maximised ``pi(B)`` under ``f(B) <= L`` for 0.5 s; on RandWire (k = 16) it reported
   none where this search then found some in 0.8-8 s (RandWire-WS, one run: the levels looked
   converged when they were not, and the certificates spent their time finding those columns).

The first level lies ``FIRST_LEVEL`` of the way from ``floor`` (a bound held) to ``target`` (a
placement's value). Once CP-SAT proves there is no such block, the duals are certified: no
block holding the share under the cap proves the level itself. A certified level becomes the
floor and the next lies ``LEVEL`` of the way up to the lowest level that failed; a level whose
restricted master's value falls to ``K`` (then ``z(L) <= K``: it cannot be certified) becomes
that ceiling.
A level whose certificate runs out of time is tried once more with the same duals under a cap
``LEVEL`` of the way up from the best bound held (CP-SAT's proof time rises steeply with the
cap), then becomes the ceiling. The answer is the best certificate, or ``h(pi)`` for the last duals,
computed in what is left at the end (CP-SAT minimising the load, capped at the level): the
bound needs neither a converged LP nor a proof from pricing, since ``h`` is valid for any
``pi``; convergence only lets it reach the level. Weights reach CP-SAT coarsened to
``WEIGHT_RESOLUTION`` (still valid: any weights are).

Time: ``O(G (G + n))`` per order and ``O(G^2)`` per order per master solve (NumPy), one GLOP
solve per round, the CP-SAT searches in the loop on at most ``CERTIFICATE_SHARE`` of the time
each (on the worker ``CERTIFICATE_SUBSOLVERS`` names: the linear relaxation with cuts at every
node proves there is no block 5-10 times faster than CP-SAT's default portfolio on these dual
weights), and the last ``h(pi)`` on whatever is left where no level was certified. Memory:
``POOL_CELLS`` float32 interval loads, and the index pairs of those under the level (two int64
per pair).

Measured (the bound alone, 50 s, one run each on the 2-core machine under the bench lock, load
1.6-1.7 at the ends; the floor the best other bound of the Archer table's 120 s run of session
14, the target its best placement, 16 A100s), as a share of the best placement, before and
after the pricing and the final ``h(pi)`` above: RandWire-WS 0.759 -> 0.759, RandWire-BA
0.764 -> 0.827, RandWire-ER 0.709 -> 0.736. The gain rests on the last ``h(pi)`` finishing in
the time left, and it does not always: repeated later (load 1.8), this code gave 0.759, 0.764
and 0.709, as the old one did.

Session 20 (the certificate's worker, one CP-SAT call per pricing round, the loop to the end of
the time once a level is certified): the bound alone from the heaviest-block bound to the k = 16
table's answers (under the bench, load 0.2-1.9), RandWire-ER 0.827 in 101 s -> 0.879 in 19 s
(three levels certified at 3.6, 10.2 and 19.3 s, the fourth's columns not done in 60 s), WS 0.925
in 83 s (four levels). From a floor that puts the first level at 0.90 of the answer, RandWire-ER
certified it in 37 s (31 and 39 s in two runs with smoothed duals, not kept; not in 38 s in a
run under the profiler): the time is now the column generation's (CP-SAT 34 of 41 s there, 54
calls of 0.6 s, one column each), not the proofs'.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np

from ...graph import PlacementProblem
from ..grouping import Groups, contract
from .contiguous import (
    _senders,
    combinatorial_bound,
    heaviest_block_bound,
)
from .result import BoundResult

#: Each level lies this far from the highest certified one towards the lowest found
#: uncertifiable (at first: the floor and the placement's value). Less than halfway: a level
#: above the LP's limit costs a whole certificate's time to fail, one below it less to pass.
#: Measured in slicegraph at 120 s (k = 16, one run each, deterministic here: a repeat gave the
#: same; under the bench, load 1.0-1.6), RandWire-ER / -WS bound over answer at 0.2, 0.3, 0.4
#: and 0.5: 0.804 / 0.811, 0.829 / 0.836, 0.754 / 0.845, 0.754 / 0.778 (the last 0.5 before
#: session 19); but that rests on when a certificate ends: ER at 0.3 on 117.6 s gave 0.772, and
#: the k = 16 table (slicegraph on 117.6 s) gave 0.754 / 0.778 at both 0.3 and 0.5. 0.3 -> 0.2
#: in session 20, with CP-SAT's certificates on ``CERTIFICATE_SUBSOLVERS`` (levels far under the
#: limit then certify in 1-9 s, and the time goes to the last): slicegraph on 117.6 s, one run
#: each under the bench (load 1.2-1.7), RandWire-ER 0.879 -> 0.899, RandWire-WS 0.910 -> 0.909.
LEVEL = 0.2
#: The first level's distance (low: a level far under the LP's limit converges in fewer
#: columns).
FIRST_LEVEL = 0.3
#: Topological orders added per block CP-SAT finds (each keeps the block in one piece).
ORDERS_PER_BLOCK = 3
#: Share of the time a CP-SAT search (a column or the certificate) may take, and kept at the end
#: for the last ``h(pi)`` while no level is certified. 0.3 before session 16, 0.45 after (then
#: a certificate needed 20-30 s on RandWire, k = 16); 0.15 since session 20, where the
#: certificate's worker (``CERTIFICATE_SUBSOLVERS``) takes 1-3 s: at 0.45 the covering bound
#: stopped at 0.55 of its time and handed the rest to the cut windows, which proved nothing more.
CERTIFICATE_SHARE = 0.15
#: The least time left for which the last ``h(pi)`` is computed.
FINAL_LEAST_SECONDS = 1.0
#: CP-SAT's full-problem worker for the certificate's model: the linear relaxation with its cuts
#: at every node (on two workers CP-SAT runs its first-solution and neighbourhood searches beside
#: it). Measured on the certificates of a RandWire-ER covering run (k = 16, one run each, load
#: 1.6-2.6): a proof of no block 15.6 -> 1.6 s and 6.9 -> 1.2 s, a column found 15.0 -> 0.3 s
#: and 13.5 -> 1.5 s, the last ``h(pi)`` 14.8 -> 1.7 s, against CP-SAT's own portfolio on two
#: workers (those runs also named ``reduced_costs``, which two workers leave out: the same
#: set-up; ``max_lp`` on one worker alone: the second proof 1.0 s, the columns 0.3 and 1.3 s, the
#: last ``h(pi)`` 2.7 s, the first proof not tried). Not for the work's weights
#: (the heaviest-block bound): there it was slower (T5-base 1.2 -> 6.9 s, NASNet-A-large 2.2
#: -> 16.6 s).
CERTIFICATE_SUBSOLVERS = ("max_lp",)
#: Random topological orders in the first pool; intervals kept in all (float32 cells).
FIRST_ORDERS = 30
POOL_CELLS = 20_000_000
#: Interval columns added per master solve (the best from each start, best first).
COLUMNS_PER_ROUND = 100
#: A column prices out when ``pi(B) > 1 + EPSILON``.
EPSILON = 1e-6
#: Weights reach CP-SAT as integers up to this (:func:`_coarse`).
WEIGHT_RESOLUTION = 10_000
#: Cost of an artificial column (one per group) in the master.
ARTIFICIAL = 1000.0


class _Blocks:
    """The groups' least costs and the block-load rule over them (contiguous, notation)."""

    def __init__(self, problem: PlacementProblem, groups: Groups):
        self.G = groups.num_groups
        self.compute = groups.least_compute(problem)
        transfer = problem.transfer_time.min(axis=1)
        senders = _senders(groups)
        ops = np.array(sorted(senders), dtype=np.int64)
        self.sender_group = groups.group_of[ops]
        self.sender_cost = transfer[ops]
        pairs = [(i, h) for i, u in enumerate(ops.tolist()) for h in senders[u]]
        self.pair_sender = np.array([i for i, _ in pairs], dtype=np.int64)
        self.pair_group = np.array([h for _, h in pairs], dtype=np.int64)
        self.successors: list[list[int]] = [[] for _ in range(self.G)]
        self.predecessors: list[list[int]] = [[] for _ in range(self.G)]
        for g, h in groups.edges.tolist():
            self.successors[g].append(h)
            self.predecessors[h].append(g)

    def load(self, block: np.ndarray) -> float:
        """``f(B)`` for ``block`` a bool array over the groups."""
        inside = block[self.sender_group]
        reaches_in = np.zeros(len(inside), dtype=bool)
        reaches_out = np.zeros(len(inside), dtype=bool)
        np.logical_or.at(reaches_in, self.pair_sender, block[self.pair_group])
        np.logical_or.at(reaches_out, self.pair_sender, ~block[self.pair_group])
        moved = (inside & reaches_out) | (~inside & reaches_in)
        return float(self.compute[block].sum() + self.sender_cost[moved].sum())

    def order(self, rng: np.random.Generator, first: np.ndarray | None = None) -> np.ndarray:
        """A random topological order of the groups; with ``first`` (a block), its ancestors
        come first and then the block, so that the block is one interval."""
        rank = rng.random(self.G)
        if first is not None:
            ancestors = np.zeros(self.G, dtype=bool)
            stack = np.nonzero(first)[0].tolist()
            while stack:
                for q in self.predecessors[stack.pop()]:
                    if not ancestors[q] and not first[q]:
                        ancestors[q] = True
                        stack.append(q)
            rank += np.where(ancestors, 0, np.where(first, 1, 2))
        waiting = np.array([len(p) for p in self.predecessors])
        heap = [(rank[g], g) for g in range(self.G) if waiting[g] == 0]
        heapq.heapify(heap)
        out = []
        while heap:
            g = heapq.heappop(heap)[1]
            out.append(g)
            for h in self.successors[g]:
                waiting[h] -= 1
                if waiting[h] == 0:
                    heapq.heappush(heap, (rank[h], h))
        return np.array(out, dtype=np.int64)

    def interval_loads(self, order: np.ndarray) -> np.ndarray:
        """``loads[a, b] = f(order[a .. b])`` (``inf`` for ``b < a``), float32: a sender in the
        interval pays once some consumer lies after it; a sender before it, once its first
        consumer at or after ``a`` lies inside."""
        G = self.G
        position = np.empty(G, dtype=np.int64)
        position[order] = np.arange(G)
        sender_at = position[self.sender_group]
        consumer_at = position[self.pair_group]
        last = np.full(len(sender_at), -1, dtype=np.int64)
        np.maximum.at(last, self.pair_sender, consumer_at)
        work = np.concatenate([[0.0], np.cumsum(self.compute[order])])
        loads = np.full((G, G), np.inf, dtype=np.float32)
        for a in range(G):
            steps = np.zeros(G + 1)
            inside = sender_at >= a  # sends for b in [its position, its last consumer)
            np.add.at(steps, sender_at[inside], self.sender_cost[inside])
            np.add.at(steps, last[inside], -self.sender_cost[inside])
            before = (sender_at[self.pair_sender] < a) & (consumer_at >= a)
            first = np.full(len(sender_at), G, dtype=np.int64)
            np.minimum.at(first, self.pair_sender[before], consumer_at[before])
            reached = first < G  # received for every b from its first consumer on
            np.add.at(steps, first[reached], self.sender_cost[reached])
            loads[a, a:] = (work[a + 1:] - work[a]) + np.cumsum(steps)[a:G]
        return loads


class _Pool:
    """Topological orders, their intervals' loads, and the intervals of load ``<= L`` as
    index pairs (few beside ``G^2``: pricing reads only those)."""

    def __init__(self, blocks: _Blocks):
        self.blocks = blocks
        self.orders: list[np.ndarray] = []
        self.loads: list[np.ndarray] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.L = math.inf

    def add(self, order: np.ndarray) -> None:
        G = self.blocks.G
        if (len(self.orders) + 1) * G * G > POOL_CELLS:
            return
        self.orders.append(order)
        self.loads.append(self.blocks.interval_loads(order))
        self.pairs.append(np.nonzero(self.loads[-1] <= self.L))

    def level(self, L: float) -> None:
        self.L = L
        self.pairs = [np.nonzero(loads <= L) for loads in self.loads]

    def columns(self, pi: np.ndarray) -> list[np.ndarray]:
        """The best interval of load ``<= L`` from each start in each order, where it prices
        out, best first, at most ``COLUMNS_PER_ROUND`` distinct ones."""
        candidates = []
        for order, (starts, ends) in zip(self.orders, self.pairs):
            prefix = np.concatenate([[0.0], np.cumsum(pi[order])])
            gain = prefix[ends + 1] - prefix[starts]
            keep = np.nonzero(gain > 1 + EPSILON)[0]
            if not len(keep):
                continue
            ranked = keep[np.lexsort((-gain[keep], starts[keep]))]
            first = ranked[np.unique(starts[ranked], return_index=True)[1]]
            candidates += [(gain[i], order, starts[i], ends[i]) for i in first.tolist()]
        candidates.sort(key=lambda c: -c[0])
        found, seen = [], set()
        for _, order, a, b in candidates:
            block = np.zeros(len(pi), dtype=bool)
            block[order[a:b + 1]] = True
            key = np.packbits(block).tobytes()
            if key in seen:
                continue
            seen.add(key)
            found.append(block)
            if len(found) >= COLUMNS_PER_ROUND:
                break
        return found


class _Master:
    """The restricted master LP (GLOP), columns added as found; duals per group."""

    def __init__(self, G: int):
        from ortools.linear_solver import pywraplp

        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        self.rows = [self.solver.Constraint(1.0, 1.0) for _ in range(G)]
        objective = self.solver.Objective()
        for row in self.rows:
            artificial = self.solver.NumVar(0.0, self.solver.infinity(), "")
            row.SetCoefficient(artificial, 1.0)
            objective.SetCoefficient(artificial, ARTIFICIAL)
        objective.SetMinimization()
        self.columns: list[tuple[object, float]] = []  # (variable, load)
        self.seen: set[bytes] = set()

    def add(self, block: np.ndarray, load: float) -> bool:
        key = np.packbits(block).tobytes()
        if key in self.seen:
            return False
        self.seen.add(key)
        variable = self.solver.NumVar(0.0, self.solver.infinity(), "")
        for g in np.nonzero(block)[0].tolist():
            self.rows[g].SetCoefficient(variable, 1.0)
        self.solver.Objective().SetCoefficient(variable, 1.0)
        self.columns.append((variable, load))
        return True

    def level(self, L: float) -> None:
        """Only blocks of load at most ``L`` may be used."""
        for variable, load in self.columns:
            variable.SetUb(self.solver.infinity() if load <= L else 0.0)

    def solve(self) -> tuple[float, np.ndarray]:
        self.solver.Solve()
        return (self.solver.Objective().Value(),
                np.array([row.dual_value() for row in self.rows]))


def _coarse(pi: np.ndarray) -> np.ndarray:
    """``pi`` scaled to integers of at most ``WEIGHT_RESOLUTION`` and rounded up: any weights
    give a valid ``h`` (module docstring), and small coefficients keep CP-SAT's linear
    relaxation well scaled. Its effect on speed was not isolated: one 40 s trial on the three
    RandWire graphs (k = 16) showed no clear change either way."""
    return np.ceil(pi / (np.abs(pi).max() / WEIGHT_RESOLUTION))


def covering_bound(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    floor: float = 0.0,
    target: float = math.inf,
    seed: int = 0,
    certify_within: float = math.inf,
) -> BoundResult:
    """``h(pi)`` for the covering LP's duals (module docstring) within ``time_limit`` seconds.

    ``floor``: a bound already held; ``target``: a placement's value (both set the first level;
    without a finite ``target`` the bound is skipped). ``certify_within``: seconds after which
    the bound stops if it has proven nothing above ``floor`` yet (checked between rounds: a
    certificate under way, up to ``CERTIFICATE_SHARE`` of the time, ends first), handing the
    rest of its time back (its column generation does not converge on some wide graphs:
    NASNet-A, T5).
    ``details``: the last ``level``, the restricted master's value there (``lp``), the
    ``columns``, the level changes (``levels``), the CP-SAT ``solves`` (pricing and
    certificates), the seconds at which levels were ``certified``, and ``gave_up`` when
    ``certify_within`` stopped it."""
    started = time.perf_counter()
    deadline = started + time_limit
    certify_from = deadline - CERTIFICATE_SHARE * time_limit
    groups = contract(problem) if groups is None else groups
    K = problem.num_devices
    floor = max(floor, combinatorial_bound(problem, groups))
    if K < 2 or not math.isfinite(target) or not floor < target \
            or not np.isfinite(groups.least_compute(problem)).all():
        return BoundResult(0.0, "skipped", time.perf_counter() - started)
    rng = np.random.default_rng(seed)
    blocks = _Blocks(problem, groups)
    G = blocks.G
    low, high = floor, target  # levels certified / found not certifiable
    L = low + FIRST_LEVEL * (high - low)
    master = _Master(G)
    pool = _Pool(blocks)
    pool.level(L)
    for g in range(G):
        single = np.zeros(G, dtype=bool)
        single[g] = True
        master.add(single, blocks.load(single))
    pool.add(np.arange(G))
    for _ in range(FIRST_ORDERS):
        if time.perf_counter() > certify_from:
            break
        pool.add(blocks.order(rng))
    master.level(L)
    best = BoundResult(0.0, "skipped", 0.0)
    calls = levels = 0
    value, pi = 0.0, np.zeros(G)
    certified: list[float] = []
    gave_up = False

    def relevel(to: float) -> None:
        nonlocal L, levels
        L, levels = to, levels + 1
        master.level(L)
        pool.level(L)

    def certify(seconds: float, cap: float, final: bool = False) -> np.ndarray | None:
        """``h(pi)`` capped at ``cap`` (so that no block under the cap proves ``cap``); a block
        CP-SAT finds under the cap is returned: a candidate column. Unless ``final``,
        CP-SAT stops at the first such block: the column generation goes on from it. A block
        is returned only where its load is at most the level ``L`` (CP-SAT rounds costs down)."""
        nonlocal best, calls
        if not pi.sum() > 0 or seconds < 0.05:
            return None
        result = heaviest_block_bound(problem, seconds, groups, cap, weights=_coarse(pi),
                                      stop_at=-math.inf if final else cap,
                                      subsolvers=CERTIFICATE_SUBSOLVERS)
        calls += result.mips
        if result.value > best.value:
            best = result
        block = result.details.get("block")
        return block if block is not None and blocks.load(block) <= L else None

    def column(block: np.ndarray | None) -> bool:
        """Add a block CP-SAT found to the master, and orders that keep it whole to the pool,
        where it prices out (CP-SAT saw the weights rounded up: it may hold ``P / K`` of those
        and not price out)."""
        if block is None or not pi[block].sum() > 1 + EPSILON \
                or not master.add(block, blocks.load(block)):
            return False
        for _ in range(ORDERS_PER_BLOCK):
            pool.add(blocks.order(rng, block))
        return True

    def certificate_seconds() -> float:
        return min(CERTIFICATE_SHARE * time_limit, deadline - time.perf_counter())

    # The loop leaves the last h(pi) its share of the time only while no level is certified:
    # after one, that h(pi) (under the lowest level that failed) rarely beats it.
    while time.perf_counter() < (deadline if certified else certify_from):
        if best.value <= floor and time.perf_counter() - started > certify_within:
            gave_up = True
            break
        value, pi = master.solve()
        if value <= K * (1 + 1e-9):  # z(L) <= K: this level cannot be certified
            high = L
            relevel(low + LEVEL * (L - low))
            continue
        found = [b for b in pool.columns(pi) if blocks.load(b) <= L]
        if any([master.add(block, blocks.load(block)) for block in found]):
            continue
        # The pool offers none. CP-SAT looks for a block under the level holding P / K of the
        # weight on the certificate's time. One it finds prices out (P / K > 1); none there
        # certifies the level.
        if certificate_seconds() < 0.05:
            break  # too little time for CP-SAT: the level is left neither proven nor failed
        block = certify(certificate_seconds(), L)
        if column(block):
            continue
        if best.value >= L * (1 - 2e-6):
            low = L
            certified.append(round(time.perf_counter() - started, 2))
        else:
            # Not certified in its time. The same duals under a lower cap: CP-SAT's proof time
            # rises steeply with the cap (RandWire-WS, k = 16, one run: 8, 13 and 27 s at 0.9,
            # 0.95 and 1.0 of the level), and these duals hold there too.
            floor_now = max(low, best.value)
            if column(certify(certificate_seconds(), floor_now + LEVEL * (L - floor_now))):
                continue
            high = L
        low = max(low, best.value)
        if high - low <= 1e-3 * high:
            break
        relevel(low + LEVEL * (high - low))
    low = max(low, best.value)
    if not gave_up and high - low > 1e-3 * high and low < L \
            and deadline - time.perf_counter() > FINAL_LEAST_SECONDS:
        # What is left: h(pi) for the duals of the last columns (valid for any weights).
        value, pi = master.solve()
        certify(deadline - time.perf_counter(), L, final=True)
    details = {"level": L, "lp": value, "columns": len(master.columns), "levels": levels,
               "solves": calls, "certified": certified, "gave_up": gave_up}
    return BoundResult(best.value, best.status if best.value > 0 else "skipped",
                       time.perf_counter() - started, calls, details)
