"""The exact dynamic program over contiguous splits, checked against brute force and by hand."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from brute_force import best_throughput, random_problem

from tvm_place.errors import InfeasibleError, InvalidPlacementError, UnknownMethodError
from tvm_place.evaluate import contiguity_edges, evaluate, validate
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem
from tvm_place.solvers import dp, solve

#: Brute force enumerates num_devices ** num_ops assignments; keep each problem below this.
MAX_ASSIGNMENTS = 2500

FLAG_NAMES = ("memory_caps", "colour_classes", "unsupported", "cpu_pays_no_transfer")
FLAG_SETTINGS = [
    dict(zip(FLAG_NAMES, values)) for values in itertools.product((False, True), repeat=4)
]


def _sizes(rng: np.random.Generator) -> tuple[int, int]:
    num_devices = int(rng.integers(2, 5))
    most_ops = int(math.log(MAX_ASSIGNMENTS) / math.log(num_devices))
    return int(rng.integers(2, min(7, most_ops) + 1)), num_devices


def _flags_id(flags: dict) -> str:
    return "+".join(name for name, on in flags.items() if on) or "plain"


def _solve_or_inf(problem: PlacementProblem):
    try:
        return solve(problem, "throughput", "dp", time_limit=30)
    except InfeasibleError:
        return None


def _chain(compute: list[list[float]], transfer: list[list[float]], devices: list[Device], **extra):
    n = len(compute)
    return PlacementProblem(
        graph=OpGraph([OpNode(f"op{u}") for u in range(n)], [(u, u + 1) for u in range(n - 1)]),
        devices=devices,
        compute_time=np.array(compute, dtype=float),
        transfer_time=np.array(transfer, dtype=float),
        **extra,
    )


@pytest.mark.parametrize("flags", FLAG_SETTINGS, ids=_flags_id)
@pytest.mark.parametrize("seed", range(10))
def test_matches_brute_force_over_contiguous_splits(flags, seed):
    rng = np.random.default_rng([seed, *map(int, flags.values())])
    num_ops, num_devices = _sizes(rng)
    problem = random_problem(rng, num_ops, num_devices, **flags)
    contiguous_optimum = best_throughput(problem, contiguous=True)
    placement = _solve_or_inf(problem)
    if math.isinf(contiguous_optimum):
        assert placement is None, "brute force finds no contiguous placement, the DP did"
        return
    assert placement is not None, f"the DP found nothing, brute force {contiguous_optimum}"
    validate(problem, placement, contiguous=True)
    assert math.isclose(placement.value, contiguous_optimum, rel_tol=1e-9)
    assert placement.value >= best_throughput(problem) * (1 - 1e-9)
    assert placement.stats["optimal"] is True
    assert placement.stats["search_space"] == "contiguous"
    assert placement.lower_bound == placement.value


@pytest.mark.parametrize("seed", range(30))
def test_merging_costless_operators_keeps_the_optimum(seed):
    # Zero-cost operators with one neighbour are merged into it; that must not change the optimum.
    rng = np.random.default_rng(1000 + seed)
    num_ops, num_devices = _sizes(rng)
    num_ops = max(num_ops, 3)
    base = random_problem(
        rng, num_ops, num_devices, edge_probability=0.3, memory_caps=seed % 2 == 0
    )
    costless = rng.random(num_ops) < 0.4
    compute = base.compute_time.copy()
    compute[costless] = 0.0
    memory = base.memory.copy()
    memory[costless & (rng.random(num_ops) < 0.7)] = 0.0
    problem = PlacementProblem(base.graph, base.devices, compute, base.transfer_time, memory)
    placement = _solve_or_inf(problem)
    expected = best_throughput(problem, contiguous=True)
    got = math.inf if placement is None else placement.value
    assert got == expected or math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)


def test_chain_of_four_on_two_identical_devices():
    # Splits of 1, 2, 3, 4 with each crossing value costing 0.5 on both sides:
    # {1,2,3}|{4} -> max(6 + 0.5, 4 + 0.5) = 6.5 beats {1,2}|{3,4} -> 7.5 and one device -> 10.
    devices = [Device("gpu0", "gpu"), Device("gpu1", "gpu")]
    problem = _chain([[1, 1], [2, 2], [3, 3], [4, 4]], [[0.5, 0.5]] * 4, devices)
    placement = solve(problem, "throughput", "dp")
    assert placement.value == pytest.approx(6.5)
    assert placement.lower_bound == pytest.approx(6.5)
    first, last = placement.device_of[0], placement.device_of[3]
    assert list(placement.device_of) == [first, first, first, last] and first != last
    assert placement.stats["device_types"] == 1


def test_cpu_without_transfers_takes_the_expensive_transfer():
    # op1's output is huge to move for the accelerator but free for the CPU; the CPU is slow.
    devices = [Device("cpu", "cpu"), Device("acc", "gpu")]
    compute = [[4, 1], [4, 1], [4, 1]]
    transfer = [[0, 0.1], [0, 9.0], [0, 0.1]]
    problem = _chain(compute, transfer, devices)
    placement = solve(problem, "throughput", "dp")
    assert placement.value == pytest.approx(best_throughput(problem, contiguous=True))
    assert placement.value == pytest.approx(3.0)  # everything on the accelerator


def test_identical_devices_form_one_type_and_all_get_used():
    devices = [Device(f"gpu{d}", "gpu") for d in range(3)]
    problem = _chain([[2, 2, 2]] * 6, [[0, 0, 0]] * 6, devices)
    placement = solve(problem, "throughput", "dp")
    assert placement.value == pytest.approx(4.0)
    assert sorted(set(placement.device_of.tolist())) == [0, 1, 2]
    assert placement.stats["device_types"] == 1


def test_pin_to_one_of_identical_devices_is_honoured():
    devices = [Device(f"gpu{d}", "gpu") for d in range(3)]
    problem = _chain([[2, 2, 2]] * 6, [[0.1, 0.1, 0.1]] * 6, devices, pins={0: (2,), 5: (1,)})
    placement = solve(problem, "throughput", "dp")
    assert placement.device_of[0] == 2 and placement.device_of[5] == 1
    assert placement.value == pytest.approx(best_throughput(problem, contiguous=True))
    validate(problem, placement, contiguous=True)


def test_colour_class_around_a_path_keeps_the_path_together():
    # a -> b -> c with {a, c} co-located: b has to join them, or data would leave and come back.
    devices = [Device("gpu0", "gpu"), Device("gpu1", "gpu")]
    problem = _chain(
        [[1, 1], [5, 5], [1, 1], [3, 3]], [[0.1, 0.1]] * 4, devices, colour_classes=[[0, 2]]
    )
    placement = solve(problem, "throughput", "dp")
    assert len(set(placement.device_of[:3].tolist())) == 1
    assert placement.value == pytest.approx(best_throughput(problem, contiguous=True))


def test_colour_class_that_no_device_may_hold_is_infeasible():
    devices = [Device("gpu0", "gpu"), Device("gpu1", "gpu")]
    problem = _chain(
        [[1, 1]] * 3, [[0, 0]] * 3, devices, pins={0: (0,), 2: (1,)}, colour_classes=[[0, 2]]
    )
    with pytest.raises(InfeasibleError, match="share one device"):
        solve(problem, "throughput", "dp")


def test_operator_larger_than_every_device_is_infeasible():
    devices = [Device("gpu0", "gpu", memory_capacity=10), Device("gpu1", "gpu", memory_capacity=10)]
    problem = _chain([[1, 1]] * 3, [[0, 0]] * 3, devices, memory=np.array([1.0, 50.0, 1.0]))
    with pytest.raises(InfeasibleError, match="op1"):
        solve(problem, "throughput", "dp")


def test_latency_is_not_its_objective():
    problem = _chain([[1, 1]] * 2, [[0, 0]] * 2, [Device("a"), Device("b")])
    with pytest.raises(UnknownMethodError):
        dp.solve(problem, "latency", 10)
    with pytest.raises(UnknownMethodError):
        solve(problem, "latency", "dp")


def _wide_problem() -> PlacementProblem:
    # 60 operators with few edges: many parallel branches, far more ideals than can be enumerated.
    return random_problem(np.random.default_rng(7), 60, 4, edge_probability=0.03, memory_caps=True)


def test_time_limit_returns_a_valid_contiguous_placement():
    problem = _wide_problem()
    started = time.perf_counter()
    placement = solve(problem, "throughput", "dp", time_limit=1.0)
    assert time.perf_counter() - started < 3.0
    assert placement.stats["optimal"] is False
    assert "time limit" in placement.stats["reason"]
    validate(problem, placement, contiguous=True)
    assert placement.value == pytest.approx(evaluate(problem, placement).max_load)
    assert placement.lower_bound <= placement.value


def test_ideal_cap_stops_the_enumeration_and_the_rest_of_the_limit_refines():
    problem = _wide_problem()
    started = time.perf_counter()
    placement = dp.solve(problem, "throughput", 3.0, max_ideals=2000)
    assert time.perf_counter() - started < 3.0 * 1.1 + 1
    assert placement.stats["optimal"] is False
    assert "2000 ideals" in placement.stats["reason"]
    validate(problem, placement, contiguous=True)
    # What the cap left of the limit went to the local search and the cut-window bound.
    assert placement.stats["anytime"].get("searches")
    assert placement.value == pytest.approx(evaluate(problem, placement).max_load)
    assert placement.lower_bound <= placement.value


def test_progress_is_reported():
    rng = np.random.default_rng(3)
    problem = random_problem(rng, 20, 3, edge_probability=0.3)
    messages = []
    solve(problem, "throughput", "dp", progress=lambda text, fraction: messages.append(fraction))
    assert messages
    assert all(f is None or 0 <= f <= 1 for f in messages)


# -- training graphs: only the forward part must be contiguous ---------------------------------


def _training_problem(rng: np.random.Generator, num_devices: int, memory_caps: bool):
    """A random training graph: forward DAG, backward mates (one colour class each) with
    mirrored backward edges, saved activations (forward -> backward), maybe an orphan backward
    node, a CPU-like device 0 that pays no transfers."""
    most_ops = int(math.log(MAX_ASSIGNMENTS) / math.log(num_devices))
    num_forward = int(rng.integers(2, max(3, most_ops // 2) + 1))
    forward_edges = [
        (u, v) for v in range(num_forward) for u in range(v) if rng.random() < 0.5
    ]
    with_mate = [u for u in range(num_forward) if rng.random() < 0.8]
    room = most_ops - num_forward
    with_mate = with_mate[:room]
    mate = {u: num_forward + i for i, u in enumerate(with_mate)}
    edges = list(forward_edges)
    edges += [(mate[v], mate[u]) for u, v in forward_edges if u in mate and v in mate]
    edges += [(u, mate[u]) for u in mate if rng.random() < 0.5]
    edges += [(u, mate[v]) for u, v in forward_edges if v in mate and rng.random() < 0.5]
    num_ops = num_forward + len(mate)
    backward = set(mate.values())
    if num_ops < most_ops and len(mate) >= 2:
        orphan = num_ops
        num_ops += 1
        backward.add(orphan)
        first, second = rng.choice(sorted(mate.values()), size=2, replace=False)
        edges += [(int(max(first, second)), orphan), (orphan, int(min(first, second)))]
    nodes = [OpNode(f"op{u}", is_backward=u in backward) for u in range(num_ops)]
    compute = rng.uniform(0.1, 10.0, size=(num_ops, num_devices))
    transfer = rng.uniform(0.0, 3.0, size=(num_ops, num_devices))
    transfer[:, 0] = 0.0
    memory = rng.uniform(1.0, 10.0, size=num_ops)
    capacity = [math.inf] * num_devices
    if memory_caps:
        capacity[1:] = [float(rng.uniform(0.4, 1.0) * memory.sum())] * (num_devices - 1)
    devices = [Device(f"dev{d}", memory_capacity=capacity[d]) for d in range(num_devices)]
    return PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=devices,
        compute_time=compute,
        transfer_time=transfer,
        memory=memory,
        colour_classes=[[u, b] for u, b in mate.items()],
        name="training",
    )


@pytest.mark.parametrize("memory_caps", (False, True), ids=("plain", "memory_caps"))
@pytest.mark.parametrize("seed", range(25))
def test_training_graph_matches_brute_force_over_forward_contiguous_splits(seed, memory_caps):
    rng = np.random.default_rng([seed, memory_caps, 7])
    problem = _training_problem(rng, int(rng.integers(2, 4)), memory_caps)
    contiguous_optimum = best_throughput(problem, contiguous=True)
    placement = _solve_or_inf(problem)
    if math.isinf(contiguous_optimum):
        assert placement is None
        return
    validate(problem, placement, contiguous=True)
    assert math.isclose(placement.value, contiguous_optimum, rel_tol=1e-9)
    assert placement.stats["optimal"] is True


def _mirrored_chain() -> PlacementProblem:
    # Forward f0 -> f1 -> f2, backward mates b2 -> b1 -> b0 running the other way, and an orphan
    # gradient accumulation o with b1 -> o -> b0: its mirror image sits between f0 and f1.
    names = ["f0", "f1", "f2", "b0", "b1", "b2", "o"]
    nodes = [OpNode(name, is_backward=name[0] != "f") for name in names]
    edges = [(0, 1), (1, 2), (5, 4), (4, 3), (4, 6), (6, 3), (0, 3), (1, 4)]
    return PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=[Device(f"gpu{d}", "gpu") for d in range(3)],
        compute_time=np.ones((7, 3)),
        transfer_time=np.full((7, 3), 0.1),
        colour_classes=[[0, 3], [1, 4], [2, 5]],
    )


def test_backward_data_flowing_back_is_contiguous():
    problem = _mirrored_chain()
    validate(problem, np.array([0, 1, 2, 0, 1, 2, 0]), contiguous=True)
    validate(problem, np.array([0, 1, 2, 0, 1, 2, 1]), contiguous=True)
    with pytest.raises(InvalidPlacementError, match="not contiguous"):
        validate(problem, np.array([0, 1, 0, 0, 1, 0, 0]), contiguous=True)


def test_orphan_backward_node_follows_its_mirror_image():
    problem = _mirrored_chain()
    with pytest.raises(InvalidPlacementError, match="not contiguous"):
        validate(problem, np.array([0, 1, 2, 0, 1, 2, 2]), contiguous=True)
    placement = solve(problem, "throughput", "dp")
    validate(problem, placement, contiguous=True)
    assert placement.value == pytest.approx(best_throughput(problem, contiguous=True))


def test_contiguity_edges_of_inference_and_training_graphs():
    inference = _chain([[1, 1]] * 3, [[0, 0]] * 3, [Device("a"), Device("b")])
    assert np.array_equal(contiguity_edges(inference), inference.graph.edges)
    edges = {tuple(e) for e in contiguity_edges(_mirrored_chain()).tolist()}
    assert edges == {(0, 1), (1, 2), (6, 4), (3, 6)}
