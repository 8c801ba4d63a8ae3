"""DiviML's modularity-based "splitting" heuristic: solve the graph module by module.

Reference: Y. Ghannane, M. S. Abdelfattah, "DiviML: A Module-based Heuristic for Mapping Neural
Networks onto Heterogeneous Platforms", arXiv 2308.00127 (2023). DNNs are chains of repeated
blocks; DiviML cuts the graph where every path crosses, solves each module with the exact program
(:mod:`tvm_place.solvers.diviml`) carrying the state the earlier modules left, and joins them.

**Modules.** A *cut vertex* is an operator ``c`` that every source-to-sink path passes through:
every other operator is an ancestor or a descendant of ``c``, and no edge skips it. In any
topological order the ancestors are exactly the operators before ``c``, so (:func:`cut_vertices`,
``O(n + m)``)::

    c = order[i] is a cut vertex  iff  every operator before i has successors, all at <= i,
                                  and  every operator after i has predecessors, all at >= i.

The graph between two consecutive cut vertices ``c' -> c`` (``c`` included) is a segment; only
``c'``'s value enters it and only ``c``'s leaves it. Segments are joined into about
``n / module_ops`` modules of even size (:func:`modules`); a colour class never straddles two
modules. Each module but the last ends at its *boundary* cut vertex. A graph without cut vertices
is one module: the method is then :mod:`~tvm_place.solvers.diviml` itself. Cut sets of several
values (two parallel streams) are not used.

**Latency.** Every operator of a module descends from the previous boundary ``b``, so it starts no
earlier than ``b`` finishes, when every earlier operator has finished too. The state a module
inherits is ``b``'s device and finish time (and the devices' ready times, carried although they
cannot bind, and the memory left).

- ``scheme="sequential"`` (DiviML's, the default): modules are solved in order, each with that
  state, the boundary's device being the module's choice. Where memory binds, a module first
  gets its share of the memory left on each device (in proportion to the memory it holds), so
  that early modules do not fill the fast devices, and all of it if that fails. Every solve is
  hinted with HEFT's placement and takes at most :data:`LATENCY_MODULE_SECONDS`; the better of
  the result and HEFT's (by the evaluator) is returned. A heuristic: a boundary device good for
  one module may be bad for the next, and memory spent early is not available later. Each
  module's program sees it from time 0 (the earlier modules all finish before it starts: the
  same schedule, shifted), so a repeated layer with the same boundary device and hint, where
  memory cannot bind in it, makes the same program: it is solved once and its optimum reused
  (BERT-base on two CPUs: 3 solves for 8 modules).
- ``scheme="dp"`` (where memory cannot bind: no device could overflow even holding every operator
  it may run): the module's schedule is then that of the module alone shifted by ``b``'s finish,
  so the latency is the sum over modules of ``g_j(d_in, d_out)``, module ``j``'s makespan with
  its two boundaries on ``d_in`` and ``d_out``. The program gives ``g_j`` for every pair (``D^2``
  solves per module) and a shortest path over (module, boundary device) combines them:
  **exact** when every module is solved to optimality, and the same path over the modules'
  proven bounds is a valid lower bound, reported with the result. About ``D^2`` times slower
  than sequential; on the measured chains both found the same latency.

**Throughput** (no replicas, as in :mod:`~tvm_place.solvers.diviml`). Loads add up over modules,
so modules do not decouple. A boundary value's transfers depend only on its device and the next
module's operators (all its consumers are there), so a module's program charges the transfers of
the previous boundary (a fixed *input*) and of its own operators except its boundary: every
transfer is charged exactly once.

1. *Filling passes*: in module order, each module is placed to keep every device's load
   (earlier modules' included) within a target ``tau`` at the least work: ``10 x overflow +
   transfers + compute`` (:func:`~tvm_place.solvers.diviml.throughput_milp` with ``target``),
   like filling bins; chains then come out as pipelines. ``tau`` starts at
   :func:`~tvm_place.solvers.bounds.device_aware.device_aware_bound` and is bisected (:data:`TARGET_STEPS` passes)
   between the targets a pass overflowed and the best bottleneck found.
2. *Block-coordinate descent* from the best pass: each window of :data:`WINDOW` consecutive
   modules is re-solved minimising the bottleneck (plus :data:`TOTAL_WEIGHT` times the total
   load) with every other module's loads and memory as background, its outer boundary devices
   fixed and inner ones free; kept if the bottleneck drops, or stays and the total load drops.
   The bottleneck never rises. Up to :data:`REFINE_PASSES` passes.

If a filling pass gets stuck on memory, descent starts from HEFT's placement instead.

**Time.** The limit is shared over the solves still to do in proportion to their size, and a
throughput solve takes at most :data:`MODULE_SECONDS`; every solve is hinted with a placement, so
a solve cut short keeps at least that.

Complexity: ``O(n + m)`` to find the modules; then ``r`` programs of about ``module_ops``
operators (latency, sequential; a repeated one once), ``r D^2`` (latency, dp), or ``r`` per
filling pass plus ``r`` windows per descent pass (throughput); the DP itself is ``O(r D^2)``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import InfeasibleError, UnknownMethodError
from ..evaluate import evaluate
from ..graph import OBJECTIVES, Placement, PlacementProblem
from . import diviml
from .bounds.device_aware import device_aware_bound
from .common import reporter, require_objective
from .diviml import Subproblem
from .grouping import colocation_groups, feasible_devices

#: Default least number of operators per module, per objective (measured: see the module's tests
#: and the task report; larger modules lose less quality and cost more time per solve).
MODULE_OPS = {"latency": 24, "throughput": 60}

#: Block-coordinate descent passes over the modules at most (throughput).
REFINE_PASSES = 3

#: Throughput descent: weight of the total load (all devices) next to the bottleneck, so that a
#: window also sheds work where it cannot lower the bottleneck (kept if the bottleneck does not
#: rise and the total drops).
TOTAL_WEIGHT = 1e-3

#: Throughput descent re-solves windows of this many consecutive modules.
WINDOW = 2

#: A re-solved module must lower the bottleneck by this relative amount to be kept.
RELATIVE_IMPROVEMENT = 1e-9

#: Throughput: filling passes (bisection steps over the target) at most, the share of the time
#: they may take, and the relative overflow a pass may leave and still count as within target.
TARGET_STEPS = 4
FILL_SHARE = 0.6
TARGET_TOLERANCE = 0.005

#: Latency (sequential): seconds one module's program may take at most. Modules rarely need it
#: (chains: milliseconds); where memory binds, proving a module optimal can take much longer than
#: finding its best placement.
LATENCY_MODULE_SECONDS = 2.0

#: Throughput: seconds one module's program may take at most (the balancing programs rarely
#: prove optimality quickly, and a module is small: its first solutions are the useful ones).
MODULE_SECONDS = 1.0


def cut_vertices(problem: PlacementProblem) -> list[int]:
    """The operators every source-to-sink path passes through, in topological order."""
    order = problem.graph.topological_order.tolist()
    n = len(order)
    position = [0] * n
    for i, u in enumerate(order):
        position[u] = i
    succs, preds = problem.graph.successors, problem.graph.predecessors
    # reach[i]: the furthest position an operator before i sends to (n for a sink);
    # low[i]: the earliest position an operator after i receives from (-1 for a source).
    reach = [0] * n
    furthest = -1
    for i, u in enumerate(order):
        reach[i] = furthest
        furthest = max(furthest, max((position[v] for v in succs[u]), default=n))
    low = [0] * n
    earliest = n
    for i in range(n - 1, -1, -1):
        low[i] = earliest
        u = order[i]
        earliest = min(earliest, min((position[p] for p in preds[u]), default=-1))
    return [order[i] for i in range(n) if reach[i] <= i and low[i] >= i]


def modules(problem: PlacementProblem, module_ops: int) -> list[list[int]]:
    """The graph cut at cut vertices into about ``n / module_ops`` modules of even size (as far as
    the cut vertices allow), each in topological order; a module other than the last ends at a
    cut vertex, and no colour class straddles two modules."""
    order = problem.graph.topological_order.tolist()
    cuts = set(cut_vertices(problem))
    segments: list[list[int]] = [[]]
    for u in order:
        segments[-1].append(u)
        if u in cuts:
            segments.append([])
    if not segments[-1]:
        segments.pop()
    segment_of = {u: j for j, segment in enumerate(segments) for u in segment}
    joined = [False] * len(segments)  # joined[j]: segment j must join segment j + 1
    for colour in problem.colour_classes:
        touched = [segment_of[u] for u in colour]
        for j in range(min(touched), max(touched)):
            joined[j] = True
    # Join segments into about n / module_ops modules of even size: close a module where the
    # next segment would carry it further from its fair share (what is left over the modules
    # left) than stopping does, unless a colour class straddles that boundary.
    count = max(1, round(problem.num_ops / module_ops))
    result: list[list[int]] = []
    current: list[int] = []
    left = problem.num_ops
    for j, segment in enumerate(segments):
        current += segment
        share = left / max(1, count - len(result))
        nxt = len(segments[j + 1]) if j + 1 < len(segments) else 0
        if (nxt and not joined[j] and len(result) < count - 1
                and abs(len(current) + nxt - share) >= abs(len(current) - share)):
            result.append(current)
            left -= len(current)
            current = []
    if current:
        result.append(current)
    return result


def solve(problem: PlacementProblem, objective: str, time_limit: float, progress=None,
          module_ops: int | None = None, scheme: str | None = None) -> Placement:
    """Place ``problem`` for ``objective`` module by module within ``time_limit`` seconds.

    ``module_ops``: about how many operators a module holds (default :data:`MODULE_OPS`).
    ``scheme`` (latency): ``"sequential"`` (DiviML's: one solve per module, in order; the
    default) or ``"dp"`` (every pair of boundary devices, then a shortest path: exact
    composition, ``D^2`` solves per module; only where memory cannot bind, else sequential)."""
    require_objective("split", objective, OBJECTIVES)
    if scheme not in (None, "dp", "sequential"):
        raise UnknownMethodError(f"unknown split scheme {scheme!r}; use 'dp' or 'sequential'")
    started = time.perf_counter()
    deadline = started + max(0.0, time_limit)
    if module_ops is None:
        module_ops = MODULE_OPS[objective]

    report = reporter(progress)

    allowed = feasible_devices(problem)
    parts = modules(problem, module_ops)
    report(f"split: {len(parts)} modules of {problem.num_ops} operators "
           f"(sizes {min(map(len, parts))}..{max(map(len, parts))})", 0.0)
    if len(parts) == 1:
        placement = diviml.solve(problem, objective, time_limit, progress)
        placement.method = "split"
        placement.stats.update(modules=1, scheme="whole graph (no cut vertex)")
        return placement

    clock = _Clock(deadline, time_limit)
    # Once, on a share of the time: the LP behind it alone took seconds on 10,000 operators.
    known = device_aware_bound(problem, objective, diviml.BOUND_SHARE * time_limit)
    if objective == "latency":
        if scheme in (None, "sequential") or _memory_binds(problem, allowed):
            device_of, order, stats = _latency_sequential(problem, allowed, parts, clock, report)
            bound = 0.0
        else:
            device_of, order, bound, stats = _latency_dp(problem, allowed, parts, clock, report)
    else:
        device_of, order, stats = _throughput(problem, allowed, parts, clock, report, known)
        bound = 0.0
    value = evaluate(problem, device_of, order).objective(objective)
    bound = min(value, max(bound, known))
    report(f"split: {objective} {value:.6g}, bound {bound:.6g}", 1.0)
    return Placement(
        device_of=device_of,
        objective=objective,
        value=value,
        lower_bound=bound,
        method="split",
        order=order,
        stats={
            "modules": len(parts),
            "module_sizes": [len(part) for part in parts],
            "replicas": False,
            "seconds": time.perf_counter() - started,
            **stats,
        },
    )


class _Clock:
    """Shares what is left of the time limit over the solves still to do."""

    def __init__(self, deadline: float, time_limit: float):
        self.deadline = deadline
        self.margin = diviml.SAFETY_SHARE * time_limit + diviml.SAFETY_SECONDS

    def left(self) -> float:
        return self.deadline - time.perf_counter() - self.margin

    def share(self, work: float, work_left: float) -> float:
        """Seconds for a solve of ``work`` when ``work_left`` (itself included) remains."""
        return max(0.01, self.left() * work / max(work, work_left))


def _memory_binds(problem: PlacementProblem, allowed: np.ndarray) -> bool:
    """Whether some device could overflow: it may run more memory than it holds."""
    capacity = problem.capacity
    for k in range(problem.num_devices):
        if math.isfinite(capacity[k]) and problem.memory[allowed[:, k]].sum() > capacity[k]:
            return True
    return False


def _simple_hint(problem: PlacementProblem, allowed: np.ndarray, ops: list[int],
                 fixed: dict[int, int]) -> np.ndarray:
    """A device per operator of ``ops`` (an array over the whole graph) that meets support, pins,
    colour classes and ``fixed``, memory aside: each colour group on the device fastest for it."""
    hint = np.zeros(problem.num_ops, dtype=np.int64)
    inside = set(ops)
    for group in colocation_groups(problem):
        members = [u for u in group if u in inside]
        if not members:
            continue
        ok = allowed[members].all(axis=0)
        for u in members:
            if u in fixed:
                ok &= np.arange(problem.num_devices) == fixed[u]
        if not ok.any():
            ok = allowed[members[0]]
        cost = np.where(ok, problem.compute_time[members].sum(axis=0), np.inf)
        hint[members] = int(np.argmin(cost))
    return hint


# -- latency -------------------------------------------------------------------------------------


def _latency_dp(problem, allowed, parts, clock: _Clock, report):
    """Every module for every pair of boundary devices, then a shortest path (exact composition)."""
    r = len(parts)
    boundary = [part[-1] for part in parts[:-1]]
    devices_of = [np.flatnonzero(allowed[b]).tolist() for b in boundary]
    pairs = []  # (module, d_in, d_out) in solving order
    for j in range(r):
        ins = [None] if j == 0 else devices_of[j - 1]
        outs = [None] if j == r - 1 else devices_of[j]
        pairs += [(j, a, b) for a in ins for b in outs]
    work_left = sum(len(parts[j]) for j, _, _ in pairs)
    cost, lower, solution = {}, {}, {}
    statuses: dict[str, int] = {}
    for count, (j, d_in, d_out) in enumerate(pairs):
        part = parts[j]
        sub = Subproblem(ops=part)
        if d_in is not None:
            sub.inputs = {boundary[j - 1]: d_in}
            sub.input_finish = {boundary[j - 1]: 0.0}
        if d_out is not None:
            sub.fixed = {boundary[j]: d_out}
        hint = _simple_hint(problem, allowed, part, sub.fixed)
        result = diviml.latency_milp(problem, sub, allowed,
                                     clock.share(len(part), work_left), hint=hint)
        work_left -= len(part)
        statuses[result.status] = statuses.get(result.status, 0) + 1
        if result.status in ("optimal", "feasible"):
            _, finish, makespan = diviml._retime(problem, sub, result.device_of, result.order,
                                                 np.zeros(problem.num_devices), 1.0, integer=False)
            cost[j, d_in, d_out] = makespan
            lower[j, d_in, d_out] = result.bound
            solution[j, d_in, d_out] = result
        elif result.status == "infeasible":
            lower[j, d_in, d_out] = math.inf
        else:
            lower[j, d_in, d_out] = 0.0
        if count % 8 == 0:
            report(f"split: module {j + 1}/{r}, boundary devices {d_in}->{d_out}",
                   count / len(pairs))
    best, choice = _shortest_path(r, devices_of, cost)
    if not math.isfinite(best):
        raise InfeasibleError(
            "split found no placement of some module within the time limit; raise the time "
            "limit or use method 'diviml-milp'"
        )
    bound, _ = _shortest_path(r, devices_of, lower)
    device_of = np.full(problem.num_ops, -1, dtype=np.int64)
    order: list[int] = []
    for j, key in enumerate(choice):
        result = solution[(j, *key)]
        for u, d in result.device_of.items():
            device_of[u] = d
        order += result.order
    stats = {"scheme": "dp over boundary devices", "solves": len(pairs),
             "solve_statuses": statuses, "proven_bound": bound}
    # The DP over the modules' proven bounds bounds the optimum (the composition is exact).
    return device_of, np.array(order, dtype=np.int64), bound * (1 - 1e-12), stats


def _shortest_path(r, devices_of, cost):
    """min over boundary devices of sum_j cost[j, d_{j-1}, d_j]; returns the value and the
    chosen (d_in, d_out) per module."""
    best = {None: 0.0}
    back: list[dict] = []
    for j in range(r):
        outs = [None] if j == r - 1 else devices_of[j]
        nxt, arg = {}, {}
        for d_out in outs:
            nxt[d_out], arg[d_out] = math.inf, None
            for d_in, before in best.items():
                c = cost.get((j, d_in, d_out), math.inf)
                if before + c < nxt[d_out]:
                    nxt[d_out], arg[d_out] = before + c, d_in
        back.append(arg)
        best = nxt
    value = best[None]
    choice = []
    d_out = None
    for j in range(r - 1, -1, -1):
        d_in = back[j][d_out]
        choice.append((d_in, d_out))
        d_out = d_in
    return value, choice[::-1]


def _latency_sequential(problem, allowed, parts, clock: _Clock, report):
    """DiviML's sequential scheme: each module with the boundary's device and finish time, the
    devices' ready times and the memory left."""
    warm = diviml.warm_start(problem, min(diviml.WARM_START_SECONDS,
                                          diviml.WARM_START_SHARE * clock.left()),
                             diviml.WARM_START_WITHIN * clock.left())
    r = len(parts)
    device_of = np.full(problem.num_ops, -1, dtype=np.int64)
    order: list[int] = []
    ready = np.zeros(problem.num_devices)
    capacity = problem.capacity.copy()
    work_left = problem.num_ops
    stuck, finish_of_b = None, 0.0
    memory_left = float(problem.memory.sum())
    warm_position = None if warm is None else np.argsort(warm.order)
    solved: dict = {}  # _module_key -> the module's optimum, by position in the module
    reused = 0
    for j, part in enumerate(parts):
        sub = Subproblem(ops=part, ready=ready.copy())
        # The program sees the module alone, from time 0: every operator of a module after the
        # first descends from the boundary b, and every earlier one is an ancestor of b, so
        # nothing of the module starts before b finishes and every device is free by then; its
        # schedule is the module's alone shifted by b's finish (the retiming below shifts it).
        alone = Subproblem(ops=part)
        if j > 0:
            b = parts[j - 1][-1]
            sub.inputs, sub.input_finish = {b: int(device_of[b])}, {b: finish_of_b}
            alone.inputs, alone.input_finish = dict(sub.inputs), {b: 0.0}
        hint = None if warm is None else warm.device_of
        seconds = min(LATENCY_MODULE_SECONDS, clock.share(len(part), work_left))
        # First within the module's share of the memory left (in proportion to the memory it
        # holds), so that early modules do not take the fast devices' memory from later ones;
        # then, if that fails, within all the memory left.
        held = float(problem.memory[part].sum())
        share = held / memory_left if memory_left > 0 else 1.0
        key = _module_key(problem, allowed, alone, capacity * share, warm, warm_position)
        if key in solved:
            result = _relabelled(solved[key], part)
            reused += 1
        else:
            for capacity_now in (capacity * share, capacity):
                alone.capacity = np.where(np.isfinite(capacity_now), capacity_now, np.inf)
                result = diviml.latency_milp(problem, alone, allowed, seconds, hint=hint,
                                             hint_order=None if warm is None else warm.order)
                if result.status in ("optimal", "feasible") or share >= 1.0:
                    break
            if key is not None and result.status == "optimal":
                solved[key] = _by_position(result, part)
        work_left -= len(part)
        memory_left -= held
        if result.status not in ("optimal", "feasible"):
            stuck = j
            break
        for u, d in result.device_of.items():
            device_of[u] = d
            capacity[d] -= problem.memory[u]
        order += result.order
        _, finish, _ = diviml._retime(problem, sub, result.device_of, result.order, ready, 1.0,
                                      integer=False)
        for u, d in result.device_of.items():
            ready[d] = max(ready[d], finish[u])
        finish_of_b = finish[part[-1]]
        report(f"split: module {j + 1}/{r} placed", (j + 1) / r)
    candidates = []
    if stuck is None:
        order_array = np.array(order, dtype=np.int64)
        candidates.append((evaluate(problem, device_of, order_array).latency, 0, device_of,
                           order_array))
    if warm is not None:
        candidates.append((warm.value, 1, warm.device_of, warm.order))
    if not candidates:
        raise InfeasibleError(
            f"split could not place module {stuck + 1} of {r} in the memory the earlier modules "
            "left, and HEFT found no placement that fits; try method 'diviml-milp'"
        )
    _, source, device_of, order = min(candidates, key=lambda c: (c[0], c[1]))
    stats = {"scheme": "sequential", "stuck_at_module": stuck, "modules_reused": reused,
             "solution_from": "modules" if source == 0 else "warm_start"}
    return device_of, order, stats


def _module_key(problem: PlacementProblem, allowed: np.ndarray, alone: Subproblem,
                capacity: np.ndarray, warm, warm_position) -> tuple | None:
    """What the latency program of module ``alone`` (seen from time 0) is made of, by position in
    the module: equal keys make the same program, variable for variable and constraint for
    constraint, so one's optimum is the other's (a repeated layer is solved once). ``None`` where
    memory could bind in it (its program then depends on the memory earlier modules left) or an
    operator reads a value from outside other than the boundary's."""
    ops = alone.ops
    if np.any(problem.memory[ops] @ allowed[ops] > capacity):
        return None
    index = {u: i for i, u in enumerate(ops)}
    [boundary] = list(alone.inputs) or [None]
    rows = []
    for u in ops:
        reads = []
        for p in problem.graph.predecessors[u]:
            if p in index:
                reads.append(index[p])
            elif p == boundary:
                reads.append(-1)
            else:
                return None
        rows.append((tuple(problem.compute_time[u].tolist()), tuple(problem.transfer_time[u].tolist()),
                     tuple(allowed[u].tolist()), tuple(reads)))
    colours = tuple(tuple(index[u] for u in colour if u in index)
                    for colour in problem.colour_classes if any(u in index for u in colour))
    source = None if boundary is None else (alone.inputs[boundary],
                                            tuple(problem.transfer_time[boundary].tolist()))
    hint = None if warm is None else (tuple(warm.device_of[ops].tolist()),
                                      tuple(np.argsort(warm_position[ops]).tolist()))
    return tuple(rows), colours, source, hint


def _by_position(result: diviml.MilpResult, ops: list[int]) -> tuple[list[int], list[int]]:
    """A module's solution with operators named by their position in the module."""
    index = {u: i for i, u in enumerate(ops)}
    return [result.device_of[u] for u in ops], [index[u] for u in result.order]


def _relabelled(solution: tuple[list[int], list[int]], ops: list[int]) -> diviml.MilpResult:
    """:func:`_by_position`'s solution given to the module ``ops``."""
    devices, positions = solution
    return diviml.MilpResult("optimal", device_of=dict(zip(ops, devices)),
                             order=[ops[i] for i in positions])


# -- throughput ----------------------------------------------------------------------------------


def _throughput(problem, allowed, parts, clock: _Clock, report, known: float):
    """Filling passes searching the target, then block-coordinate descent over the modules."""
    r = len(parts)
    n_devices = problem.num_devices

    def sub_of(j: int, device_of, fix_end: bool) -> Subproblem:
        sub = Subproblem(ops=parts[j])
        if j > 0:
            b = parts[j - 1][-1]
            sub.inputs = {b: int(device_of[b])}
        if fix_end and j < r - 1:
            sub.fixed = {parts[j][-1]: int(device_of[parts[j][-1]])}
        return sub

    def account(j: int, sub: Subproblem, placed: dict[int, int], contribution, memory) -> None:
        contribution[j] = diviml.module_loads(problem, sub, placed)
        memory[j] = np.bincount(list(placed.values()), weights=problem.memory[list(placed)],
                                minlength=n_devices)

    def fill(target: float, seconds: float):
        """One pass in module order, each module filling the devices up to ``target`` with the
        least communication, within the memory the earlier modules left; ``None`` if a module
        finds no placement."""
        device_of = np.full(problem.num_ops, -1, dtype=np.int64)
        contribution = np.zeros((r, n_devices))
        memory = np.zeros((r, n_devices))
        pass_clock = _Clock(min(clock.deadline - clock.margin, time.perf_counter() + seconds), 0.0)
        for j, part in enumerate(parts):
            sub = sub_of(j, device_of, fix_end=False)
            sub.background = contribution[:j].sum(axis=0)
            sub.capacity = problem.capacity - memory[:j].sum(axis=0)
            result = diviml.throughput_milp(
                problem, sub, allowed,
                min(MODULE_SECONDS, pass_clock.share(len(part), sum(map(len, parts[j:])))),
                hint=_simple_hint(problem, allowed, part, {}), target=target)
            if result.status not in ("optimal", "feasible"):
                return None
            for u, d in result.device_of.items():
                device_of[u] = d
            account(j, sub, result.device_of, contribution, memory)
        return device_of, contribution, memory

    # Filling passes: a pass that keeps every device within its target proves that target
    # reachable, one that overflows suggests a higher one: bisect between the lower bound and
    # the best bottleneck found.
    low = known
    best = None
    targets_tried = []
    high = math.inf
    target = low
    for step in range(TARGET_STEPS):
        seconds = FILL_SHARE * clock.left() / (TARGET_STEPS - step)
        if seconds <= 0.05:
            break
        outcome = fill(target, seconds)
        if outcome is None:
            break  # memory: the pass gets stuck whatever the target; HEFT below
        bottleneck = float(outcome[1].sum(axis=0).max())
        targets_tried.append((target, bottleneck))
        if best is None or bottleneck < best[0]:
            best = (bottleneck, *outcome)
        if bottleneck <= target * (1 + TARGET_TOLERANCE):
            high = min(high, bottleneck)
        else:
            low = max(low, target)
        high = min(high, best[0])
        report(f"split: filling pass with target {target:.6g}: bottleneck {bottleneck:.6g}",
               0.5 * (step + 1) / TARGET_STEPS)
        if high <= low * (1 + TARGET_TOLERANCE):
            break
        target = (low + high) / 2

    if best is not None:
        _, device_of, contribution, memory = best
        start_from = "filling passes"
    else:
        warm = diviml.warm_start(problem, min(diviml.WARM_START_SECONDS, 0.1 * clock.left()),
                                 diviml.WARM_START_WITHIN * clock.left())
        if warm is None:
            raise InfeasibleError(
                f"split could not place the modules of {problem.num_ops} operators in the memory "
                "the earlier modules left, and HEFT found no placement that fits; try method "
                "'diviml-milp'"
            )
        device_of = warm.device_of.copy()
        contribution = np.zeros((r, n_devices))
        memory = np.zeros((r, n_devices))
        for j in range(r):
            account(j, sub_of(j, device_of, fix_end=False),
                    {u: int(device_of[u]) for u in parts[j]}, contribution, memory)
        start_from = "heft (the filling pass ran out of memory)"

    # Block-coordinate descent: each window of WINDOW consecutive modules against all the
    # others, its outer boundaries fixed and its inner ones free (so cuts can move across
    # module boundaries); a window's new placement is kept if the bottleneck drops.
    passes, kept = 0, 0
    width = min(WINDOW, r)
    windows = [list(range(j, j + width)) for j in range(r - width + 1)]
    work_left = problem.num_ops * width * REFINE_PASSES
    for passes in range(1, REFINE_PASSES + 1):
        improved = False
        for window in windows:
            if clock.left() <= 0.05:
                break
            ops = [u for j in window for u in parts[j]]
            first, last = window[0], window[-1]
            current = contribution.sum(axis=0).max(), contribution.sum()
            sub = Subproblem(ops=ops)
            if first > 0:
                b = parts[first - 1][-1]
                sub.inputs = {b: int(device_of[b])}
            if last < r - 1:
                sub.fixed = {parts[last][-1]: int(device_of[parts[last][-1]])}
            sub.background = contribution.sum(axis=0) - contribution[window].sum(axis=0)
            sub.capacity = problem.capacity - (memory.sum(axis=0) - memory[window].sum(axis=0))
            result = diviml.throughput_milp(
                problem, sub, allowed, min(MODULE_SECONDS, clock.share(len(ops), work_left)),
                hint=device_of, total_weight=TOTAL_WEIGHT)
            work_left -= len(ops)
            if result.status not in ("optimal", "feasible"):
                continue
            trial = device_of.copy()
            for u, d in result.device_of.items():
                trial[u] = d
            before = contribution[window].copy(), memory[window].copy()
            for j in window:
                account(j, sub_of(j, trial, fix_end=False),
                        {u: int(trial[u]) for u in parts[j]}, contribution, memory)
            loads = contribution.sum(axis=0)
            lower = loads.max() < current[0] * (1 - RELATIVE_IMPROVEMENT)
            lighter = (loads.max() <= current[0]
                       and loads.sum() < current[1] * (1 - RELATIVE_IMPROVEMENT))
            if lower or lighter:
                device_of = trial
                kept += 1
                improved = True
            else:
                contribution[window], memory[window] = before
        report(f"split: descent pass {passes}, bottleneck {contribution.sum(axis=0).max():.6g}",
               0.5 + 0.5 * passes / REFINE_PASSES)
        if not improved or clock.left() <= 0.05:
            break
    stats = {"scheme": "filling passes + block-coordinate descent", "start_from": start_from,
             "targets": targets_tried, "descent_passes": passes, "modules_improved": kept}
    return device_of, None, stats
