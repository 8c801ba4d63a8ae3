r"""Lower bounds on the best *contiguous* max-load, after Archer et al. (ICML 2024).

Reference: A. Archer, M. Fahrbach, K. Liu, P. Prabhu, "Practical Performance Guarantees for
Pipelined DNN Inference", ICML 2024 (PMLR 235:1655-1671; arXiv 2311.03703). The paper proves lower
bounds for its partitions with a combinatorial bound and with mixed-integer relaxations, among
them a "bottleneck" MIP with communication and a "guess the bottleneck" MIP. Only the paper's
abstract and summaries were at hand when this module was written, not its formulations: the
bounds below are our own constructions under those names (one block of the pipeline modelled
exactly, with its communication, the rest relaxed; then the block's position fixed; for
identical devices, the whole chain of blocks in one model, solved by CP-SAT), plus two of our
own that charge communication cheaply (the least load of a device holding a given group, by
max-flow; the least load of a block holding its share of the work), derived and proved here
for tvm-place's cost rule (heterogeneous devices, transfer times paid by sender and receiver,
memory caps, support, pins, colour classes). None relies on a claim of the paper.

Setting and notation
--------------------
``K`` devices ``D``, ``c[u, d]`` compute, ``t[u, d]`` transfer time, ``m[u]`` memory, ``cap[d]``.
A placement is *contiguous* when the quotient graph of the devices over the contiguity edges
(:func:`tvm_place.evaluate.contiguity_edges` where the evaluator has it, else every edge) is
acyclic. Load of device ``d`` holding the set ``S`` (the evaluator's rule)::

    load_d(S) = sum_{u in S} c[u, d] + sum_{u in S, some successor not in S} t[u, d]
                                     + sum_{u not in S, some successor in S} t[u, d]

Every contiguous placement is a chain of exactly ``K`` blocks ``B_1, ..., B_K`` on ``K`` distinct
devices (order the devices topologically in the acyclic quotient graph; unused devices hold empty
blocks anywhere in the chain), and the prefixes ``I_b = B_1 ∪ ... ∪ B_b`` are *ideals* of the
contiguity DAG (closed under predecessors), since each contiguity edge goes from a block to the
same or a later one. ``OPT`` is the least max-load of a valid contiguous placement; every bound
below is ``<= OPT`` (``inf`` only when no valid contiguous placement exists).

Preprocessing (:func:`tvm_place.solvers.grouping.contract`): operators that every contiguous
placement keeps on one device, or that some optimal one does, become one *group*: colour
classes, costless satellites and the strongly connected sets of the contiguity quotient (the
proofs are in :mod:`tvm_place.solvers.grouping`). The optimum over placements that keep groups
whole is ``OPT``, so bounds on the grouped problem bound ``OPT``. ``c[g, d]``, ``m[g]`` sum over
members; "``d`` fits ``g``" means every member may run on ``d`` and ``m[g] <= cap[d]``.

1. Combinatorial bound (:func:`combinatorial_bound`)
----------------------------------------------------
``max( max_g min_{d fits g} c[g, d],  sum_g min_{d fits g} c[g, d] / K )``. Valid: each group lies
whole on one device that fits it and a load is at least the compute on it (transfers are
``>= 0``), so the device of ``g`` carries at least the first term; the ``K`` loads sum to at least
``sum_g min_d c[g, d]``, so the largest is at least their average. (The classic "heaviest node,
total work / k" bound, for unrelated devices and groups.) It ignores communication.

2. "Bottleneck" MIP with communication (:func:`bottleneck_bound`)
-----------------------------------------------------------------
Model one block ``S = I \ J`` of the chain exactly, for ideals ``J ⊆ I``, on a device ``d``, and
the blocks on the other devices ``R = D \ {d}`` through their device *classes* (devices with
identical columns; class ``c`` has ``n_c`` devices of ``R``). One MIP per class of ``d``; the bound
is the least over those MIPs, since the block lies on a device of some class. Variables::

    zI[g], zJ[g] in {0, 1}   g in I, g in J;  y[g] = zI[g] - zJ[g]  (g in S)
    xJ[g, c], xA[g, c] in {0, 1}   g in J (before S) / in V \ I (after S), on a device of class c
        sum_c xJ[g, c] = zJ[g],  sum_c xA[g, c] = 1 - zI[g],  0 where class c does not fit g
        (with one class, xJ = zJ and xA = 1 - zI are substituted)
    snd[u], rcv[u], and per class c and side s in {J, A}: snd_sc[u], rcv_sc[u], all in [0, 1]

and, for the pairs ``(u, h)`` "operator ``u`` has a consumer in group ``h != g(u)``" (every edge,
contiguity or not), with ``X`` one of ``y``, ``xJ[., c]``, ``xA[., c]`` and its pair of variables::

    zJ[g] <= zI[g];   zI[g] >= zI[h], zJ[g] >= zJ[h]            for each contiguity edge g -> h
    send >= X[g(u)] - X[h],   receive >= X[h] - X[g(u)]
    T >= sum_g c[g, d] y[g] + sum_u t[u, d] (snd[u] + rcv[u])                       (block S)
    n_c T >= sum_g c[g, c] (xJ + xA)[g, c]
             + sum_u t[u, c] (snd_Jc + rcv_Jc + snd_Ac + rcv_Ac)[u]                  (each class)
    T >= c[g, c] (xJ + xA)[g, c]                                                     (each group)
    sum_g m[g] y[g] <= cap[d];  sum_g m[g] (xJ + xA)[g, c] <= n_c cap_c
    y[g] = 0 where d does not fit g;  y[g] = 1 where no class of R fits g

minimising ``T``.
*Validity.* Take an optimal contiguous placement as a chain of ``K`` blocks, any block ``B_b`` of
it, and ``d`` its device; set ``J = I_{b-1}``, ``I = I_b`` (so ``S = B_b``), ``xJ``/``xA`` to the
class of the device each group of ``J`` / ``V \ I`` is on, every send/receive variable to the
larger of 0 and its right-hand sides (0 or 1), and ``T = OPT``. The ideal constraints hold. With
``X = y``: ``snd[u] = 1`` exactly when ``u in S`` has a consumer outside ``S``, ``rcv[u] = 1``
exactly when ``u`` outside ``S`` has one in ``S``: the block row is ``load_d(S) <= OPT``. With
``X = xJ[., c]``: ``snd_Jc[u] = 1`` means ``u`` is on a class-``c`` device before ``S`` and some
consumer is not (another device), so that device pays the send ``t[u, c]``; ``rcv_Jc[u] = 1``
means a consumer is on a class-``c`` device before ``S`` and ``u`` is not, so that device pays the
receive ``t[u, c]``. Likewise for ``A``. A value is sent by one device at most, and the four
(side, class) sets of devices are disjoint, so the charges counted are distinct charges of the
evaluator, on class-``c`` devices for the class row; adding compute, the class row is at most the
sum of ``n_c`` loads, each ``<= OPT``. The group rows hold because a group is on one device.
Memory and support hold since the placement is valid. So the point is feasible with ``T = OPT``
and the MIP's optimum is ``<= OPT`` for the class of ``d``: the least over classes is ``<= OPT``.

3. "Guess the bottleneck stage" MIP (:func:`guess_bottleneck_bound`)
--------------------------------------------------------------------
The same model with the position ``b`` of ``S`` in the chain fixed (``b = 1..K``): the ``b - 1``
blocks before it hold ``J`` (``J = ∅`` when ``b = 1``) and the ``K - b`` after it hold ``V \ I``
(``I = V`` when ``b = K``), which adds the side rows::

    (b - 1) T >= sum_{g, c} c[g, c] xJ[g, c] + sum_{u, c} t[u, c] (snd_Jc + rcv_Jc)[u]
    (K - b) T >= sum_{g, c} c[g, c] xA[g, c] + sum_{u, c} t[u, c] (snd_Ac + rcv_Ac)[u]
    sum_g m[g] zJ[g] <= the b - 1 largest caps of R;  sum_g m[g] (1 - zI[g]) <= the K - b largest

*Validity* as above with the ``b``-th block of the optimal chain: the charges of a side are paid
by that side's devices, at most ``b - 1`` (resp. ``K - b``) devices of ``R``. So the MIP at ``b``
for the class of the ``b``-th block's device is ``<= OPT``, hence ``min_class MIP_{b, class} <=
OPT`` for *every* ``b``: the bound is the largest of these minima over the positions solved (any
subset is valid). Each is at least the bottleneck MIP of the same class (more rows).

4. The chain model, identical devices (:func:`chain_bound`)
------------------------------------------------------------
Archer et al.'s full formulation, where it is small: when the ``K`` devices are all identical
(one class: equal compute, transfer, capacity and allowed columns) and every group fits them, the
device of a block does not matter, so the chain itself is modelled, all ``K`` blocks at once, and
the block index *is* the device. With ``unit = scale / CHAIN_RESOLUTION`` and costs rounded down,
``c'[g] = floor(c[g] / unit)``, ``t'[u] = floor(t[u] / unit)``, variables and constraints (CP-SAT,
all Boolean but ``T``)::

    z[g, b] = [g in I_b]   (b = 1 .. K-1; I_0 = {}, I_K = V)    z[g, b] <= z[g, b + 1]
    z[h, b] <= z[g, b]     for each contiguity edge g -> h          (each I_b an ideal)
    y[g, b] = z[g, b] - z[g, b - 1]                                  (g in block B_b)
    e[b] => some y[g, b] = 1;  not e[b] => every y[g, b] = 0;  e[b + 1] => e[b]
    s[u, b] or not y[g(u), b] or y[h, b];   r[u, b] or not y[h, b] or y[g(u), b]   (pairs (u, h))
    sum_g c'[g] y[g, b] + sum_u t'[u] (s[u, b] + r[u, b]) <= T                     (each b)
    sum_g m'[g] y[g, b] <= floor(cap (1 + MEMORY_TOLERANCE) / munit)   (m' = floor(m / munit))

minimising the integer ``T``.
*Validity.* Take an optimal contiguous placement as a chain of ``K`` blocks (section 1 of the
setting). Its empty blocks may be moved to the end of the chain: the prefixes of the nonempty
blocks are the same ideals, and a block's load depends only on its set, never on its device,
since the devices are identical. Set ``z``, ``y`` by that chain, ``e[b]`` = "``B_b`` nonempty",
``s[u, b]`` = "``u in B_b`` and some consumer is not" (exactly the evaluator's send of ``u`` on
device ``b``: consumers in ``u``'s own group share its block), ``r[u, b]`` = "``u`` not in ``B_b``
and some consumer is" (its receive). Every clause holds; each load row's left side is at most
``load_b / unit`` (each cost rounded down), an integer, so at most ``floor(OPT / unit)``; each
memory row holds as ``floor`` of a sum of at most the room is at most the floored room. So the
model's minimum ``T*`` is ``<= OPT / unit``, and every bound CP-SAT proves on ``T*`` is one on
``OPT / unit``. Solved to optimality with exact costs the model *is* the contiguous optimum.

*The search* (:func:`_chain_search`). ``T``'s domain is ``[low, high]``: ``low`` from a bound
already held (``floor``: then ``T* < low`` would contradict it, so the domain loses no optimum
the bound allows: the minimum over it is ``max(T*, low) <= OPT / unit``), ``high`` from the value
of a placement at hand (``target``; the domain's cap only prunes: a solution above it is never
needed when the placement's chain lies below it, and when none does the solver answers
"infeasible", which claims nothing). First CP-SAT minimises ``T`` on ``CHAIN_FIRST_SHARE`` of the
time; then *probes* ask for ``T <= low + CHAIN_PROBE_STEP (high - low)``: "infeasible" proves
``T* > cap``, so ``low = cap + 1``; an optimum inside the domain is ``T*`` itself (nothing lies
below ``low``); a solution found lowers ``high``; "unknown" stops. Each answer's proven objective
bound is also kept. The bound returned is ``low * unit``, lowered by the relative
``MIP_SAFETY``. Small graphs solve in well under a second; on wide graphs (hundreds of groups,
``K = 16``) the probes prove a part of the gap. Size: ``G (K - 1)`` variables ``z``, ``G K``
variables ``y``, ``2 n K`` variables ``s, r`` and ``2 P K`` clauses (``P`` pairs); not built above
``CHAIN_MAX_CELLS`` (groups x devices). The model is also a search for chains: given a
placement's chain as a hint, CP-SAT starts from it, and the best chain it finds under the cap is
returned with the bound (dp's anytime step, :mod:`tvm_place.solvers.anytime`, keeps it where it
evaluates lower).

5. The cut bound (:mod:`tvm_place.solvers.bounds.cut`)
-----------------------------------------------------
``OPT >= max_g min_{S ∋ g} f(S)``, ``f`` the load rule with each cost at its least over the
devices (``c*[g]``, ``t*[u]``): one max-flow per group. Its proof uses only that groups stay
whole, so it holds here on the contracted groups (:func:`lower_bounds` runs it on them) as it
does over every placement on the groups without contiguity cycles.

6. The heaviest-block bound (:func:`heaviest_block_bound`)
----------------------------------------------------------
In a chain of ``K`` blocks the least-cost work ``sum_g c*[g] = C*`` is shared out, so some block
``B`` has ``c*(B) >= C* / K``, and ``B = I \ J`` for ideals ``J ⊆ I``. Hence
``OPT >= min { f(I \ J) : J ⊆ I ideals, c*(I \ J) >= C* / K }``: the combinatorial bound's
"total work / K" with the block's communication charged. *Validity.* That block's load on its
device is ``>= f(B)`` (as in 5: each cost at least its least) and ``<= OPT``, and ``B`` is feasible for the minimum. CP-SAT
model (Booleans ``zI, zJ, y`` as in 4 for one block; ``s[u], r[u]`` its sends and receives with
the clauses of 4); the objective's costs are rounded *down* to ``unit`` as in 4 and the work
row's *up* (``sum_g ceil(c*[g] / unit) y[g] >= ceil(C* / (K unit))`` holds for ``B``: its
left side is an integer at least ``c*(B) / unit``), so ``B`` stays feasible and its objective is
at most ``f(B) / unit``. CP-SAT minimises it once (the objective capped by a placement at
hand); stopped early, its proven objective bound is taken. One block's model, ``2G + 2n`` Booleans: it solves in well under a second on most
testbed graphs, and in 1-2 s on the RandWire graphs where the chain model proves nothing
(measured, k = 16). Heterogeneous devices are covered by the least costs.

Time limits and numerics
------------------------
Each MIP runs under its own time limit (HiGHS through OR-Tools MathOpt, presolve off since HiGHS's
presolve does not watch the clock; SCIP through ``pywraplp`` if :data:`MIP_SOLVER` says so), the
model building counted in it. When it stops early the bound taken is the solver's proven *dual*
bound, never its incumbent; when it proved nothing it contributes nothing (a position without a
bound for every class is left out); a MIP proven infeasible contributes ``inf`` for its class.
Work is saved without weakening validity: a position whose first class already gives a bound no
higher than the best one held is cut short (that class's bound is kept: a valid bound, though not
the minimum over classes); the positions stop once the bound reaches the value of a placement at
hand (``target``: that placement is then optimal); a MIP is not started with less than
``MIP_LEAST_SECONDS_PER_GROUP`` seconds per group. Costs are divided by a scale (the combinatorial
bound) for conditioning; coefficients that become
``<= 1e-9`` are dropped, which only loosens rows; memory caps get a relative slack ``MIP_SAFETY``;
each dual bound is lowered by the relative ``MIP_SAFETY`` (``1e-6``) plus ``1e-9`` (scaled units),
covering the solvers' feasibility and optimality tolerances.

Limitations (of 2 and 3): the blocks before and after ``S`` are relaxed to their device classes, so the
transfers between two devices of one class on one side are not counted: the MIPs capture the
communication around the modelled block and across classes, and the bound weakens when many
identical devices share the rest (measured: 0.6-0.97 of the best contiguous split on the
dnn-partitioning workloads). Size: ``O((G + n) * classes)`` variables and ``O(m * classes)`` rows
per MIP, ``K x classes`` MIPs for the guess bound; graphs of many hundreds of groups need tens of
seconds per MIP before the dual bound rises above the combinatorial one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...evaluate import MEMORY_TOLERANCE
from ...graph import PlacementProblem
from .. import budget
from ..grouping import Groups, contract
from ..native_output import solver_stdout_to_stderr
from .cut import cut_bound
from .result import BoundResult

#: Relative slack taken off every MIP dual bound, and added to memory caps in the MIPs.
MIP_SAFETY = 1e-6

#: Below this many seconds per group a MIP is not started: HiGHS rarely proves anything sooner
#: (measured: about 3 s before the first dual bound on 300 groups, 2 device classes).
MIP_LEAST_SECONDS_PER_GROUP = 0.005

#: The OR-Tools backend of the MIPs.
MIP_SOLVER = "HIGHS"


# ----------------------------------------------------------------------------------------------
# 1. Combinatorial bound
# ----------------------------------------------------------------------------------------------


def combinatorial_bound(problem: PlacementProblem, groups: Groups | None = None) -> float:
    """``max(heaviest group at its best device, total best work / K)``; see the module docstring."""
    groups = contract(problem) if groups is None else groups
    best = groups.least_compute(problem)
    if not np.isfinite(best).all():
        return math.inf
    return float(max(best.max(initial=0.0), best.sum() / problem.num_devices))


# ----------------------------------------------------------------------------------------------
# 2 and 3. MIP relaxations
# ----------------------------------------------------------------------------------------------


def _largest_sum(values: np.ndarray, count: int) -> float:
    if count <= 0:
        return 0.0
    return float(np.sort(values)[::-1][:count].sum())


@dataclass
class _MipResult:
    bound: float  # in problem units; -inf when nothing was proven
    status: str  # optimal | time_limit | infeasible | no_bound


class _Model:
    """A MIP as plain lists, so that either backend can take it.

    Rows are ``[lower, upper, {var: coefficient}]``; :meth:`add` adds a linear term given as
    ``({var: coefficient}, constant)``, moving the constant into the row's bounds.
    """

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[list] = []

    def var(self, lower: float, upper: float, integer: bool) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        self.integer.append(integer)
        return len(self.lower) - 1

    def row(self, lower: float, upper: float) -> list:
        row = [lower, upper, {}]
        self.rows.append(row)
        return row

    @staticmethod
    def add(row: list, term: tuple[dict[int, float], float], factor: float) -> None:
        coefficients, constant = term
        for var, value in coefficients.items():
            row[2][var] = row[2].get(var, 0.0) + factor * value
        if constant:
            row[0] -= factor * constant
            row[1] -= factor * constant


_ZERO: tuple[dict[int, float], float] = ({}, 0.0)


def _solve_scip(model: _Model, objective: int, deadline: float) -> _MipResult:
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:  # pragma: no cover - OR-Tools ships SCIP
        return _MipResult(-math.inf, "no_bound")
    variables = [
        solver.Var(lo, up, integer, "")
        for lo, up, integer in zip(model.lower, model.upper, model.integer)
    ]
    for lo, up, coefficients in model.rows:
        constraint = solver.Constraint(lo, up)
        for var, value in coefficients.items():
            if value:
                constraint.SetCoefficient(variables[var], value)
    solver.Objective().SetCoefficient(variables[objective], 1.0)
    solver.Objective().SetMinimization()
    left = deadline - time.perf_counter()
    if left < 0.001:
        return _MipResult(-math.inf, "no_bound")
    solver.SetTimeLimit(max(1, int(left * 1000)))
    status = solver.Solve()
    if status == pywraplp.Solver.INFEASIBLE:
        return _MipResult(math.inf, "infeasible")
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE, pywraplp.Solver.NOT_SOLVED):
        return _MipResult(-math.inf, "no_bound")
    dual = solver.Objective().BestBound()
    return _MipResult(dual, "optimal" if status == pywraplp.Solver.OPTIMAL else "time_limit")


def _solve_highs(model: _Model, objective: int, deadline: float) -> _MipResult:
    import datetime

    from ortools.math_opt.python import mathopt

    m = mathopt.Model()
    variables = [
        m.add_variable(lb=lo, ub=up, is_integer=integer)
        for lo, up, integer in zip(model.lower, model.upper, model.integer)
    ]
    for lo, up, coefficients in model.rows:
        expr = mathopt.fast_sum(value * variables[var] for var, value in coefficients.items() if value)
        m.add_linear_constraint(lb=lo, ub=up, expr=expr)
    m.minimize(variables[objective])
    left = deadline - time.perf_counter()
    if left < 0.001:
        return _MipResult(-math.inf, "no_bound")
    # HiGHS's presolve can run for seconds past the time limit on these models; the root LP and
    # the branch and bound check the clock.
    params = mathopt.SolveParameters(
        time_limit=datetime.timedelta(seconds=left),
        enable_output=False,
        presolve=mathopt.Emphasis.OFF,
    )
    try:
        with solver_stdout_to_stderr():
            result = mathopt.solve(m, mathopt.SolverType.HIGHS, params=params)
    except Exception:  # noqa: BLE001 - a solver failure proves nothing; the bound is skipped
        return _MipResult(-math.inf, "no_bound")
    reason = result.termination.reason
    if reason == mathopt.TerminationReason.INFEASIBLE:
        return _MipResult(math.inf, "infeasible")
    dual = result.termination.objective_bounds.dual_bound
    if reason == mathopt.TerminationReason.OPTIMAL:
        return _MipResult(dual, "optimal")
    if reason in (mathopt.TerminationReason.FEASIBLE, mathopt.TerminationReason.NO_SOLUTION_FOUND):
        return _MipResult(dual, "time_limit")
    return _MipResult(-math.inf, "no_bound")


def _block_mip(
    problem: PlacementProblem,
    groups: Groups,
    device: int,
    position: int | None,
    scale: float,
    time_limit: float,
) -> _MipResult:
    """One MIP of the module docstring: the block on ``device``, at chain ``position`` (1-based)
    or anywhere (``None``: the bottleneck MIP), within ``time_limit`` seconds (building included)."""
    deadline = time.perf_counter() + time_limit
    K = problem.num_devices
    G = groups.num_groups
    inf = math.inf
    fits = groups.fits(problem)
    capacity = problem.capacity * (1 + MIP_SAFETY)

    def scaled(values: np.ndarray, by: float) -> np.ndarray:
        # Divide by the scale and drop what the solvers would drop (|c| <= 1e-9): every
        # coefficient so treated is a cost or a memory size, and dropping one only loosens the MIP.
        values = values / by
        return np.where(np.abs(values) > 1e-9, values, 0.0)

    # The other devices, by class: (count, compute per group, transfer per node, capacity).
    rest_classes = [
        [e for e in devices if e != device]
        for devices in problem.identical_devices()
    ]
    rest_classes = [c for c in rest_classes if c]
    q = len(rest_classes)
    fits_class = np.zeros((G, q), dtype=bool)
    for c, devices in enumerate(rest_classes):
        fits_class[:, c] = fits[:, devices[0]]
    must_be_in_block = ~fits_class.any(axis=1)
    may_be_in_block = fits[:, device]
    if (must_be_in_block & ~may_be_in_block).any():
        return _MipResult(inf, "infeasible")
    memory_scale = float(max(groups.memory.max(initial=0.0), 1e-300))
    mem = scaled(groups.memory, memory_scale)
    c_block = scaled(np.where(may_be_in_block, groups.compute[:, device], 0.0), scale)
    t_block = scaled(problem.transfer_time[:, device], scale)
    f_class = [
        scaled(np.where(fits_class[:, c], groups.compute[:, devices[0]], 0.0), scale)
        for c, devices in enumerate(rest_classes)
    ]
    t_class = [scaled(problem.transfer_time[:, devices[0]], scale) for devices in rest_classes]

    model = _Model()
    zI, zJ = [], []
    for g in range(G):
        lo_i, hi_j = 0.0, 1.0
        if position == 1:
            hi_j = 0.0  # nothing before the first block
        if position == K:
            lo_i = 1.0  # nothing after the last
        if must_be_in_block[g]:
            lo_i, hi_j = 1.0, 0.0
        zI.append(model.var(lo_i, 1.0, True))
        zJ.append(model.var(0.0, hi_j, True))
    T = model.var(0.0, inf, False)
    for g in range(G):
        row = model.row(-inf, 0.0)  # zJ - zI <= 0
        row[2][zJ[g]], row[2][zI[g]] = 1.0, -1.0
        if not may_be_in_block[g]:
            row = model.row(0.0, 0.0)  # y = zI - zJ = 0
            row[2][zI[g]], row[2][zJ[g]] = 1.0, -1.0
    for g, h in groups.edges.tolist():
        for z in (zI, zJ):
            row = model.row(0.0, inf)  # z[g] - z[h] >= 0
            row[2][z[g]], row[2][z[h]] = 1.0, -1.0

    # in_J[g][c], in_A[g][c]: group g lies before (J) / after (V \ I) the block, on class c.
    in_S = [({zI[g]: 1.0, zJ[g]: -1.0}, 0.0) for g in range(G)]
    if q == 1:
        in_J = [[({zJ[g]: 1.0}, 0.0)] for g in range(G)]
        in_A = [[({zI[g]: -1.0}, 1.0)] for g in range(G)]
    else:
        in_J = [[_ZERO] * q for _ in range(G)]
        in_A = [[_ZERO] * q for _ in range(G)]
        for g in range(G):
            if must_be_in_block[g]:
                continue
            split_j = model.row(0.0, 0.0)  # sum_c xJ[g, c] - zJ[g] = 0
            split_a = model.row(1.0, 1.0)  # sum_c xA[g, c] + zI[g] = 1
            split_j[2][zJ[g]] = -1.0
            split_a[2][zI[g]] = 1.0
            for c in np.flatnonzero(fits_class[g]).tolist():
                x_j = model.var(0.0, 0.0 if position == 1 else 1.0, True)
                x_a = model.var(0.0, 0.0 if position == K else 1.0, True)
                split_j[2][x_j] = 1.0
                split_a[2][x_a] = 1.0
                in_J[g][c] = ({x_j: 1.0}, 0.0)
                in_A[g][c] = ({x_a: 1.0}, 0.0)

    # The block: T >= its compute and transfers on ``device``.
    block = model.row(0.0, inf)
    block[2][T] = 1.0
    for g in np.flatnonzero(c_block).tolist():
        model.add(block, in_S[g], -c_block[g])
    # The rest: per class (all its devices), and per side when the position is fixed.
    class_rows = []
    for c, devices in enumerate(rest_classes):
        row = model.row(0.0, inf)  # n_c T - compute - transfers >= 0
        row[2][T] = float(len(devices))
        class_rows.append(row)
        for g in np.flatnonzero(f_class[c]).tolist():
            model.add(row, in_J[g][c], -f_class[c][g])
            model.add(row, in_A[g][c], -f_class[c][g])
            # Each group is on one device of its class: T >= its compute there.
            single = model.row(0.0, inf)
            single[2][T] = 1.0
            model.add(single, in_J[g][c], -f_class[c][g])
            model.add(single, in_A[g][c], -f_class[c][g])
    side_rows = {}
    if position is not None:
        for side, count, placed in (("J", position - 1, in_J), ("A", K - position, in_A)):
            row = model.row(0.0, inf)  # count T - compute - transfers of that side >= 0
            row[2][T] = float(count)
            side_rows[side] = row
            for c in range(q):
                for g in np.flatnonzero(f_class[c]).tolist():
                    model.add(row, placed[g][c], -f_class[c][g])

    # Transfers, from the node-level pairs (u, h): u's value is consumed in group h != g(u).
    comm = groups.comm.tolist()
    group_of = groups.group_of
    senders = sorted({u for u, _ in comm})
    by_sender = _senders(groups)

    def charge(where: tuple[list, list], pairs_u: int, cost: float, rows: list[list]) -> None:
        """A send and a receive variable of ``u`` for one placement indicator ``where``."""
        placed, _ = where
        g = int(group_of[pairs_u])
        send = model.var(0.0, 1.0, False)
        receive = model.var(0.0, 1.0, False)
        for row in rows:
            row[2][send] = row[2].get(send, 0.0) - cost
            row[2][receive] = row[2].get(receive, 0.0) - cost
        for h in by_sender[pairs_u]:
            # send >= X[g] - X[h];  receive >= X[h] - X[g]
            r = model.row(0.0, inf)
            r[2][send] = 1.0
            model.add(r, placed[g], -1.0)
            model.add(r, placed[h], 1.0)
            r = model.row(0.0, inf)
            r[2][receive] = 1.0
            model.add(r, placed[h], -1.0)
            model.add(r, placed[g], 1.0)

    for u in senders:
        if t_block[u] > 0:
            charge((in_S, None), u, t_block[u], [block])
        for c in range(q):
            if t_class[c][u] > 0:
                for side, placed in (("J", in_J), ("A", in_A)):
                    per_class = [placed[g][c] for g in range(G)]
                    rows = [class_rows[c]] + ([side_rows[side]] if side_rows else [])
                    charge((per_class, None), u, t_class[c][u], rows)

    # Memory: the block's device; each class of the rest; each side.
    heavy = np.flatnonzero(mem).tolist()
    if heavy:
        if math.isfinite(capacity[device]):
            row = model.row(-inf, capacity[device] / memory_scale)
            for g in heavy:
                model.add(row, in_S[g], mem[g])
        for c, devices in enumerate(rest_classes):
            room = float(capacity[devices[0]]) * len(devices)
            if math.isfinite(room):
                row = model.row(-inf, room / memory_scale)
                for g in heavy:
                    model.add(row, in_J[g][c], mem[g])
                    model.add(row, in_A[g][c], mem[g])
        if position is not None:
            rest_caps = capacity[[e for e in range(K) if e != device]]
            for count, placed in ((position - 1, in_J), (K - position, in_A)):
                room = _largest_sum(rest_caps, count)
                if math.isfinite(room):
                    row = model.row(-inf, room / memory_scale)
                    for g in heavy:
                        for c in range(q):
                            model.add(row, placed[g][c], mem[g])

    result = (_solve_highs if MIP_SOLVER == "HIGHS" else _solve_scip)(model, T, deadline)
    if result.status in ("infeasible", "no_bound"):
        return result
    dual = result.bound
    if not math.isfinite(dual) or dual < -1e15:
        return _MipResult(-inf, "no_bound")
    safe = dual * (1 - MIP_SAFETY) - 1e-9 if dual > 0 else dual - 1e-9
    return _MipResult(max(0.0, safe) * scale, result.status)


def _scale(problem: PlacementProblem, groups: Groups) -> float:
    value = combinatorial_bound(problem, groups)
    if not math.isfinite(value) or value <= 0:
        finite = problem.compute_time[np.isfinite(problem.compute_time)]
        value = float(max(finite.max(initial=0.0), problem.transfer_time.max(initial=0.0)))
    return value if value > 0 else 1.0


def _senders(groups: Groups) -> dict[int, list[int]]:
    """Per operator with a consumer in another group: those groups."""
    by_sender: dict[int, list[int]] = {}
    for u, h in groups.comm.tolist():
        by_sender.setdefault(u, []).append(h)
    return by_sender


def _least_seconds(groups: Groups, classes: list) -> float:
    """The least time worth giving the MIPs of one position (one per device class)."""
    return MIP_LEAST_SECONDS_PER_GROUP * groups.num_groups * len(classes)


def _class_bound(
    problem: PlacementProblem,
    groups: Groups,
    position: int | None,
    deadline: float,
    share: float,
    scale: float,
    floor: float = 0.0,
) -> tuple[float, str, int]:
    """``min`` over device classes of the MIP at ``position``; ``(-inf, ...)`` if out of time.

    Once one class's bound is ``<= floor`` the minimum cannot exceed ``floor`` (a bound already
    held): the other classes are skipped, and that class's bound is returned as the minimum's
    stand-in (``"pruned"``; still a valid bound, just not the minimum itself)."""
    results = []
    classes = problem.identical_devices()
    budget_end = min(deadline, time.perf_counter() + max(share, _least_seconds(groups, classes)))
    for c, devices in enumerate(classes):
        left = budget_end - time.perf_counter()
        limit = left / (len(classes) - c)
        if limit < MIP_LEAST_SECONDS_PER_GROUP * groups.num_groups:
            return -math.inf, "out_of_time", len(results)
        result = _block_mip(problem, groups, devices[0], position, scale, limit)
        results.append(result)
        if result.status == "no_bound":
            return -math.inf, "no_bound", len(results)
        if result.bound <= floor and c < len(classes) - 1:
            return result.bound, "pruned", len(results)
    values = [r.bound for r in results]
    statuses = {r.status for r in results}
    status = "optimal" if statuses <= {"optimal", "infeasible"} else "time_limit"
    return min(values), status, len(results)


def bottleneck_bound(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    floor: float = 0.0,
) -> BoundResult:
    """The "bottleneck" MIP bound (module docstring, 2), within ``time_limit`` seconds.

    ``floor``: a bound already proven; classes are skipped once the result cannot exceed it."""
    started = time.perf_counter()
    groups = contract(problem) if groups is None else groups
    scale = _scale(problem, groups)
    value, status, mips = _class_bound(
        problem, groups, None, started + time_limit, time_limit, scale, floor
    )
    seconds = time.perf_counter() - started
    if not value > -math.inf:
        return BoundResult(0.0, "skipped", seconds, mips)
    return BoundResult(value, "infeasible" if value == math.inf else status, seconds, mips)


def guess_bottleneck_bound(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    floor: float = 0.0,
    target: float = math.inf,
) -> BoundResult:
    """The "guess the bottleneck stage" MIP bound (module docstring, 3), within ``time_limit``.

    ``floor``: a bound already proven (positions whose minimum cannot exceed it stop early);
    ``target``: a value known to be reached (a placement's): once the bound is within
    ``2 * MIP_SAFETY`` of it, that placement is optimal and the other positions are skipped."""
    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    scale = _scale(problem, groups)
    K = problem.num_devices
    per_position: dict[int, float] = {}
    statuses = set()
    mips = 0
    best = floor
    # Middle positions first: they split the rest on both sides, usually the strongest.
    positions = sorted(range(1, K + 1), key=lambda b: (abs(2 * b - K - 1), b))
    least = _least_seconds(groups, problem.identical_devices())
    for i, b in enumerate(positions):
        left = deadline - time.perf_counter()
        if left < least:
            break  # too little time for one more position to prove anything
        value, status, count = _class_bound(
            problem, groups, b, deadline, max(least, left / (len(positions) - i)), scale, best
        )
        mips += count
        if value > -math.inf:
            per_position[b] = value
            statuses.add(status)
            best = max(best, value)
        if best >= target * (1 - 2 * MIP_SAFETY):
            statuses.add("target")
            break
    seconds = time.perf_counter() - started
    if not per_position:
        return BoundResult(0.0, "skipped", seconds, mips)
    value = max(per_position.values())
    if value == math.inf:
        status = "infeasible"
    elif "target" in statuses:
        status = "target"
    elif len(per_position) < K or "pruned" in statuses:
        status = "partial"
    else:
        status = "optimal" if statuses <= {"optimal"} else "time_limit"
    return BoundResult(value, status, seconds, mips, {"per_position": per_position})


# ----------------------------------------------------------------------------------------------
# 4. The chain model (identical devices), solved by CP-SAT
# ----------------------------------------------------------------------------------------------

#: Above this many (group x block) cells the chain model is not built (its size is
#: ``O((groups + senders) * K)`` variables and ``O(pairs * K)`` clauses).
CHAIN_MAX_CELLS = 40_000

#: Costs are rounded *down* to multiples of ``scale / CHAIN_RESOLUTION`` (``scale``: the
#: combinatorial bound), so that CP-SAT can take them; this loosens each load by less than
#: ``(terms in it) * scale / CHAIN_RESOLUTION``.
CHAIN_RESOLUTION = 1_000_000_000

#: CP-SAT workers for the chain model (the development machine has 2 cores).
CHAIN_WORKERS = 2


def chain_applies(problem: PlacementProblem, groups: Groups) -> bool:
    """Whether the chain model (module docstring, 4) covers ``problem``: all devices identical,
    every group fits them, and the model is not too large."""
    K = problem.num_devices
    return (
        K >= 2
        and len(problem.identical_devices()) == 1
        and bool(groups.fits(problem).all())
        and groups.num_groups * K <= CHAIN_MAX_CELLS
    )


def chain_bound(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    floor: float = 0.0,
    target: float = math.inf,
    hint: np.ndarray | None = None,
    probes: bool = True,
) -> BoundResult:
    """The chain-model bound (module docstring, 4) within ``time_limit`` seconds (building
    included), or ``"skipped"`` where :func:`chain_applies` says no.

    ``floor``: a bound already proven (the model's objective starts there); ``target``: the value
    of a placement at hand (the objective is capped there, which only prunes CP-SAT's search);
    ``hint``: that placement's chain as the block of each group (``0 .. K-1``, its nonempty
    blocks first), given to CP-SAT as a solution hint. The best chain CP-SAT finds under the cap
    is ``details["block_of_group"]`` (the same form), where it found one: a contiguous placement
    (module docstring, 4: the model's rows are the evaluator's loads, rounded down, so its true
    max-load may lie a little above ``T``; the caller evaluates it). ``probes=False``: the first
    solve, which minimises ``T``, gets the whole time (for the chain it finds, not the bound)."""
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    if not chain_applies(problem, groups):
        return BoundResult(0.0, "skipped", time.perf_counter() - started)
    K, G = problem.num_devices, groups.num_groups
    scale = _scale(problem, groups)
    unit = scale / CHAIN_RESOLUTION
    compute = np.floor(groups.compute[:, 0] / unit).astype(np.int64)
    transfer = np.floor(problem.transfer_time[:, 0] / unit).astype(np.int64)

    model = cp_model.CpModel()
    # z[g][b]: g in the ideal I_{b+1} (b = 0 .. K-2); I_0 = {} and I_K = V are constants.
    z = [[model.new_bool_var("") for _ in range(K - 1)] for _ in range(G)]
    for g in range(G):
        for b in range(K - 2):
            model.add_implication(z[g][b], z[g][b + 1])
    for g, h in groups.edges.tolist():
        for b in range(K - 1):
            model.add_implication(z[h][b], z[g][b])
    # y[g][b]: g in block B_{b+1} = I_{b+1} \ I_b.
    y = []
    for g in range(G):
        row = [z[g][0]]
        for b in range(1, K - 1):
            cell = model.new_bool_var("")
            model.add(cell == z[g][b] - z[g][b - 1])
            row.append(cell)
        row.append(~z[g][K - 2])
        y.append(row)
    # Empty blocks last (any chain can be reordered so: the devices are identical).
    nonempty = [model.new_bool_var("") for _ in range(K)]
    for b in range(K):
        model.add_bool_or([y[g][b] for g in range(G)]).only_enforce_if(nonempty[b])
        for g in range(G):
            model.add_implication(~nonempty[b], ~y[g][b])
        if b + 1 < K:
            model.add_implication(nonempty[b + 1], nonempty[b])
    lowest = int(math.floor(floor / unit)) if math.isfinite(floor) and floor > 0 else 0
    highest = int(compute.sum() + 2 * transfer.sum() * K) + 1
    if math.isfinite(target):
        # The cap only prunes: rounding may not cut the placement at hand off, hence the + 1.
        highest = min(highest, int(math.floor(target / unit * (1 + 1e-9))) + 1)
    lowest = min(lowest, highest)
    T = model.new_int_var(lowest, highest, "T")

    by_sender = _senders(groups)
    memory_cap = float(problem.capacity[0]) * (1 + MEMORY_TOLERANCE)
    memory_unit = 0.0
    if math.isfinite(memory_cap) and groups.memory.sum() > memory_cap and memory_cap > 0:
        memory_unit = memory_cap / CHAIN_RESOLUTION
        memory = np.floor(groups.memory / memory_unit).astype(np.int64)
        room = int(math.floor(memory_cap / memory_unit))
    for b in range(K):
        if time.perf_counter() > deadline:
            return BoundResult(0.0, "skipped", time.perf_counter() - started)
        terms = [(y[g][b], int(compute[g])) for g in range(G) if compute[g] > 0]
        for u, hs in by_sender.items():
            if transfer[u] <= 0:
                continue
            gu = int(groups.group_of[u])
            send, receive = model.new_bool_var(""), model.new_bool_var("")
            for h in hs:
                # send >= [u's group in the block and h's not]; receive: the other way round.
                model.add_bool_or([~y[gu][b], y[h][b], send])
                model.add_bool_or([~y[h][b], y[gu][b], receive])
            terms += [(send, int(transfer[u])), (receive, int(transfer[u]))]
        model.add(sum(coef * var for var, coef in terms) <= T)
        if memory_unit:
            model.add(sum(int(memory[g]) * y[g][b] for g in range(G) if memory[g] > 0) <= room)
    model.minimize(T)
    if hint is not None:
        for g in range(G):
            for b in range(K - 1):
                model.add_hint(z[g][b], bool(hint[g] <= b))
    found: dict = {}

    def keep(solver) -> None:
        found["block_of_group"] = np.array(
            [next(b for b in range(K) if solver.boolean_value(y[g][b])) for g in range(G)])

    low, high, how, solves = _chain_search(model, T, lowest, highest, deadline, keep,
                                           CHAIN_FIRST_SHARE if probes else 1.0)
    seconds = time.perf_counter() - started
    if low <= 0:
        return BoundResult(0.0, "skipped", seconds, solves, found)
    return BoundResult(low * unit * (1 - MIP_SAFETY), how, seconds, solves,
                       {"probes": solves, **found})


#: The first CP-SAT call of the chain model (minimise ``T`` under the cap) gets this share of
#: the time; what it leaves goes to probes (module docstring, 4).
CHAIN_FIRST_SHARE = 0.5
#: A probe asks for a chain of max-load at most ``low + CHAIN_PROBE_STEP * (high - low)``.
CHAIN_PROBE_STEP = 0.25


def _chain_search(model, T, low: int, high: int, deadline: float,
                  on_solution: Callable | None = None,
                  first_share: float = CHAIN_FIRST_SHARE) -> tuple[int, int, str, int]:
    """``(low, high, status, solves)``: every chain of the model has ``T >= low`` (proven), and
    some has ``T <= high`` if ``high`` was lowered (see the module docstring, 4);
    ``on_solution(solver)`` is called after each solve that found a chain better than any
    before; the first solve gets ``first_share`` of the time."""
    from ortools.sat.python import cp_model

    domain = model.proto.variables[T.index].domain
    solves = 0
    first = True
    while True:
        left = deadline - time.perf_counter()
        if left < 0.05 or low > high:
            return low, high, "time_limit", solves
        if first:
            cap, limit = high, left * first_share
        else:
            cap, limit = low + max(1, int((high - low) * CHAIN_PROBE_STEP)), left
        domain[0], domain[1] = low, cap
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = limit
        solver.parameters.num_workers = CHAIN_WORKERS
        with solver_stdout_to_stderr():
            status = solver.solve(model)
        solves += 1
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and on_solution is not None \
                and solver.objective_value < high:
            on_solution(solver)
        if status == cp_model.OPTIMAL:
            return int(round(solver.objective_value)), high, "optimal", solves
        if status == cp_model.INFEASIBLE:
            if cap >= high:
                # No chain under the cap at all: only a rounding accident can cause this (a
                # placement reaches the cap), so nothing more is claimed.
                return low, high, "time_limit", solves
            low = cap + 1
        elif status == cp_model.FEASIBLE:
            high = min(high, int(round(solver.objective_value)))
            low = max(low, int(math.ceil(solver.best_objective_bound - 1e-6)))
        elif status == cp_model.UNKNOWN:
            bound = solver.best_objective_bound
            if math.isfinite(bound):
                low = max(low, int(math.ceil(bound - 1e-6)))
            if not first:
                return low, high, "time_limit", solves
        else:  # MODEL_INVALID: nothing proven
            return low, high, "time_limit", solves
        first = False


def heaviest_block_bound(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    target: float = math.inf,
    weights: np.ndarray | None = None,
    stop_at: float = -math.inf,
    subsolvers: tuple[str, ...] = (),
) -> BoundResult:
    """The least load of a block holding ``1 / K`` of the least-cost work (module docstring, 6),
    within ``time_limit`` seconds (building included). ``target`` as for :func:`chain_bound`;
    no floor is taken: measured, a floor on the objective slows CP-SAT down here (1.0 -> 2.2 s
    on RandWire-WS, k = 16). ``weights`` (one per group, summing to more than 0): the block
    holds ``1 / K`` of their sum instead of the work's (the covering bound's certificate,
    :mod:`tvm_place.solvers.bounds.covering`). ``details["block"]``: the groups of the best
    block CP-SAT found (a bool array), where it found one. No block under the cap ``target``
    proves ``target`` itself (status ``"target"``): with ``target`` a placement's value that
    cannot happen (its heaviest block is under the cap), with a level below it, it is the proof
    that the level is short of the optimum. ``stop_at``: the search stops at the first block
    it finds of load (costs rounded down) at most this (the covering bound's certificate wants
    such a block as a column, not the least one); the value is then CP-SAT's bound at that
    point. ``subsolvers``: CP-SAT's full-problem workers by name, on ``CHAIN_WORKERS`` workers in
    all (CP-SAT gives one of them its first-solution and neighbourhood searches: with two
    workers it runs one named worker); by default its own portfolio."""
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    compute, transfer = groups.least_compute(problem), problem.transfer_time.min(axis=1)
    if not np.isfinite(compute).all():
        return BoundResult(math.inf, "infeasible", time.perf_counter() - started)
    K, G = problem.num_devices, groups.num_groups
    weights = compute if weights is None else np.asarray(weights, dtype=np.float64)
    if K < 2 or compute.sum() <= 0 or not weights.sum() > 0:
        return BoundResult(0.0, "skipped", time.perf_counter() - started)
    unit = _scale(problem, groups) / CHAIN_RESOLUTION
    model, y, load = block_model(problem, groups, compute, transfer, unit)
    # B holds at least 1/K of the weight: ceil-rounded weights keep the true block feasible.
    weight_unit = np.abs(weights).max() / CHAIN_RESOLUTION
    weight_up = np.ceil(weights / weight_unit).astype(np.int64)
    share = int(math.ceil(weights.sum() / (K * weight_unit) * (1 - 1e-9)))
    model.add(sum(int(weight_up[g]) * y[g] for g in range(G) if weight_up[g]) >= share)
    highest = int(np.floor(compute / unit).sum() + 2 * np.floor(transfer / unit).sum()) + 1
    if math.isfinite(target):
        highest = min(highest, int(math.floor(target / unit * (1 + 1e-9))) + 1)
    T = model.new_int_var(0, highest, "T")
    model.add(load <= T)
    model.minimize(T)
    left = deadline - time.perf_counter()
    if left < 0.01:
        return BoundResult(0.0, "skipped", time.perf_counter() - started)
    # One minimisation on all the time: unlike the chain model's probes, restarts were measured
    # to lose here (RandWire-ER, k = 16: solved in 1.7 s alone, unsolved in 2 s of probes).
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = left
    solver.parameters.subsolvers.extend(subsolvers)
    solver.parameters.num_workers = CHAIN_WORKERS
    stop_units = math.floor(stop_at / unit) if math.isfinite(stop_at) else -1

    class StopAt(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            if self.objective_value <= stop_units:
                self.stop_search()

    with solver_stdout_to_stderr():
        status = solver.solve(model, StopAt() if stop_units >= 0 else None)
    seconds = time.perf_counter() - started
    details = {}
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        details["block"] = np.array([solver.boolean_value(cell) for cell in y])
    if status == cp_model.INFEASIBLE and math.isfinite(target):
        # Every block holding the share has a rounded-down load above the cap, which is at
        # least target / unit: so its true load is above ``target``.
        return BoundResult(target * (1 - MIP_SAFETY), "target", seconds, 1, details)
    if status == cp_model.OPTIMAL:
        low, how = int(round(solver.objective_value)), "optimal"
    elif status in (cp_model.FEASIBLE, cp_model.UNKNOWN) and math.isfinite(solver.best_objective_bound):
        low, how = int(math.ceil(solver.best_objective_bound - 1e-6)), "time_limit"
    else:  # invalid
        low, how = 0, "time_limit"
    if low <= 0:
        return BoundResult(0.0, "skipped", seconds, 1, details)
    return BoundResult(low * unit * (1 - MIP_SAFETY), how, seconds, 1, details)


def block_model(problem: PlacementProblem, groups: Groups, compute: np.ndarray,
                transfer: np.ndarray, unit: float):
    r"""One block ``B = I \ J`` of the chain as a CP-SAT model (module docstring, 6):
    ``(model, y, load)`` with ``y[g]`` "group ``g`` in ``B``" and ``load`` the linear expression
    of ``f(B) / unit``, each cost rounded *down* (so it is at most the block's true load)."""
    from ortools.sat.python import cp_model

    G = groups.num_groups
    work = np.floor(compute / unit).astype(np.int64)
    cost = np.floor(transfer / unit).astype(np.int64)
    model = cp_model.CpModel()
    in_I = [model.new_bool_var("") for _ in range(G)]
    in_J = [model.new_bool_var("") for _ in range(G)]
    for g, h in groups.edges.tolist():
        model.add_implication(in_I[h], in_I[g])
        model.add_implication(in_J[h], in_J[g])
    y = []
    for g in range(G):
        model.add_implication(in_J[g], in_I[g])
        cell = model.new_bool_var("")
        model.add(cell == in_I[g] - in_J[g])
        y.append(cell)
    terms = [(y[g], int(work[g])) for g in range(G) if work[g] > 0]
    for u, hs in _senders(groups).items():
        if cost[u] <= 0:
            continue
        gu = int(groups.group_of[u])
        send, receive = model.new_bool_var(""), model.new_bool_var("")
        for h in hs:
            model.add_bool_or([~y[gu], y[h], send])
            model.add_bool_or([~y[h], y[gu], receive])
        terms += [(send, int(cost[u])), (receive, int(cost[u]))]
    return model, y, sum(coef * var for var, coef in terms)


BOUNDS = ("combinatorial", "cut", "heaviest", "chain", "bottleneck", "guess")

#: Shares of :func:`lower_bounds`' time: the cut bound gets at most ``CUT_SHARE`` of it, the
#: heaviest-block bound ``HEAVIEST_SHARE`` of what is then left, the chain model (where it
#: applies) ``CHAIN_SHARE`` of what is left after those, when other bounds follow each.
CUT_SHARE = 0.15
HEAVIEST_SHARE = 0.75
CHAIN_SHARE = 0.7


def buildable(groups: Groups, seconds: float) -> bool:
    """Whether a bound's model over ``groups`` (a variable per group, constraints per group edge
    and sending pair) can be built in time (:func:`tvm_place.solvers.budget.buildable`)."""
    return budget.buildable(groups.num_groups + len(groups.edges) + len(groups.comm), seconds)


def lower_bounds(
    problem: PlacementProblem,
    time_limit: float,
    groups: Groups | None = None,
    which: tuple[str, ...] = BOUNDS,
    target: float = math.inf,
) -> dict[str, BoundResult]:
    """Every bound of ``which`` within ``time_limit`` seconds in all.

    The cheap bounds run first, each raising the floor of the next: the cut bound (module
    docstring, 5; one max-flow per group) and the heaviest-block bound (6; one block's CP-SAT
    model). Then the chain model (4) where it applies (all devices identical), on
    ``CHAIN_SHARE`` of the time left, or all of it if the MIPs are not asked for: solved, it is
    the contiguous optimum itself. Then the guesses, on three quarters of what is left (more if the
    bottleneck MIP is not asked for): a solved guess position already dominates the bottleneck
    MIP (its rows are a superset), so that MIP, which gets what is left, rarely raises the best
    bound; it is there to be reported. ``target``: the value of a placement at hand; the bounds
    stop once one proves it optimal (the others are then skipped). A bound whose model could not
    be built in half its time is skipped (:func:`buildable`)."""
    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    which = tuple(name for name in BOUNDS if name in which)  # the order they run in
    results: dict[str, BoundResult] = {}
    skipped = BoundResult(0.0, "skipped", 0.0)

    # The combinatorial bound is cheap: it is always the floor the others start from.
    known = combinatorial_bound(problem, groups)
    known = known if math.isfinite(known) else 0.0

    def best() -> float:
        return max([known] + [r.value for r in results.values() if math.isfinite(r.value)])

    def reached() -> bool:
        return best() >= target * (1 - 2 * MIP_SAFETY)

    if "combinatorial" in which:
        t0 = time.perf_counter()
        results["combinatorial"] = BoundResult(
            combinatorial_bound(problem, groups), "optimal", time.perf_counter() - t0
        )

    def left_for(name: str, share: float) -> float:
        """Seconds for bound ``name``: ``share`` of the time left if a later bound is asked for."""
        left = deadline - time.perf_counter()
        later = which[which.index(name) + 1:] if name in which else ()
        return 0.0 if reached() else (share * left if later else left)

    if "cut" in which:
        left = min(CUT_SHARE * time_limit, left_for("cut", 1.0))
        results["cut"] = cut_bound(problem, left, groups, best()) if left > 0.01 else skipped
    if "heaviest" in which:
        left = left_for("heaviest", HEAVIEST_SHARE)
        results["heaviest"] = (
            heaviest_block_bound(problem, left, groups, target)
            if left > 0.05 and buildable(groups, left) else skipped
        )
    if "chain" in which:
        if chain_applies(problem, groups) and not reached():
            left = left_for("chain", CHAIN_SHARE)
            results["chain"] = (
                chain_bound(problem, left, groups, best(), target)
                if left > 0.05 and buildable(groups, left) else skipped
            )
        else:
            results["chain"] = skipped
    if "guess" in which:
        share = 0.75 * (deadline - time.perf_counter()) if "bottleneck" in which else time_limit
        left = min(share, deadline - time.perf_counter())
        if reached():
            left = 0.0
        results["guess"] = (
            guess_bottleneck_bound(problem, left, groups, best(), target)
            if left > 0.01 and buildable(groups, left) else skipped
        )
    if "bottleneck" in which:
        left = deadline - time.perf_counter()
        if reached() or ("guess" in results and results["guess"].status == "target"):
            left = 0.0
        results["bottleneck"] = (
            bottleneck_bound(problem, left, groups, best())
            if left > 0.01 and buildable(groups, left) else skipped
        )
    return results
