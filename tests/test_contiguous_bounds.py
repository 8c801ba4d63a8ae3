"""The contiguous bounds (chain model, heaviest block) and the cut bound: brute force and the dp."""

from __future__ import annotations

import math

import numpy as np
import pytest
from brute_force import best_throughput, random_problem

from tvm_place.errors import InvalidPlacementError
from tvm_place.evaluate import evaluate, validate
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem
from tvm_place.solvers import bounds, dp, grouping, slicegraph, solve
from tvm_place.solvers.bounds import contiguous

TOLERANCE = 1e-9
#: The chain bound is the model's optimum lowered by MIP_SAFETY, and costs are rounded down to
#: 1e-9 of the combinatorial bound: a solved model is this close to the optimum.
SOLVED = 1e-5


def _identical(problem: PlacementProblem, rng: np.random.Generator) -> PlacementProblem:
    """``problem`` with every device a copy of the first (compute, transfer, capacity)."""
    K = problem.num_devices
    compute = np.repeat(problem.compute_time[:, :1], K, axis=1)
    transfer = np.repeat(problem.transfer_time[:, :1], K, axis=1)
    if rng.random() < 0.3:
        transfer = transfer * 0.0  # no communication: the bound is a pure balancing one
    capacity = problem.devices[0].memory_capacity
    devices = [Device(name=f"gpu{d}", kind="gpu", memory_capacity=capacity) for d in range(K)]
    return PlacementProblem(
        graph=problem.graph, devices=devices, compute_time=compute, transfer_time=transfer,
        memory=problem.memory, colour_classes=problem.colour_classes, name="identical",
    )


def _feasible_optimum(problem: PlacementProblem, contiguous: bool) -> float:
    """The best max-load by brute force; a problem with no feasible placement has nothing to
    bound, and skips the test."""
    optimum = best_throughput(problem, contiguous=contiguous)
    if not math.isfinite(optimum):
        pytest.skip("no feasible placement: nothing to bound")
    return optimum


def _case(seed: int) -> PlacementProblem:
    rng = np.random.default_rng([seed, 77])
    K = int(rng.integers(2, 5))
    num_ops = int(rng.integers(2, {2: 10, 3: 7, 4: 6}[K] + 1))
    problem = random_problem(
        rng, num_ops, K, edge_probability=float(rng.uniform(0.2, 0.6)),
        memory_caps=bool(seed & 1), colour_classes=bool(seed & 2),
    )
    return _identical(problem, rng)


@pytest.mark.parametrize("seed", range(60))
def test_chain_bound_never_exceeds_the_contiguous_optimum_and_is_exact_when_solved(seed):
    problem = _case(seed)
    optimum = _feasible_optimum(problem, contiguous=True)
    groups = grouping.contract(problem)
    assert contiguous.chain_applies(problem, groups)
    # No cap, the optimum as cap, and a cap below the optimum (a wrong target only loses bound).
    for target in (math.inf, optimum, 0.7 * optimum):
        result = contiguous.chain_bound(problem, 5.0, groups, target=target)
        assert result.value <= optimum * (1 + TOLERANCE), (target, result, optimum)
        if target >= optimum:
            assert result.status == "optimal", result
            assert result.value >= optimum * (1 - SOLVED), (result, optimum)
    # With a floor (a bound already held) the result is still valid.
    floor = contiguous.combinatorial_bound(problem, groups)
    result = contiguous.chain_bound(problem, 5.0, groups, floor=floor, target=optimum)
    assert floor * (1 - 2e-6) <= result.value <= optimum * (1 + TOLERANCE)


@pytest.mark.parametrize("seed", range(20))
def test_chain_bound_probes_stay_valid_under_tight_time(seed):
    # Tiny budgets stop CP-SAT early: whatever was proven by then must hold.
    problem = _case(seed)
    optimum = _feasible_optimum(problem, contiguous=True)
    for limit in (0.02, 0.1):
        result = contiguous.chain_bound(problem, limit, target=optimum * 1.5)
        assert result.value <= optimum * (1 + TOLERANCE)


def _pipeline_problem(seed: int, num_ops: int, K: int) -> PlacementProblem:
    """A layered random DAG with skip edges on ``K`` equal devices (a small testbed pipeline)."""
    rng = np.random.default_rng([seed, 5])
    edges = set()
    for v in range(1, num_ops):
        edges.add((v - 1, v))
        for u in range(max(0, v - 4), v - 1):
            if rng.random() < 0.25:
                edges.add((u, v))
    nodes = [OpNode(name=f"op{u}") for u in range(num_ops)]
    compute = np.repeat(rng.uniform(0.5, 5.0, (num_ops, 1)), K, axis=1)
    transfer = np.repeat(rng.uniform(0.5, 6.0, (num_ops, 1)), K, axis=1)
    devices = [Device(name=f"gpu{d}", kind="gpu") for d in range(K)]
    return PlacementProblem(
        graph=OpGraph(nodes, sorted(edges)), devices=devices, compute_time=compute,
        transfer_time=transfer, memory=np.ones(num_ops), name="pipeline",
    )


@pytest.mark.parametrize("seed,num_ops,K", [(0, 24, 4), (1, 30, 8), (2, 36, 6), (3, 20, 16)])
def test_chain_bound_matches_the_exact_dp(seed, num_ops, K):
    problem = _pipeline_problem(seed, num_ops, K)
    exact = dp.solve(problem, "throughput", 30.0)
    assert exact.stats.get("optimal")
    result = contiguous.chain_bound(problem, 10.0, target=exact.value)
    assert result.value <= exact.value * (1 + TOLERANCE)
    assert result.value >= exact.value * (1 - SOLVED), (result, exact.value)
    # Communication matters here: the combinatorial bound is far lower.
    assert contiguous.combinatorial_bound(problem) < 0.9 * exact.value


def test_chain_bound_skips_unequal_devices():
    rng = np.random.default_rng(3)
    problem = random_problem(rng, 6, 3)
    result = contiguous.chain_bound(problem, 1.0)
    assert result.status == "skipped" and result.value == 0.0
    assert contiguous.lower_bounds(problem, 0.5)["chain"].status == "skipped"


def test_slicegraph_proves_optimality_through_the_chain_model():
    problem = _pipeline_problem(7, 30, 6)
    placement = slicegraph.solve(problem, "throughput", 6.0)
    exact = dp.solve(problem, "throughput", 30.0)
    assert placement.stats["bounds"]["chain"]["value"] <= exact.value * (1 + TOLERANCE)
    assert placement.lower_bound <= exact.value * (1 + TOLERANCE)
    if placement.value <= exact.value * (1 + 1e-9):
        assert placement.stats["optimal"], placement.stats["bounds"]


# -- the cut bound and the heaviest-block bound (module docstring, 5 and 6) ----------------------


def _least_cost_load(problem: PlacementProblem, groups, chosen: set[int]) -> float:
    """``f(S)`` of the module docstring for the groups ``chosen``, from the operator-level edges:
    least compute over the devices that fit each group, least transfer over all devices."""
    best_compute = np.where(groups.fits(problem), groups.compute, np.inf).min(axis=1)
    transfer = problem.transfer_time.min(axis=1)
    inside = np.isin(groups.group_of, sorted(chosen))
    load = sum(best_compute[g] for g in chosen)
    for u in range(problem.num_ops):
        consumers = problem.graph.edges[problem.graph.edges[:, 0] == u, 1]
        if inside[u] and (~inside[consumers]).any():
            load += transfer[u]  # the send
        if not inside[u] and inside[consumers].any():
            load += transfer[u]  # the receive, once
    return float(load)


def _ideals(groups) -> list[frozenset[int]]:
    """Every set of groups closed under predecessors (group-level contiguity edges)."""
    G = groups.num_groups
    result = []
    for mask in range(1 << G):
        chosen = {g for g in range(G) if mask >> g & 1}
        if all(g in chosen for g, h in groups.edges.tolist() if h in chosen):
            result.append(frozenset(chosen))
    return result


def _small_case(seed: int) -> PlacementProblem:
    """Unequal devices (each its own costs), few enough groups to enumerate their subsets."""
    rng = np.random.default_rng([seed, 91])
    return random_problem(rng, int(rng.integers(2, 9)), int(rng.integers(2, 4)),
                          edge_probability=float(rng.uniform(0.2, 0.6)),
                          memory_caps=bool(seed & 1), colour_classes=bool(seed & 2))


def _small_case_solved(seed: int):
    """A :func:`_small_case`, its contiguous optimum by brute force, and its groups."""
    problem = _small_case(seed)
    return problem, _feasible_optimum(problem, contiguous=True), grouping.contract(problem)


# Costs are rounded down to 1e-6 (cut) / 1e-9 (heaviest) of the combinatorial bound, and the
# CP-SAT answer is lowered by MIP_SAFETY: a computed bound is this close to the enumerated one.
ROUNDED = 1e-4


@pytest.mark.parametrize("seed", range(40))
def test_cut_bound_is_the_enumerated_max_min_cut_and_valid(seed):
    problem, optimum, groups = _small_case_solved(seed)
    G = groups.num_groups
    subsets = [{g for g in range(G) if mask >> g & 1} for mask in range(1, 1 << G)]
    enumerated = max(min(_least_cost_load(problem, groups, S) for S in subsets if g in S)
                     for g in range(G))
    result = bounds.cut_bound(problem, 5.0, groups)
    assert result.status == "optimal"
    assert enumerated * (1 - ROUNDED) - 1e-12 <= result.value <= enumerated * (1 + 1e-12) + 1e-12
    assert result.value <= optimum * (1 + TOLERANCE) + 1e-12


@pytest.mark.parametrize("seed", range(40))
def test_heaviest_block_bound_is_the_enumerated_block_minimum_and_valid(seed):
    problem, optimum, groups = _small_case_solved(seed)
    least = np.where(groups.fits(problem), groups.compute, np.inf).min(axis=1)
    share = least.sum() / problem.num_devices
    ideals = _ideals(groups)
    blocks = {I - J for I in ideals for J in ideals if J <= I}
    enumerated = min(_least_cost_load(problem, groups, set(B)) for B in blocks
                     if least[sorted(B)].sum() >= share * (1 - 1e-12))
    for target in (math.inf, optimum):
        result = contiguous.heaviest_block_bound(problem, 5.0, groups, target=target)
        assert result.value <= optimum * (1 + TOLERANCE) + 1e-12, (target, result, optimum)
        assert result.status == "optimal", result
        assert enumerated * (1 - ROUNDED) - 1e-12 <= result.value <= enumerated * (1 + 1e-9) + 1e-12


def test_the_new_bounds_charge_communication_where_the_combinatorial_one_cannot():
    # Layered graphs with transfers as large as the compute: the best split pays them.
    problem = _pipeline_problem(4, 40, 8)
    exact = dp.solve(problem, "throughput", 30.0)
    assert exact.stats.get("optimal")
    combinatorial = contiguous.combinatorial_bound(problem)
    cut = bounds.cut_bound(problem, 5.0)
    heaviest = contiguous.heaviest_block_bound(problem, 5.0, target=exact.value)
    for result in (cut, heaviest):
        assert combinatorial * 1.2 < result.value, (result, combinatorial)
        assert result.value <= exact.value * (1 + TOLERANCE)


def test_cut_and_heaviest_bounds_stop_at_their_time_limit_with_a_valid_bound():
    problem = _pipeline_problem(5, 300, 16)
    groups = grouping.contract(problem)
    exact = dp.solve(problem, "throughput", 60.0)
    for bound in (bounds.cut_bound, contiguous.heaviest_block_bound):
        result = bound(problem, 0.05, groups)
        assert result.seconds < 2.0, (bound.__name__, result)
        assert result.value <= exact.value * (1 + TOLERANCE)


@pytest.mark.parametrize("seed", range(40))
def test_general_cut_bound_holds_for_every_placement(seed):
    # By default the cut bound keeps colour classes and costless satellites whole, not
    # contiguity cycles, so it bounds non-contiguous placements too; so does best_bound.
    problem = _small_case(seed)
    optimum = _feasible_optimum(problem, contiguous=False)
    work = bounds.work_bound(problem)
    value = bounds.cut_bound(problem, 5.0, floor=work).value
    assert work * (1 - ROUNDED) <= value <= optimum * (1 + TOLERANCE) + 1e-12
    best = bounds.best_bound(problem, "throughput", False, 5.0)
    assert value * (1 - ROUNDED) <= best <= optimum * (1 + TOLERANCE) + 1e-12


def test_solve_reports_the_cut_bound_for_every_throughput_method():
    problem = _pipeline_problem(4, 40, 8)
    work = bounds.work_bound(problem)
    cut = bounds.cut_bound(problem, 5.0).value
    assert cut > 1.2 * work
    placement = solve(problem, "throughput", "greedy", 10.0)
    assert min(placement.value, cut) * (1 - 1e-12) <= placement.lower_bound <= placement.value


@pytest.mark.parametrize("seed", range(30))
def test_chain_model_from_a_hint_finds_a_contiguous_chain_no_worse_and_stays_a_bound(seed):
    # The hint is the one-device chain (a valid chain: block 0 holds every group); the chain the
    # model returns is a valid contiguous placement, its bound at most the brute-force optimum,
    # and solved (tiny graphs) the chain is the optimum up to the model's rounding.
    problem = _case(seed)
    optimum = _feasible_optimum(problem, contiguous=True)
    groups = grouping.contract(problem)
    try:  # the one-device chain's value caps the model, where memory lets it be a placement
        target = evaluate(problem, np.zeros(problem.num_ops, dtype=np.int64)).max_load
    except InvalidPlacementError:
        target = math.inf
    result = contiguous.chain_bound(problem, 5.0, groups, target=target,
                                    hint=np.zeros(groups.num_groups, dtype=np.int64),
                                    probes=False)
    assert result.value <= optimum * (1 + TOLERANCE), (result, optimum)
    if "block_of_group" not in result.details:
        # Nothing under the cap: only where the one-device chain is already the optimum.
        assert target <= optimum * (1 + SOLVED), (result, optimum, target)
        return
    device_of = result.details["block_of_group"][groups.group_of]
    validate(problem, device_of, contiguous=True)
    value = evaluate(problem, device_of).max_load
    assert optimum * (1 - TOLERANCE) <= value <= target * (1 + SOLVED)
    if result.status == "optimal":
        assert value <= optimum * (1 + SOLVED), (value, optimum)
