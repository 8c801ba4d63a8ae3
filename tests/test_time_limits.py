"""Every registered method honours its time limit (within 10% + 2 s, the 2 s scaled by load beyond
the cores: tests/time_allowance.py) on a workload it cannot finish in time, and still returns a
valid placement with a valid bound; at 10,000 operators (default suite) and 200,000 (``-m slow``)
too, with memory caps and pins, and ``auto`` never worse than ``greedy`` (issue 15, "time limits
at scale")."""

import functools
import time
from pathlib import Path

import pytest

from tvm_place.errors import InfeasibleError, UnknownMethodError
from tvm_place.evaluate import validate
from tvm_place.formats import load_dnn_partitioning
from tvm_place.solvers import METHODS, solve
from time_allowance import allowed_seconds, crowding

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
    assert elapsed <= allowed_seconds(TIME_LIMIT), f"{method} took {elapsed:.2f} s"
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
    assert elapsed <= allowed_seconds(TIME_LIMIT), f"{method} took {elapsed:.2f} s"
    validate(problem, placement)
    assert placement.lower_bound <= placement.value


@functools.lru_cache(maxsize=1)
def large_problem():
    from table_scaling import random_layered_problem

    return random_layered_problem(3200, 0)


SCALE_LIMIT = 1.0


def scale_cases():
    return [(m, o) for m, entry in sorted(METHODS.items()) for o in entry.objectives]


@functools.lru_cache(maxsize=4)
def layered(num_ops: int, num_devices: int):
    from time_limits_at_scale import layered_problem

    return layered_problem(num_ops, num_devices)


def check_at_scale(problem, objective: str, method: str, limit: float):
    started = time.perf_counter()
    try:
        placement = solve(problem, objective, method, limit)
    except (UnknownMethodError, InfeasibleError) as err:
        # Only a refusal of the problem outright (diviml-replicas weighs 2^D - 1 groups of
        # all-different devices), or no single device for a model pinned to several, at once.
        assert isinstance(err, UnknownMethodError) or method == "fastest-device", err
        assert time.perf_counter() - started <= allowed_seconds(limit)
        return None
    elapsed = time.perf_counter() - started
    assert elapsed <= allowed_seconds(limit), f"{method} took {elapsed:.2f} s (limit {limit} s)"
    validate(problem, placement, contiguous=METHODS[method].search_space == "contiguous")
    assert placement.lower_bound <= placement.value
    assert placement.lower_bound > 0 and placement.gap < 1
    return placement


@pytest.mark.parametrize("method, objective", scale_cases())
def test_time_limit_holds_at_10000_operators(method, objective):
    """Every method answers within 1.1 x 1 s + 2 s on 10,000 operators (4 devices, memory caps
    on the accelerators, pins), with a valid placement and bound. The 1 s is scaled by how far
    the load exceeds the cores: dp's slicing of runs needs about a second of CPU here, and beside
    the suite's other worker and Ray actors found nothing within 0.98 s of wall time (once in
    six suite runs)."""
    placement = check_at_scale(layered(10_000, 4), objective, method, SCALE_LIMIT * crowding())
    assert placement is not None or method == "fastest-device"


@pytest.mark.parametrize("num_devices", [2, 8])
@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_auto_is_no_worse_than_greedy_at_10000_operators(objective, num_devices):
    """``auto`` runs greedy first and keeps the best placement of any method: never worse than
    greedy's, never a failure where greedy finds one (it once said "no method found a feasible
    placement" here), on 2 and 8 devices, within the limit."""
    problem = layered(10_000, num_devices)
    placement = check_at_scale(problem, objective, "auto", SCALE_LIMIT)
    greedy = solve(problem, objective, "greedy", SCALE_LIMIT)
    assert placement.value <= greedy.value * (1 + 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method, objective", scale_cases())
def test_time_limit_holds_at_200000_operators(method, objective):
    """The same at 200,000 operators on 8 devices, limit 10 s."""
    problem = layered(200_000, 8)
    placement = check_at_scale(problem, objective, method, 10.0)
    if method == "auto":
        greedy = solve(problem, objective, "greedy", 10.0)
        assert placement.value <= greedy.value * (1 + 1e-9)
