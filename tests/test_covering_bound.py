"""The covering bound (bounds/covering.py): the weighted heaviest block by enumeration, validity
against brute force and the dp, strength against the heaviest block, the time limit."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_contiguous_bounds import (
    ROUNDED,
    TOLERANCE,
    _ideals,
    _least_cost_load,
    _pipeline_problem,
    _small_case_solved,
)

from tvm_place.solvers import dp, grouping, slicegraph
from tvm_place.solvers.bounds import contiguous, covering


def _random_weights(seed: int, G: int) -> np.ndarray:
    """Weights of both signs with a positive sum (the bound's only condition)."""
    weights = np.random.default_rng([seed, 3]).normal(size=G)
    return weights - weights.mean() + 1.0 / G


@pytest.mark.parametrize("seed", range(30))
def test_weighted_heaviest_block_is_the_enumerated_minimum_and_valid(seed):
    problem, optimum, groups = _small_case_solved(seed)
    weights = _random_weights(seed, groups.num_groups)
    share = weights.sum() / problem.num_devices
    ideals = _ideals(groups)
    blocks = {I - J for I in ideals for J in ideals if J <= I}
    enumerated = min(_least_cost_load(problem, groups, set(B)) for B in blocks
                     if weights[sorted(B)].sum() >= share * (1 - 1e-12))
    # CP-SAT's own portfolio and the certificate's named workers reach the same minimum.
    for subsolvers in ((), covering.CERTIFICATE_SUBSOLVERS):
        result = contiguous.heaviest_block_bound(problem, 5.0, groups, weights=weights,
                                                 subsolvers=subsolvers)
        assert result.status == "optimal", (subsolvers, result)
        assert enumerated * (1 - ROUNDED) - 1e-12 <= result.value \
            <= enumerated * (1 + 1e-9) + 1e-12
        assert result.value <= optimum * (1 + TOLERANCE) + 1e-12
        block = result.details["block"]
        assert weights[block].sum() >= share * (1 - 1e-6)


@pytest.mark.parametrize("seed", range(30))
def test_covering_bound_never_exceeds_the_contiguous_optimum(seed):
    problem, optimum, groups = _small_case_solved(seed)
    for target in (optimum, 1.5 * optimum):
        result = covering.covering_bound(problem, 2.0, groups, target=target)
        assert result.value <= optimum * (1 + TOLERANCE) + 1e-12, (target, result, optimum)


def test_covering_bound_is_stronger_than_the_heaviest_block_where_transfers_dominate():
    # A layered graph whose transfers cost as much as its compute, on 8 devices: blocks holding
    # 1/8 of the work cheaply exist only in a few places, which the LP's weights see.
    problem = _pipeline_problem(2, 60, 8)
    exact = dp.solve(problem, "throughput", 60.0)
    assert exact.stats.get("optimal")
    groups = grouping.contract(problem)
    heaviest = contiguous.heaviest_block_bound(problem, 10.0, groups, target=exact.value)
    result = covering.covering_bound(problem, 20.0, groups, floor=heaviest.value,
                                     target=exact.value)
    assert result.value <= exact.value * (1 + TOLERANCE)
    assert result.value > 1.05 * heaviest.value, (result, heaviest, exact.value)


def test_covering_bound_stops_at_its_time_limit_with_a_valid_bound():
    problem = _pipeline_problem(5, 300, 16)
    exact = dp.solve(problem, "throughput", 60.0)
    groups = grouping.contract(problem)
    for seconds in (0.5, 3.0):
        started = time.perf_counter()
        result = covering.covering_bound(problem, seconds, groups, target=exact.value * 1.2)
        assert time.perf_counter() - started < seconds + 1.0, result
        assert result.value <= exact.value * (1 + TOLERANCE)


def test_covering_bound_hands_its_time_back_where_it_proves_nothing_in_time():
    problem = _pipeline_problem(5, 300, 16)
    groups = grouping.contract(problem)
    target = slicegraph.solve(problem, "throughput", 5.0, bounds=()).value
    started = time.perf_counter()
    result = covering.covering_bound(problem, 20.0, groups, target=target, certify_within=0.0)
    assert time.perf_counter() - started < 10.0, result
    assert result.details["gave_up"] and not result.details["certified"]


def test_slicegraph_runs_the_cut_windows_after_the_covering_bound_on_the_time_it_left(
        monkeypatch):
    # Where the covering bound runs: the MIPs, then the covering bound (told to give up where
    # it proves nothing), then the cut windows on what is left, at least WINDOW_SHARE_LEAST.
    problem = _pipeline_problem(2, 60, 8)
    calls = []
    real_covering, real_window = covering.covering_bound, slicegraph.window_bound.window_bound

    def gives_up(*args, **kw):
        calls.append(("covering", args[1], kw["certify_within"]))
        return real_covering(*args, **dict(kw, certify_within=0.0))

    def window(*args, **kw):
        calls.append(("window", args[1], None))
        return real_window(*args, **kw)

    monkeypatch.setattr(covering, "covering_bound", gives_up)
    monkeypatch.setattr(slicegraph.window_bound, "window_bound", window)
    monkeypatch.setattr(slicegraph, "COVERING_LEAST_SECONDS", 0.5)
    slicegraph.solve(problem, "throughput", 10.0,
                     bounds=("combinatorial", "heaviest", "covering", "window"))
    assert [name for name, *_ in calls] == ["covering", "window"], calls
    (_, covering_seconds, within), (_, window_seconds, _) = calls
    assert within == pytest.approx(slicegraph.COVERING_PROBE * covering_seconds)
    # The covering bound gave its time back at once: the windows get nearly all of it.
    assert window_seconds > 0.8 * covering_seconds, calls


def test_covering_bound_is_skipped_without_a_placement_value():
    problem, _, groups = _small_case_solved(0)
    assert covering.covering_bound(problem, 2.0, groups).status == "skipped"


def test_slicegraph_starts_the_covering_bound_only_with_its_least_time(monkeypatch):
    problem = _pipeline_problem(2, 60, 8)
    calls = []
    real = covering.covering_bound
    monkeypatch.setattr(covering, "covering_bound",
                        lambda *args, **kw: calls.append(args[1]) or real(*args, **kw))
    slicegraph.solve(problem, "throughput", 4.0, bounds=("combinatorial", "covering"))
    assert not calls  # a 4 s solve has about 1.6 s of bound phase: under the least time
    monkeypatch.setattr(slicegraph, "COVERING_LEAST_SECONDS", 0.5)
    result = slicegraph.solve(problem, "throughput", 4.0, bounds=("combinatorial", "covering"))
    assert calls and all(seconds <= 4.0 for seconds in calls)
    assert "covering" in result.stats["bounds"]


@pytest.mark.parametrize("seed", range(10))
def test_heaviest_block_under_a_cap_below_its_minimum_proves_the_cap(seed):
    problem, optimum, groups = _small_case_solved(seed)
    free = contiguous.heaviest_block_bound(problem, 5.0, groups)
    if free.value <= 0:
        pytest.skip("no block to cap")
    capped = contiguous.heaviest_block_bound(problem, 5.0, groups, target=0.5 * free.value)
    assert capped.status == "target", capped
    assert capped.value == pytest.approx(0.5 * free.value, rel=1e-5)
    assert capped.value <= optimum * (1 + TOLERANCE)


def test_heaviest_block_stopped_at_a_block_under_the_cap_returns_one_and_a_valid_value(
        monkeypatch):
    # The covering bound's pricing: the first block under the cap holding the share is a column;
    # the value returned with it is CP-SAT's bound at that point, still at most the minimum.
    from ortools.sat.python import cp_model

    stops = []
    stop_search = cp_model.CpSolverSolutionCallback.stop_search
    monkeypatch.setattr(cp_model.CpSolverSolutionCallback, "stop_search",
                        lambda self: stops.append(1) or stop_search(self))
    checked = 0
    for seed in range(10):
        problem, optimum, groups = _small_case_solved(seed)
        weights = _random_weights(seed, groups.num_groups)
        free = contiguous.heaviest_block_bound(problem, 5.0, groups, weights=weights)
        if free.status != "optimal" or free.value <= 0:
            continue
        for cap in (free.value * (1 + 1e-6), 2.0 * free.value):
            stopped = contiguous.heaviest_block_bound(problem, 5.0, groups, cap,
                                                      weights=weights, stop_at=cap)
            block = stopped.details["block"]
            assert weights[block].sum() >= weights.sum() / problem.num_devices * (1 - 1e-6)
            load = _least_cost_load(problem, groups, set(np.flatnonzero(block)))
            assert load <= cap * (1 + 1e-6)
            assert stopped.value <= free.value * (1 + 1e-9) + 1e-12
            checked += 1
    assert checked >= 10
    assert stops, "the search never stopped at a block under the cap"
