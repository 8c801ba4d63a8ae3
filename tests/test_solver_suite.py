"""Every registered method against exhaustive search on random small DAGs, through solvers.solve.

Per problem and method: an exact method equals the optimum of its search space, no method beats
it, no lower bound exceeds it, every placement validates; infeasible problems raise
InfeasibleError from exact methods. 300 DAGs of up to 10 nodes and 2-4 devices per objective:
throughput against the vectorised references (all placements, contiguous ones, and with replica
groups), latency against the depth-first search over every placement and execution order.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from brute_force import (
    exhaustive_latency,
    exhaustive_replicated_throughput,
    exhaustive_throughput,
    random_problem,
)

from tvm_place.cores import process_cores
from tvm_place.errors import InfeasibleError
from tvm_place.evaluate import evaluate, validate
from tvm_place.solvers import METHODS, solve

THROUGHPUT_SEEDS = range(300)
LATENCY_SEEDS = range(300)
#: Per call; small problems finish far sooner unless a method uses all its time by design.
TIME_LIMIT = 2.0
TOLERANCE = 1e-6


def throughput_problem(seed: int):
    rng = np.random.default_rng(10_000 + seed)
    num_devices = int(rng.integers(2, 5))
    largest = {2: 10, 3: 9, 4: 7}[num_devices]  # at most ~20k assignments each
    return random_problem(
        rng,
        num_ops=int(rng.integers(2, largest + 1)),
        num_devices=num_devices,
        memory_caps=seed % 2 == 0,
        colour_classes=seed % 3 == 0,
        unsupported=seed % 4 == 0,
        cpu_pays_no_transfer=seed % 5 == 0,
    )


def latency_problem(seed: int):
    rng = np.random.default_rng(20_000 + seed)
    num_devices = int(rng.integers(2, 5))
    return random_problem(
        rng,
        num_ops=int(rng.integers(2, 11)),
        num_devices=num_devices,
        memory_caps=seed % 2 == 0,
        colour_classes=seed % 3 == 0,
        unsupported=seed % 4 == 0,
    )


def methods_for(objective: str) -> list[str]:
    return sorted(name for name, entry in METHODS.items() if objective in entry.objectives)


def check(problem, objective: str, optimum: dict[str, float]) -> list[str]:
    """Run every method; return a list of violations (empty when all is well)."""
    problems = []
    for method in methods_for(objective):
        entry = METHODS[method]
        space = entry.search_space
        best = optimum[space]
        try:
            placement = solve(problem, objective, method, TIME_LIMIT)
        except InfeasibleError:
            if entry.exact and objective in entry.exact and math.isfinite(best):
                problems.append(f"{method}: infeasible, but the optimum is {best}")
            continue
        if not math.isfinite(best):
            problems.append(f"{method}: placed a problem with no feasible {space} placement")
            continue
        validate(problem, placement, contiguous=space == "contiguous")
        value = evaluate(problem, placement).objective(objective)
        if abs(value - placement.value) > TOLERANCE * max(1.0, value):
            problems.append(f"{method}: reports {placement.value}, evaluator says {value}")
        if value < best * (1 - TOLERANCE):
            problems.append(f"{method}: {value} beats the {space} optimum {best}")
        if placement.lower_bound > best * (1 + TOLERANCE):
            problems.append(f"{method}: bound {placement.lower_bound} exceeds optimum {best}")
        exact = objective in entry.exact and placement.stats.get("optimal", True)
        if exact and value > best * (1 + TOLERANCE):
            problems.append(f"{method}: exact method gives {value}, optimum is {best}")
    return problems


@pytest.mark.parametrize("block", [*range(2), *(pytest.param(b, marks=pytest.mark.slow) for b in range(2, 10))])
def test_throughput_methods_against_exhaustive_search(block):
    failures = []
    for seed in THROUGHPUT_SEEDS[block::10]:
        problem = throughput_problem(seed)
        best_all, best_contiguous = exhaustive_throughput(problem)
        optimum = {"all": best_all, "contiguous": best_contiguous,
                   "replicated": exhaustive_replicated_throughput(problem)}
        failures += [f"seed {seed}: {message}" for message in check(problem, "throughput", optimum)]
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("block", range(10))
def test_latency_methods_against_exhaustive_search(block):
    failures = []
    for seed in LATENCY_SEEDS[block::10]:
        problem = latency_problem(seed)
        best = exhaustive_latency(problem)
        optimum = {"all": best, "contiguous": best}
        failures += [f"seed {seed}: {message}" for message in check(problem, "latency", optimum)]
    assert not failures, "\n".join(failures[:20])


@pytest.mark.skipif(len(process_cores()) < 2, reason="needs two cores")
def test_solve_runs_on_every_core_after_tvm_pinned_the_thread(monkeypatch):
    """After TVM's first kernel the calling thread is pinned to one core (tvm_place.cores);
    CP-SAT's workers, started by the solvers, inherit the thread's mask: the solve widens it to
    the process's cores and puts it back, also where the method raises."""
    from tvm_place import solvers

    seen = []
    real = solvers.method_function

    def recording(method):
        function = real(method)

        def run(problem, *args):
            seen.append(sorted(os.sched_getaffinity(0)))
            if problem.num_ops == 1:
                raise InfeasibleError("raised inside the solve")
            return function(problem, *args)

        return run

    monkeypatch.setattr(solvers, "method_function", recording)
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, process_cores()[:1])
    try:
        solve(throughput_problem(0), "throughput", "greedy", TIME_LIMIT)
        assert os.sched_getaffinity(0) == set(process_cores()[:1])  # put back
        one = random_problem(np.random.default_rng(0), num_ops=1, num_devices=2)
        with pytest.raises(InfeasibleError, match="inside the solve"):
            solve(one, "throughput", "greedy", TIME_LIMIT)
        assert os.sched_getaffinity(0) == set(process_cores()[:1])
    finally:
        os.sched_setaffinity(0, mask)
    assert seen == [process_cores()] * 2
