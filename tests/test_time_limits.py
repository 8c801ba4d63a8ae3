"""Every registered method honours its time limit (within 10% + 2 s) on a workload it cannot
finish in time, and still returns a valid placement with a valid bound."""

import functools
import sys
import time
from pathlib import Path

import pytest

from tvm_place.evaluate import validate
from tvm_place.formats import load_dnn_partitioning
from tvm_place.solvers import METHODS, solve

DATA = Path(__file__).resolve().parent.parent / "data" / "dnn-partitioning"
WORKLOADS = {
    "throughput": DATA / "throughput-inputs" / "LayerGraphs" / "inceptionv3_training.json",
    "latency": DATA / "latency-inputs" / "LayerGraphs" / "inceptionv3_inference.json",
}
TIME_LIMIT = 2.0


@pytest.mark.parametrize(
    "method, objective",
    [(m, o) for m, entry in sorted(METHODS.items()) for o in entry.objectives],
)
def test_time_limit_is_honoured(method, objective):
    problem = load_dnn_partitioning(WORKLOADS[objective])
    started = time.perf_counter()
    placement = solve(problem, objective, method, TIME_LIMIT)
    elapsed = time.perf_counter() - started
    assert elapsed <= 1.1 * TIME_LIMIT + 2.0, f"{method} took {elapsed:.2f} s"
    validate(problem, placement)
    assert placement.lower_bound <= placement.value


@pytest.mark.parametrize("method", ["slicegraph", "ip", "auto"])
def test_time_limit_holds_at_3200_operators(method):
    """Where one step costs more than the limit (a SliceGraph evaluation, handing a large program
    to HiGHS), the method answers without it instead of overrunning."""
    problem = large_problem()
    started = time.perf_counter()
    placement = solve(problem, "throughput", method, TIME_LIMIT)
    elapsed = time.perf_counter() - started
    assert elapsed <= 1.1 * TIME_LIMIT + 2.0, f"{method} took {elapsed:.2f} s"
    validate(problem, placement)
    assert placement.lower_bound <= placement.value


@functools.lru_cache(maxsize=1)
def large_problem():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from table_scaling import random_layered_problem

    return random_layered_problem(3200, 0)
