"""The baselines (fastest-device, greedy, etf, pipedream) and comm-balanced: against exhaustive
search on small random problems, on hand-made cases, at 500 operators; and rebalancing."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import numpy as np
import pytest


from brute_force import (  # noqa: E402
    best_latency,
    best_throughput,
    random_problem,
    topological_orders,
)

from tvm_place.errors import (  # noqa: E402
    InfeasibleError,
    InvalidGraphError,
    InvalidPlacementError,
    UnknownMethodError,
)
from tvm_place.evaluate import evaluate, validate  # noqa: E402
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem  # noqa: E402
from tvm_place.solvers import METHODS as REGISTRY  # noqa: E402
from tvm_place.solvers import baselines, bounds, comm_balanced, method_function  # noqa: E402
from time_allowance import allowed_seconds

#: method -> (function, objectives it solves), straight from the registry
METHODS = {
    name: (method_function(name), REGISTRY[name].objectives)
    for name in ("fastest-device", "greedy", "etf", "pipedream", "comm-balanced")
}
CASES = [(name, objective) for name, (_, objectives) in METHODS.items() for objective in objectives]

#: Random problems compared with exhaustive search; the tight ones have memory caps of 25..60%
#: of the total, so that some are infeasible and some strand the greedy passes.
SMALL_SEEDS = range(120)
TIGHT_MEMORY_SEEDS = range(90, 120)

#: Cap on assignments x execution orders the exhaustive latency search evaluates per problem.
EXHAUSTIVE_BUDGET = 1500

TIME_LIMIT = 2.0


def run(name: str, problem: PlacementProblem, objective: str, time_limit: float = TIME_LIMIT):
    function, _ = METHODS[name]
    return function(problem, objective, time_limit)


def small_problem(seed: int) -> PlacementProblem:
    """2..6 operators on 2..3 devices (shrunk until brute force is cheap), with memory caps,
    colour classes, unsupported operators and pins drawn at random."""
    rng = np.random.default_rng(1000 + seed)
    num_devices = int(rng.integers(2, 4))
    flags = {name: bool(rng.random() < chance) for name, chance in (
        ("memory_caps", 0.5), ("colour_classes", 0.5), ("unsupported", 0.5),
        ("cpu_pays_no_transfer", 0.25),
    )}
    problem = random_problem(rng, int(rng.integers(2, 7)), num_devices, **flags)
    while num_devices ** problem.num_ops * len(list(topological_orders(problem))) > \
            EXHAUSTIVE_BUDGET:
        problem = random_problem(rng, problem.num_ops - 1, num_devices, **flags)
    if seed in TIGHT_MEMORY_SEEDS:
        total = problem.memory.sum()
        problem = dataclasses.replace(problem, devices=[
            dataclasses.replace(d, memory_capacity=float(rng.uniform(0.25, 0.6) * total))
            for d in problem.devices
        ])
    if rng.random() < 0.25:
        u = int(rng.integers(problem.num_ops))
        devices = rng.choice(num_devices, size=int(rng.integers(1, 3)), replace=False)
        problem = dataclasses.replace(problem, pins={u: tuple(int(d) for d in devices)})
    return problem


def best_slicing(problem: PlacementProblem, order: np.ndarray) -> float:
    """Minimum max-load over every cut of ``order`` into stages on distinct devices that form a
    pipeline (contiguous)."""
    n, best = problem.num_ops, math.inf
    for stages in range(1, min(n, problem.num_devices) + 1):
        for cuts in itertools.combinations(range(1, n), stages - 1):
            ends = (0, *cuts, n)
            for devices in itertools.permutations(range(problem.num_devices), stages):
                device_of = np.zeros(n, dtype=np.int64)
                for s, d in enumerate(devices):
                    device_of[order[ends[s]:ends[s + 1]]] = d
                try:
                    validate(problem, device_of, contiguous=True)
                except InvalidPlacementError:
                    continue
                best = min(best, evaluate(problem, device_of).max_load)
    return best


def single_device_values(problem: PlacementProblem) -> list[float]:
    values = []
    for d in range(problem.num_devices):
        try:
            values.append(evaluate(problem, np.full(problem.num_ops, d)).max_load)
        except InvalidPlacementError:
            pass
    return values


@pytest.fixture(scope="module")
def small_cases():
    """Per seed: the problem, the optima, and each (method, objective)'s Placement or error."""
    cases = []
    for seed in SMALL_SEEDS:
        problem = small_problem(seed)
        outcomes = {}
        for name, objective in CASES:
            try:
                outcomes[name, objective] = run(name, problem, objective)
            except InfeasibleError as error:
                outcomes[name, objective] = error
        cases.append({
            "seed": seed,
            "problem": problem,
            "optimum": {"throughput": best_throughput(problem), "latency": best_latency(problem)},
            "outcomes": outcomes,
        })
    return cases


def test_small_cases_cover_constraints(small_cases):
    problems = [case["problem"] for case in small_cases]
    assert len(problems) >= 100
    assert sum(bool(p.colour_classes) for p in problems) >= 20
    assert sum(bool(p.pins) for p in problems) >= 10
    assert sum(np.isinf(p.compute_time).any() for p in problems) >= 20
    assert sum(np.isfinite(p.capacity).all() for p in problems) >= 40
    infeasible = sum(math.isinf(case["optimum"]["throughput"]) for case in small_cases)
    assert 3 <= infeasible <= 40


def test_placements_validate_and_match_the_evaluator(small_cases):
    for case in small_cases:
        problem = case["problem"]
        for (name, objective), outcome in case["outcomes"].items():
            if isinstance(outcome, Exception):
                continue
            where = f"seed {case['seed']}, {name}/{objective}"
            assert outcome.method == name and outcome.objective == objective, where
            validate(problem, outcome.device_of, outcome.order)
            assert (outcome.order is not None) == (objective == "latency"), where
            measured = evaluate(problem, outcome.device_of, outcome.order).objective(objective)
            assert math.isclose(outcome.value, measured, rel_tol=1e-9, abs_tol=1e-12), where
            assert outcome.lower_bound == min(measured, bounds.lower_bound(problem, objective))


def test_no_method_beats_brute_force_and_bounds_stay_below(small_cases):
    for case in small_cases:
        for (name, objective), outcome in case["outcomes"].items():
            optimum = case["optimum"][objective]
            if isinstance(outcome, Exception):
                continue
            where = f"seed {case['seed']}, {name}/{objective}"
            assert outcome.value >= optimum * (1 - 1e-9), where
            assert outcome.lower_bound <= optimum * (1 + 1e-9), where


def test_infeasible_problems_raise_and_feasible_ones_are_placed(small_cases):
    for case in small_cases:
        problem = case["problem"]
        feasible = math.isfinite(case["optimum"]["throughput"])
        alone = single_device_values(problem)
        for (name, objective), outcome in case["outcomes"].items():
            where = f"seed {case['seed']}, {name}/{objective}"
            if name == "fastest-device":
                expected = bool(alone)
            elif name == "pipedream":
                order, _ = baselines.pipeline_order(problem)
                expected = math.isfinite(best_slicing(problem, order))
            else:
                expected = feasible
            if expected:
                assert not isinstance(outcome, Exception), f"{where}: {outcome}"
            else:
                assert isinstance(outcome, InfeasibleError), where
                assert len(str(outcome)) > 40, where


def test_fastest_device_is_the_best_single_device(small_cases):
    for case in small_cases:
        alone = single_device_values(case["problem"])
        for objective in ("throughput", "latency"):
            outcome = case["outcomes"]["fastest-device", objective]
            if alone:
                assert len(set(outcome.device_of.tolist())) == 1
                assert math.isclose(outcome.value, min(alone), rel_tol=1e-12)


def test_pipedream_is_the_best_contiguous_slicing_of_its_order(small_cases):
    checked = 0
    for case in small_cases:
        problem = case["problem"]
        outcome = case["outcomes"]["pipedream", "throughput"]
        if isinstance(outcome, Exception):
            continue
        validate(problem, outcome.device_of, contiguous=True)
        order, _ = baselines.pipeline_order(problem)
        # Each device holds one contiguous run of the order.
        runs = [d for k, d in enumerate(outcome.device_of[order]) if k == 0 or
                d != outcome.device_of[order[k - 1]]]
        assert len(runs) == len(set(runs)), case["seed"]
        assert math.isclose(outcome.value, best_slicing(problem, order), rel_tol=1e-9), case["seed"]
        checked += 1
    assert checked >= 80


def training_problem(seed: int) -> PlacementProblem:
    """A random forward DAG of 2..4 layers, its backward mirror (gradients flow back, each
    backward node reads its forward mate's activation and shares its device), and sometimes an
    orphan backward node (no forward mate) that sums two gradients."""
    rng = np.random.default_rng(5000 + seed)
    layers = int(rng.integers(2, 5))
    num_devices = int(rng.integers(2, 4))
    forward = [(u, v) for v in range(layers) for u in range(v) if rng.random() < 0.5]
    edges = forward + [(layers + v, layers + u) for u, v in forward]
    edges += [(u, layers + u) for u in range(layers)]
    nodes = [OpNode(f"f{u}") for u in range(layers)] + \
        [OpNode(f"b{u}", is_backward=True) for u in range(layers)]
    if rng.random() < 0.5:
        nodes.append(OpNode("sum", is_backward=True))
        edges += [(layers, 2 * layers), (2 * layers - 1, 2 * layers)]
    n = len(nodes)
    return PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=[Device(f"dev{d}") for d in range(num_devices)],
        compute_time=rng.uniform(0.1, 10.0, size=(n, num_devices)),
        transfer_time=rng.uniform(0.0, 3.0, size=(n, num_devices)),
        colour_classes=[[u, layers + u] for u in range(layers)],
    )


@pytest.mark.parametrize("seed", range(30))
def test_pipedream_on_training_graphs_keeps_layers_whole(seed):
    problem = training_problem(seed)
    placement = baselines.pipedream(problem, "throughput", TIME_LIMIT)
    order, _ = baselines.pipeline_order(problem)
    validate(problem, placement.device_of, contiguous=True)
    assert math.isclose(placement.value, evaluate(problem, placement.device_of).max_load,
                        rel_tol=1e-9)
    assert math.isclose(placement.value, best_slicing(problem, order), rel_tol=1e-9)
    if problem.num_devices ** problem.num_ops <= 1000:
        assert placement.value >= best_throughput(problem) * (1 - 1e-9)


def test_heuristics_often_find_the_optimum(small_cases):
    """Not a guarantee, a regression guard on quality: comm-balanced reaches the optimum on most
    small throughput problems (91 of 93 feasible ones when written)."""
    optimal = total = 0
    for case in small_cases:
        outcome = case["outcomes"]["comm-balanced", "throughput"]
        if isinstance(outcome, Exception):
            continue
        total += 1
        optimal += math.isclose(outcome.value, case["optimum"]["throughput"], rel_tol=1e-9)
    assert optimal >= 0.85 * total


# -- hand-made cases --------------------------------------------------------------------------


def problem_of(compute, edges=(), transfer=None, memory=None, capacity=None, pins=None,
               colour_classes=()):
    compute = np.array(compute, dtype=float)
    n, num_devices = compute.shape
    capacity = capacity or [math.inf] * num_devices
    return PlacementProblem(
        graph=OpGraph([OpNode(f"op{u}") for u in range(n)], edges),
        devices=[Device(f"dev{d}", memory_capacity=capacity[d]) for d in range(num_devices)],
        compute_time=compute,
        transfer_time=np.zeros((n, num_devices)) if transfer is None else transfer,
        memory=memory,
        pins=pins or {},
        colour_classes=list(colour_classes),
    )


def test_etf_starts_the_earliest_pair_and_spreads_independent_work():
    # Two equal devices, four independent operators: ETF puts two on each.
    problem = problem_of([[1.0, 1.0]] * 4)
    placement = baselines.etf(problem, "latency", TIME_LIMIT)
    assert placement.value == 2.0
    assert sorted(np.bincount(placement.device_of, minlength=2).tolist()) == [2, 2]
    # A chain whose transfer costs more than waiting stays on one device.
    transfer = np.full((3, 2), 5.0)
    chain = problem_of([[1.0, 1.0]] * 3, edges=[(0, 1), (1, 2)], transfer=transfer)
    assert baselines.etf(chain, "latency", TIME_LIMIT).value == 3.0


def test_greedy_gives_the_faster_device_the_larger_share():
    # Device 0 is twice as fast: it gets the first two thirds of a 6-operator chain.
    chain = problem_of([[1.0, 2.0]] * 6, edges=[(u, u + 1) for u in range(5)])
    placement = baselines.greedy(chain, "throughput", TIME_LIMIT)
    assert placement.device_of.tolist() == [0, 0, 0, 0, 1, 1]
    # An operator device 0 does not support overflows to device 1 alone; the fill goes on.
    # Speeds 1 and 3.5 / 6.5: device 0's share is 3.5 / (1 + 3.5 / 6.5) = 2.275 of 3.5.
    unsupported = problem_of([[1.0, 2.0], [math.inf, 0.5], [1.0, 2.0], [1.0, 2.0]],
                             edges=[(0, 1), (1, 2), (2, 3)])
    assert baselines.greedy(unsupported, "throughput", TIME_LIMIT).device_of.tolist() == \
        [0, 1, 0, 1]


def test_fastest_device_says_when_no_device_holds_everything():
    problem = problem_of([[1.0, math.inf], [math.inf, 1.0]])
    with pytest.raises(InfeasibleError, match="no single device"):
        baselines.fastest_device(problem, "throughput", TIME_LIMIT)
    # The same model splits fine for the other methods.
    assert baselines.greedy(problem, "throughput", TIME_LIMIT).device_of.tolist() == [0, 1]
    assert comm_balanced.solve(problem, "latency", TIME_LIMIT).device_of.tolist() == [0, 1]


def test_pipedream_respects_colour_classes_memory_and_reports_no_slicing():
    # Operators 0 and 2 must share a device, so no cut between them: one stage holds 0..2.
    problem = problem_of([[1.0, 1.0]] * 4, edges=[(0, 1), (1, 2), (2, 3)],
                         colour_classes=[[0, 2]])
    placement = baselines.pipedream(problem, "throughput", TIME_LIMIT)
    assert len(set(placement.device_of[:3].tolist())) == 1
    # Memory forces devices 0, 1, 0: no slicing into stages on distinct devices exists.
    pinned = problem_of([[1.0, 1.0]] * 3, edges=[(0, 1), (1, 2)], pins={0: (0,), 1: (1,), 2: (0,)})
    with pytest.raises(InfeasibleError, match="no slicing"):
        baselines.pipedream(pinned, "throughput", TIME_LIMIT)
    assert comm_balanced.solve(pinned, "throughput", TIME_LIMIT).device_of.tolist() == [0, 1, 0]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_infeasible_memory_and_support_raise_clear_errors(name):
    function, objectives = METHODS[name]
    too_big = problem_of([[1.0, 1.0]] * 2, memory=[5.0, 5.0], capacity=[4.0, 4.0])
    with pytest.raises(InfeasibleError, match="memory|capacity"):
        function(too_big, objectives[0], TIME_LIMIT)
    nowhere = problem_of([[1.0, 1.0], [math.inf, math.inf]], edges=[(0, 1)])
    with pytest.raises(InfeasibleError, match="op1"):
        function(nowhere, objectives[0], TIME_LIMIT)


def test_methods_refuse_objectives_they_do_not_solve():
    problem = problem_of([[1.0, 1.0]] * 2)
    with pytest.raises(UnknownMethodError, match="latency"):
        baselines.etf(problem, "throughput", TIME_LIMIT)
    with pytest.raises(UnknownMethodError, match="throughput"):
        baselines.pipedream(problem, "latency", TIME_LIMIT)


# -- 500 operators ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_problem():
    rng = np.random.default_rng(7)
    return random_problem(rng, 500, 3, edge_probability=0.01, memory_caps=True,
                          colour_classes=True, unsupported=True)


@pytest.mark.parametrize("name,objective", CASES)
def test_500_operators_within_the_time_limit(large_problem, name, objective):
    started = time.perf_counter()
    try:
        placement = run(name, large_problem, objective)
    except InfeasibleError:
        assert name in ("fastest-device", "pipedream")  # memory caps below the whole model
        placement = None
    seconds = time.perf_counter() - started
    assert seconds <= allowed_seconds(TIME_LIMIT), f"{name}/{objective} took {seconds:.2f} s"
    if placement is not None:
        measured = evaluate(large_problem, placement.device_of, placement.order)
        assert math.isclose(placement.value, measured.objective(objective), rel_tol=1e-9)


def test_deterministic(large_problem):
    for name, objective in (("comm-balanced", "throughput"), ("etf", "latency"),
                            ("greedy", "latency")):
        first = run(name, large_problem, objective, time_limit=60.0)
        second = run(name, large_problem, objective, time_limit=60.0)
        assert np.array_equal(first.device_of, second.device_of), name


# -- rebalancing ------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_rebalance_repairs_a_placement_made_with_wrong_costs(objective):
    rng = np.random.default_rng(11)
    truth = random_problem(rng, 120, 3, edge_probability=0.03, colour_classes=True)
    believed = truth.compute_time.copy()
    believed[:, 1] /= 10.0  # the plan thought device 1 was ten times faster than it is
    wrong = dataclasses.replace(truth, compute_time=believed)
    stale = comm_balanced.solve(wrong, objective, TIME_LIMIT)
    n = truth.num_ops
    measured = truth.compute_time[np.arange(n), stale.device_of]  # what the runtime observes
    repaired = comm_balanced.rebalance(wrong, stale, measured, time_limit=TIME_LIMIT)
    right = comm_balanced.solve(truth, objective, TIME_LIMIT)

    stale_value = evaluate(truth, stale.device_of, stale.order).objective(objective)
    true_value = evaluate(truth, repaired.device_of, repaired.order).objective(objective)
    assert math.isclose(repaired.value, true_value, rel_tol=1e-9)  # corrected costs = truth
    assert repaired.stats["value_before"] == pytest.approx(stale_value, rel=1e-9)
    assert repaired.stats["device_factor"][1] == pytest.approx(10.0)
    assert true_value < 0.7 * stale_value
    assert true_value <= 1.25 * right.value
    assert 0 < repaired.stats["moved_ops"] < n


def test_rebalance_with_exact_measurements_keeps_the_placement_or_improves_it():
    rng = np.random.default_rng(12)
    problem = random_problem(rng, 60, 2, edge_probability=0.05, memory_caps=True)
    placement = comm_balanced.solve(problem, "throughput", TIME_LIMIT)
    n = problem.num_ops
    for measured in (problem.compute_time[np.arange(n), placement.device_of],
                     problem.compute_time.copy()):
        again = comm_balanced.rebalance(problem, placement, measured)
        assert again.value <= placement.value * (1 + 1e-12)
        assert again.stats["moved_ops"] <= n // 10
    with pytest.raises(InvalidGraphError, match="shape"):
        comm_balanced.rebalance(problem, placement, np.ones(n + 1))


def test_progress_messages_name_the_method():
    problem = small_problem(3)
    for name, objective in (("comm-balanced", "latency"), ("pipedream", "throughput"),
                            ("greedy", "throughput")):
        messages = []
        METHODS[name][0](problem, objective, TIME_LIMIT,
                         lambda message, fraction: messages.append((message, fraction)))
        assert messages and all(m.startswith(f"{name}:") for m, _ in messages)
        assert messages[-1][1] == 1.0
