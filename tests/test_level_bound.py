"""The level search (bounds/levels.py): its test against the exact dp and brute force, the chain
it returns, the bound's validity on unequal devices, its time limit, and its place in slicegraph."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from test_contiguous_bounds import (
    TOLERANCE,
    _identical,
    _pipeline_problem,
    _small_case,
    _small_case_solved,
)

from tvm_place.errors import InfeasibleError
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem
from tvm_place.evaluate import evaluate, validate
from tvm_place.solvers import dp, grouping, slicegraph
from tvm_place.solvers.bounds import levels

pytestmark = pytest.mark.skipif(not levels.available(), reason="numba is not installed")

#: Just below and just above the optimum.
BELOW, ABOVE = 1 - 1e-7, 1 + 1e-7


@pytest.fixture(autouse=True, scope="module")
def _compiled():
    """Compile the search once (numba; seconds on a clean checkout, cached after), so that the
    tests with a time limit time the search, not the compiler."""
    from tvm_place.solvers.bounds import _level_kernels as kernels

    problem = _pipeline_problem(0, 24, 4)
    instance = levels._Instance(problem, grouping.contract(problem))
    levels.level_test(instance, problem.num_devices, 1e9, time.perf_counter() + 600.0)
    rows = levels._Rows(1)
    rows.count = 1
    kernels.rehash(rows.table, rows.keys, rows.count)
    kernels.first_common(rows.table, rows.keys, rows.keys[:1])
    kernels.merge(rows.keys, rows.count, rows.table, rows.parent, rows.keys, 1, rows.parent)


@functools.cache
def _identical_cases():
    """Equal devices: layered pipelines (4 to 16 devices) and small random graphs with colour
    classes and memory caps (those with a placement); with their dp optimum."""
    cases = [_pipeline_problem(seed, num_ops, K)
             for seed, num_ops, K in [(0, 24, 4), (1, 30, 8), (2, 36, 6), (3, 20, 16), (4, 60, 8)]]
    cases += [_identical(_small_case(seed), np.random.default_rng([seed, 7])) for seed in range(20)]
    solved = []
    for problem in cases:
        try:
            exact = dp.solve(problem, "throughput", 30.0)
        except InfeasibleError:
            continue
        assert exact.stats.get("optimal")
        solved.append((problem, exact.value))
    return solved


@pytest.mark.parametrize("case", range(25))
def test_level_test_decides_the_equal_devices_optimum_and_returns_a_chain_under_it(case):
    cases = _identical_cases()
    if case >= len(cases):
        pytest.skip("fewer solvable cases")
    problem, optimum = cases[case]
    groups = grouping.contract(problem)
    instance = levels._Instance(problem, groups)
    far = time.perf_counter() + 60.0
    exists, blocks = levels.level_test(instance, problem.num_devices, optimum * BELOW, far)
    assert exists is False
    exists, blocks = levels.level_test(instance, problem.num_devices, optimum * ABOVE, far)
    assert exists is True and len(blocks) <= problem.num_devices
    types = levels.DeviceTypes.of(problem)
    device_of = levels._placement(problem, groups, types, blocks)
    validate(problem, device_of, contiguous=True)
    assert evaluate(problem, device_of).max_load <= optimum * ABOVE + 1e-12


@pytest.mark.parametrize("seed", range(30))
def test_level_bound_never_exceeds_the_contiguous_optimum_on_unequal_devices(seed):
    problem, optimum, groups = _small_case_solved(seed)
    for target in (optimum, 1.5 * optimum):
        result, placement = levels.level_bound(problem, 5.0, groups, target=target)
        assert result.value <= optimum * (1 + TOLERANCE) + 1e-12, (target, result, optimum)
        if len(levels.DeviceTypes.of(problem).devices) > 1:
            assert placement is None  # the least costs' chain is no placement of these devices


def test_level_bound_closes_on_the_optimum_and_finds_it():
    problem = _pipeline_problem(4, 60, 8)
    exact = dp.solve(problem, "throughput", 30.0)
    assert exact.stats.get("optimal")
    result, placement = levels.level_bound(problem, 20.0, target=1.3 * exact.value)
    assert result.status == "optimal"
    assert exact.value * (1 - 2 * levels.CLOSE_ENOUGH) <= result.value <= exact.value
    assert evaluate(problem, placement).max_load <= exact.value * (1 + 2 * levels.CLOSE_ENOUGH)


def _wide_problem(layers: int = 25, width: int = 8, K: int = 16):
    """Layers of ``width`` operators, each reading two of the three layers before (RandWire-like
    width throughout): at the defaults far too many ideals for the search to finish."""
    rng = np.random.default_rng(11)
    num_ops = layers * width
    edges = set()
    for v in range(width, num_ops):
        layer = v // width
        first = max(0, layer - 3) * width
        for u in rng.choice(layer * width - first, size=2, replace=False).tolist():
            edges.add((first + int(u), v))
    nodes = [OpNode(name=f"op{u}") for u in range(num_ops)]
    compute = np.repeat(rng.uniform(0.5, 1.0, (num_ops, 1)), K, axis=1)
    transfer = np.repeat(rng.uniform(2.0, 6.0, (num_ops, 1)), K, axis=1)
    devices = [Device(name=f"gpu{d}", kind="gpu") for d in range(K)]
    return PlacementProblem(graph=OpGraph(nodes, sorted(edges)), devices=devices,
                            compute_time=compute, transfer_time=transfer,
                            memory=np.ones(num_ops), name="wide")


def test_level_bound_keeps_its_time_limit_and_gives_up_where_the_first_level_is_too_wide():
    problem = _wide_problem()
    target = slicegraph.solve(problem, "throughput", 3.0, bounds=()).value
    for limit in (1.0, 4.0):
        started = time.perf_counter()
        result, _ = levels.level_bound(problem, limit, target=target)
        took = time.perf_counter() - started
        assert took < limit + 0.5, (limit, took, result)
        tests = result.details["tests"]
        assert tests[0]["chain"] is None and len(tests) == 1  # gave up after the first
        assert took < levels.FIRST_TEST_SHARE * limit + 0.5


def test_level_bound_is_skipped_without_a_placement_value():
    problem, _, groups = _small_case_solved(0)
    assert levels.level_bound(problem, 2.0, groups)[0].status == "skipped"


def test_slicegraph_runs_the_level_search_before_the_covering_bound(monkeypatch):
    problem = _pipeline_problem(4, 60, 8)
    exact = dp.solve(problem, "throughput", 30.0)
    monkeypatch.setattr(slicegraph, "COVERING_LEAST_SECONDS", 0.5)
    result = slicegraph.solve(problem, "throughput", 6.0,
                              bounds=("combinatorial", "levels", "covering"))
    assert list(result.stats["bounds"])[:3] == ["combinatorial", "levels", "covering"]
    # The level search alone closes the gap (the dp agrees).
    level = result.stats["bounds"]["levels"]["value"]
    assert exact.value * (1 - 2 * levels.CLOSE_ENOUGH) <= level <= exact.value * (1 + TOLERANCE)


@pytest.mark.parametrize("named, source, shape", [
    ("levels", "from_level_search", (10, 4, 8)),
    # No level search named: the long phase still runs the beam before the covering bound.
    ("covering", "from_beam_search", (12, 6, 8)),
])
def test_slicegraph_answers_with_a_chain_over_ideals_where_it_beats_the_ga(monkeypatch, named,
                                                                           source, shape):
    # One generation of four orders and no local search after it: on these layered graphs the
    # GA's slicing is worse than the chain the level (or beam) search finds: it is the answer.
    problem = _wide_problem(*shape)
    monkeypatch.setattr(slicegraph, "COVERING_LEAST_SECONDS", 0.5)
    monkeypatch.setattr(slicegraph.anytime, "improve",
                        lambda problem, device_of, *args, **kw: (device_of, None, None))
    options = dict(generations=1, population=4)
    alone = slicegraph.solve(problem, "throughput", 6.0, bounds=("combinatorial",), **options)
    result = slicegraph.solve(problem, "throughput", 6.0, bounds=("combinatorial", named),
                              **options)
    assert result.stats.get(source)
    assert result.value < alone.value * (1 - 1e-9)
    if named == "levels":
        assert result.value <= result.lower_bound * (1 + 2 * levels.CLOSE_ENOUGH)
    validate(problem, result.device_of, contiguous=True)


def test_level_bound_says_why_it_is_skipped_without_numba(monkeypatch):
    problem = _pipeline_problem(4, 60, 8)
    monkeypatch.setattr(levels, "available", lambda: False)
    result, placement = levels.level_bound(problem, 2.0, target=1e9)
    assert result.status == "skipped" and placement is None
    assert "pip install 'tvm-place[fast]'" in result.details["reason"]


@pytest.mark.parametrize("case", range(25))
def test_beam_chain_is_the_exact_forward_search_where_wide_enough_and_its_chains_are_real(case):
    # As wide as the layers (no ideal dropped), the beam decides what the level test decides;
    # narrow, every chain it returns still holds: contiguous, each block under the level.
    cases = _identical_cases()
    if case >= len(cases):
        pytest.skip("fewer solvable cases")
    problem, optimum = cases[case]
    groups = grouping.contract(problem)
    instance = levels._Instance(problem, groups)
    types = levels.DeviceTypes.of(problem)
    far = time.perf_counter() + 60.0
    assert levels.beam_chain(instance, problem.num_devices, optimum * BELOW, 10**6, far) \
        == (None, False)
    for width, level in [(10**6, optimum * ABOVE), (2, 1.2 * optimum), (1, 2.0 * optimum)]:
        blocks, cut = levels.beam_chain(instance, problem.num_devices, level, width, far)
        if width < 10**6 and blocks is None:
            assert cut  # a miss proves nothing only where a layer was cut
            continue
        assert blocks is not None and len(blocks) <= problem.num_devices
        device_of = levels._placement(problem, groups, types, blocks)
        validate(problem, device_of, contiguous=True)
        loads = evaluate(problem, device_of).load
        for block, device in zip(blocks, types.devices[0]):
            # The search's load rule is the evaluator's on equal devices.
            assert instance.load(block) == pytest.approx(loads[device], rel=1e-9, abs=1e-12)
            assert instance.load(block) <= level * (1 + 1e-12)


def test_beam_placement_lowers_a_poor_value_within_its_time_limit():
    problem = _wide_problem(layers=12, width=6, K=8)
    poor = slicegraph.solve(problem, "throughput", 2.0, bounds=(), generations=1, population=4)
    value, device_of = levels.beam_placement(problem, 2.0, grouping.contract(problem), poor.value)
    assert device_of is not None and value < poor.value * (1 - levels.BEAM_STEP / 2)
    validate(problem, device_of, contiguous=True)
    assert evaluate(problem, device_of).max_load == pytest.approx(value, rel=1e-9)
    # Where the first layer alone outlasts the limit (blocks from the empty ideal: too many).
    problem = _wide_problem()
    groups = grouping.contract(problem)
    for limit in (0.5, 3.0):
        started = time.perf_counter()
        levels.beam_placement(problem, limit, groups, 1e9)
        assert time.perf_counter() - started < limit + 0.5


def test_beam_placement_stops_at_the_bound_held_or_an_exact_miss():
    problem = _pipeline_problem(4, 60, 8)
    exact = dp.solve(problem, "throughput", 30.0)
    groups = grouping.contract(problem)
    started = time.perf_counter()
    value, device_of = levels.beam_placement(problem, 30.0, groups, 1.5 * exact.value,
                                             floor=exact.value)
    assert time.perf_counter() - started < 10.0  # not the whole 30 s
    assert exact.value * (1 - 1e-9) <= value <= exact.value * (1 + 2 * levels.BEAM_LEAST_STEP)
    validate(problem, device_of, contiguous=True)


def test_beam_placement_needs_equal_devices_and_a_value():
    problem, _, groups = _small_case_solved(0)
    assert len(levels.DeviceTypes.of(problem).devices) > 1
    assert levels.beam_placement(problem, 1.0, groups, 1e9) == (1e9, None)
    problem = _pipeline_problem(4, 60, 8)
    groups = grouping.contract(problem)
    assert levels.beam_placement(problem, 1.0, groups, float("inf"))[1] is None
