"""DiviML's exact programs, its splitting heuristic and its lower bound, against brute force."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest


from brute_force import (  # noqa: E402
    best_latency,
    best_throughput,
    random_problem,
    topological_orders,
)

from tvm_place.errors import InfeasibleError, InvalidPlacementError, UnknownMethodError  # noqa: E402
from tvm_place.formats import load_problem  # noqa: E402
from tvm_place.evaluate import evaluate, validate  # noqa: E402
from tvm_place.graph import Device, OpGraph, OpNode, Placement, PlacementProblem  # noqa: E402
from tvm_place.solvers import bounds, diviml, diviml_split, replicas, solve  # noqa: E402
from time_allowance import allowed_seconds

#: Random problems per objective compared with exhaustive search (120 DAGs in all).
SEEDS = range(60)

#: Cap on (assignments x execution orders) brute force evaluates per problem.
LATENCY_BUDGET = 6000
THROUGHPUT_BUDGET = 2200

RELATIVE = 1e-6


def small_problem(seed: int, objective: str) -> PlacementProblem:
    """A random DAG of at most 5 (latency) or 7 (throughput) operators on 2-3 devices, with
    memory caps, colour classes, unsupported operators and edge density each drawn at random,
    shrunk until brute force is cheap."""
    rng = np.random.default_rng([seed, objective == "latency"])
    num_devices = int(rng.integers(2, 4))
    num_ops = int(rng.integers(2, (6 if objective == "latency" else 8)))
    flags = {
        "memory_caps": bool(rng.random() < 0.5),
        "colour_classes": bool(rng.random() < 0.4),
        "unsupported": bool(rng.random() < 0.5),
        "cpu_pays_no_transfer": bool(rng.random() < 0.25),
    }
    # Dense DAGs often have operators on every path, which split cuts at.
    edge_probability = float(rng.uniform(0.3, 0.8))
    while True:
        problem = random_problem(rng, num_ops, num_devices, edge_probability, **flags)
        if objective == "latency":
            work = num_devices**num_ops * sum(1 for _ in topological_orders(problem))
            budget = LATENCY_BUDGET
        else:
            work, budget = num_devices**num_ops, THROUGHPUT_BUDGET
        if work <= budget:
            return problem
        num_ops -= 1


def _run(method, problem, objective, **options):
    try:
        return method(problem, objective, 20.0, **options)
    except InfeasibleError as error:
        return error


@pytest.fixture(scope="module")
def cases():
    """(problem, brute-force optimum, diviml-milp outcome, split outcomes) per (objective, seed).

    Split runs with modules of one segment (``module_ops=1``), so that every cut vertex of these
    small graphs separates two modules; for latency with both schemes."""
    table = {}
    for objective in ("latency", "throughput"):
        for seed in SEEDS:
            problem = small_problem(seed, objective)
            optimum = (best_latency(problem) if objective == "latency"
                       else best_throughput(problem, contiguous=False))
            table[objective, seed] = (
                problem,
                optimum,
                _run(diviml.solve, problem, objective),
                [_run(diviml_split.solve, problem, objective, module_ops=1, scheme=scheme)
                 for scheme in ((None, "dp") if objective == "latency" else (None,))],
            )
    return table


def _check_placement(problem, placement, objective):
    validate(problem, placement)
    evaluation = evaluate(problem, placement)
    assert math.isclose(evaluation.objective(objective), placement.value, rel_tol=1e-9)
    if objective == "latency":
        assert placement.order is not None
    assert placement.lower_bound <= placement.value


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_milp_equals_brute_force(cases, objective):
    feasible = 0
    for seed in SEEDS:
        problem, optimum, outcome, _ = cases[objective, seed]
        if math.isinf(optimum):
            assert isinstance(outcome, InfeasibleError), f"seed {seed}: expected InfeasibleError"
            continue
        feasible += 1
        assert not isinstance(outcome, Exception), f"seed {seed}: {outcome}"
        _check_placement(problem, outcome, objective)
        assert math.isclose(outcome.value, optimum, rel_tol=RELATIVE), (seed, outcome.value,
                                                                         optimum)
        assert outcome.lower_bound <= optimum * (1 + 1e-12)
        assert outcome.stats["status"] == "optimal"
    assert feasible >= 40  # the sweep is not all infeasible problems


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_split_is_valid_and_never_beats_brute_force(cases, objective):
    split_up = 0
    for seed in SEEDS:
        problem, optimum, _, outcomes = cases[objective, seed]
        for outcome in outcomes:
            if math.isinf(optimum):
                assert isinstance(outcome, InfeasibleError), f"seed {seed}: expected an error"
                continue
            assert not isinstance(outcome, Exception), f"seed {seed}: {outcome}"
            _check_placement(problem, outcome, objective)
            assert outcome.value >= optimum * (1 - 1e-9), seed
            assert outcome.lower_bound <= optimum * (1 + 1e-12)
            split_up += outcome.stats["modules"] > 1
            if outcome.stats.get("scheme") == "dp over boundary devices":
                # Exact composition: modules solved to optimality give the optimum.
                assert math.isclose(outcome.value, optimum, rel_tol=RELATIVE), seed
    assert split_up >= (30 if objective == "latency" else 15)  # modules were exercised


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_lower_bound_is_valid_and_at_least_diviml_formula(cases, objective):
    for seed in SEEDS:
        problem, optimum, _, _ = cases[objective, seed]
        if math.isinf(optimum):
            continue
        bound = bounds.device_aware_bound(problem, objective)
        assert bound <= optimum * (1 + 1e-12), (seed, bound, optimum)
        # DiviML's max(critical path at fastest times, fastest work / devices), sharpened.
        assert bound >= bounds.lower_bound(problem, objective) * (1 - 1e-9), seed


def test_lower_bound_counts_unavoidable_transfers():
    # Two operators that cannot share a device (one runs only on dev0, the other only on dev1):
    # the value must cross, so latency >= 1 + (2 + 3) + 1 and dev0's load >= 1 + 2.
    problem = PlacementProblem(
        graph=OpGraph([OpNode("a"), OpNode("b")], [(0, 1)]),
        devices=[Device("dev0"), Device("dev1")],
        compute_time=np.array([[1.0, math.inf], [math.inf, 1.0]]),
        transfer_time=np.array([[2.0, 3.0], [0.0, 0.0]]),
    )
    assert bounds.device_aware_bound(problem, "latency") == pytest.approx(7.0)
    assert bounds.lower_bound(problem, "latency") == pytest.approx(2.0)
    assert bounds.device_aware_bound(problem, "throughput") == pytest.approx(4.0, rel=1e-9)
    assert best_throughput(problem) == pytest.approx(4.0)
    assert best_latency(problem) == pytest.approx(7.0)


def _residual_chain(blocks: int, num_devices: int = 3, seed: int = 0, memory_frac=None):
    """x -> a -> b -> add(x, b), repeated: a cut vertex at every add."""
    rng = np.random.default_rng(seed)
    edges, last, n = [], 0, 1
    for _ in range(blocks):
        a, b, add = n, n + 1, n + 2
        edges += [(last, a), (a, b), (b, add), (last, add)]
        last, n = add, n + 3
    compute = rng.uniform(0.5, 2.0, size=(n, 1)) * rng.uniform(0.6, 1.6, size=(n, num_devices))
    compute[:, 0] *= 4.0  # a slow CPU
    transfer = rng.uniform(0.2, 1.0, size=(n, 1)) * np.array([[0.3] + [1.0] * (num_devices - 1)])
    memory = rng.uniform(1.0, 10.0, size=n)
    caps = [math.inf] * num_devices
    if memory_frac is not None:
        caps = [math.inf] + [memory.sum() * memory_frac] * (num_devices - 1)
    return PlacementProblem(
        graph=OpGraph([OpNode(f"op{u}") for u in range(n)], edges),
        devices=[Device(f"dev{d}", memory_capacity=caps[d]) for d in range(num_devices)],
        compute_time=compute,
        transfer_time=transfer,
        memory=memory,
    )


def test_cut_vertices_and_modules():
    problem = _residual_chain(4)
    assert diviml_split.cut_vertices(problem) == [0, 3, 6, 9, 12]
    parts = diviml_split.modules(problem, 6)
    assert sorted(u for part in parts for u in part) == list(range(13))
    assert all(part[-1] in (3, 6, 9, 12) for part in parts)
    # Two sources and two sinks: no operator is on every path.
    diamond = PlacementProblem(
        graph=OpGraph([OpNode(f"op{u}") for u in range(4)], [(0, 2), (1, 2), (2, 3)]),
        devices=[Device("dev0")],
        compute_time=np.ones((4, 1)),
        transfer_time=np.zeros((4, 1)),
    )
    assert diviml_split.cut_vertices(diamond) == [2, 3]
    # A colour class across blocks 1 and 3 joins the modules in between.
    coloured = _residual_chain(4)
    coloured.colour_classes = [[1, 10]]
    parts = diviml_split.modules(coloured, 3)
    assert any(1 in part and 10 in part for part in parts)


def test_split_dp_is_exact_on_a_chain():
    problem = _residual_chain(5)
    exact = diviml.solve(problem, "latency", 30.0)
    assert exact.stats["status"] == "optimal"
    placement = diviml_split.solve(problem, "latency", 30.0, module_ops=4, scheme="dp")
    _check_placement(problem, placement, "latency")
    assert placement.stats["modules"] >= 3
    assert math.isclose(placement.value, exact.value, rel_tol=RELATIVE)
    assert placement.lower_bound == pytest.approx(placement.value, rel=RELATIVE)


def _repeated_chain(blocks: int, seed: int = 0) -> PlacementProblem:
    """:func:`_residual_chain` with every block priced alike on two identical devices (the
    layers of a model on two CPUs)."""
    problem = _residual_chain(blocks, num_devices=2, seed=seed)
    block = np.random.default_rng(seed).uniform(0.5, 2.0, size=(3, 1))
    problem.compute_time = np.vstack([[[1.0, 1.0]], np.tile(block, (blocks, 2))])
    problem.transfer_time = np.full((problem.num_ops, 2), 0.4)
    return problem


@pytest.mark.parametrize("seed", range(4))
def test_split_solves_a_repeated_module_once(seed, monkeypatch):
    """Sequential split: modules whose programs are the same (a repeated layer, the same boundary
    device, the same hint) are solved once, and the placement is the one solving each gives."""
    problem = _repeated_chain(8, seed=seed)
    solves = []
    milp = diviml.latency_milp

    def counted(*args, **kwargs):
        solves.append(args[1].ops)
        return milp(*args, **kwargs)

    monkeypatch.setattr(diviml, "latency_milp", counted)
    reused = diviml_split.solve(problem, "latency", 30.0, module_ops=3)
    assert reused.stats["modules"] == 8 and reused.stats["modules_reused"] >= 5
    assert len(solves) == 8 - reused.stats["modules_reused"]
    monkeypatch.setattr(diviml_split, "_module_key", lambda *args: None)
    each = diviml_split.solve(problem, "latency", 30.0, module_ops=3)
    assert each.stats["modules_reused"] == 0 and len(solves) == 8 - reused.stats["modules_reused"] + 8
    _check_placement(problem, reused, "latency")
    assert reused.value == each.value
    assert reused.device_of.tolist() == each.device_of.tolist()
    assert reused.order.tolist() == each.order.tolist()


def test_small_module_programs_stop_at_their_proof():
    """GPT-2 small on two CPUs (a problem saved from a compile, calibrated CPU costs): every
    27-operator module program is optimal from its hint; with two interleaved CP-SAT workers each
    ran to its 2 s limit (split 4 s with the repeats reused, 8 s without), one worker stops at the
    proof (0.2 s)."""
    problem = load_problem(Path(__file__).parent / "problems" / "gpt2-small-calibrated-two-cpus.json")
    started = time.perf_counter()
    placement = diviml_split.solve(problem, "latency", 60.0)
    assert time.perf_counter() - started < allowed_seconds(0.5)
    _check_placement(problem, placement, "latency")
    assert placement.stats["modules"] == 8


def test_split_solves_modules_that_differ_each():
    """Blocks priced differently make different programs: nothing is reused."""
    problem = _residual_chain(8, num_devices=2)
    placement = diviml_split.solve(problem, "latency", 30.0, module_ops=3)
    _check_placement(problem, placement, "latency")
    assert placement.stats["modules"] == 8 and placement.stats["modules_reused"] == 0


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_split_with_binding_memory(objective):
    problem = _residual_chain(12, memory_frac=0.3)
    placement = diviml_split.solve(problem, objective, 10.0, module_ops=9)
    _check_placement(problem, placement, objective)
    assert placement.stats["modules"] >= 3
    assert placement.value >= bounds.device_aware_bound(problem, objective)


def _infeasible_problems():
    nodes = [OpNode("a"), OpNode("b"), OpNode("c")]
    graph = OpGraph(nodes, [(0, 1), (1, 2)])
    devices = [Device("cpu", memory_capacity=10.0), Device("gpu", memory_capacity=10.0)]
    compute = np.ones((3, 2))
    transfer = np.ones((3, 2))
    unsupported = compute.copy()
    unsupported[1] = math.inf
    yield "unsupported everywhere", PlacementProblem(graph, devices, unsupported, transfer)
    yield "pinned to a device that lacks it", PlacementProblem(
        graph, devices, np.array([[1.0, math.inf], [1.0, 1.0], [1.0, 1.0]]), transfer,
        pins={0: (1,)})
    yield "memory too small in all", PlacementProblem(
        graph, devices, compute, transfer, memory=np.array([7.0, 7.0, 7.0]))
    yield "one operator too big", PlacementProblem(
        graph, devices, compute, transfer, memory=np.array([1.0, 11.0, 1.0]))
    yield "colour class too big", PlacementProblem(
        graph, devices, compute, transfer, memory=np.array([6.0, 1.0, 6.0]),
        colour_classes=[[0, 2]])


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("method", [diviml.solve, diviml_split.solve], ids=["diviml-milp", "split"])
def test_infeasible_raises(method, objective):
    for label, problem in _infeasible_problems():
        with pytest.raises(InfeasibleError):
            method(problem, objective, 10.0)
        assert math.isinf(best_throughput(problem)), label


def test_unknown_objective():
    problem = _residual_chain(1)
    for call in (lambda: diviml.solve(problem, "energy", 1.0),
                 lambda: diviml_split.solve(problem, "energy", 1.0),
                 lambda: bounds.device_aware_bound(problem, "energy")):
        with pytest.raises(UnknownMethodError):
            call()
    with pytest.raises(UnknownMethodError):
        diviml_split.solve(problem, "latency", 1.0, scheme="bogus")


def test_progress_is_reported():
    problem = _residual_chain(6)
    messages = []
    diviml.solve(problem, "latency", 5.0, lambda message, fraction: messages.append(message))
    diviml_split.solve(problem, "throughput", 5.0, lambda message, fraction: messages.append(message),
                module_ops=6)
    assert any(m.startswith("diviml-milp") for m in messages)
    assert any(m.startswith("split") for m in messages)


@pytest.mark.parametrize("graph", ["random", "chain"])
@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("method", [diviml.solve, diviml_split.solve], ids=["diviml-milp", "split"])
def test_time_limit_on_300_operators(method, objective, graph):
    if graph == "random":
        problem = random_problem(np.random.default_rng(7), 300, 3, edge_probability=0.02,
                                 memory_caps=True)
    else:
        problem = _residual_chain(100, memory_frac=0.5)
    time_limit = 2.0
    started = time.perf_counter()
    placement = method(problem, objective, time_limit)
    elapsed = time.perf_counter() - started
    assert elapsed <= allowed_seconds(time_limit), elapsed
    _check_placement(problem, placement, objective)
    assert placement.lower_bound <= placement.value


# -- replicas (diviml-replicas) -------------------------------------------------------------------


def heavy_chain(capacity: float = math.inf) -> PlacementProblem:
    """A light op, a heavy op, a light op on three devices: two equal GPUs and a slow CPU."""
    return PlacementProblem(
        graph=OpGraph([OpNode("a"), OpNode("heavy"), OpNode("b")], [(0, 1), (1, 2)]),
        devices=[Device("cpu:0", "cpu"), Device("gpu:0", "gpu", capacity),
                 Device("gpu:1", "gpu", capacity)],
        compute_time=[[1.0, 1.0, 1.0], [100.0, 10.0, 10.0], [1.0, 1.0, 1.0]],
        transfer_time=[[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]],
        memory=[1.0, 4.0, 1.0],
    )


def test_replicas_halve_the_bottleneck_of_a_heavy_stage():
    problem = heavy_chain()
    plain = solve(problem, "throughput", "diviml-milp", 10)
    replicated = solve(problem, "throughput", "diviml-replicas", 10)
    # Without replicas the GPU holding the heavy op carries at least 10 plus the copies of the
    # light ops' values (11). Replicated over both GPUs, the light ops on the CPU (whose links
    # cost it nothing), each GPU carries (0.5 + 10 + 0.5) / 2 = 5.5 and the CPU 2.
    assert plain.value == pytest.approx(11.0)
    assert replicated.replicas == [(1, 2)]
    assert replicated.value == pytest.approx(5.5)
    assert replicated.gap == pytest.approx(0.0, abs=1e-6)
    evaluation = evaluate(problem, replicated)
    assert evaluation.load.tolist() == pytest.approx([2.0, 5.5, 5.5])
    assert evaluation.memory.tolist() == pytest.approx([2.0, 4.0, 4.0])


def test_replicas_respect_the_smallest_member_memory():
    # Only one GPU can hold the heavy op: no replica group of GPUs is feasible.
    problem = heavy_chain()
    problem.devices[2] = Device("gpu:1", "gpu", 3.0)
    replicated = solve(problem, "throughput", "diviml-replicas", 10)
    assert (1, 2) not in replicated.replicas
    assert replicated.value >= 10.0 * (1 - 1e-9) - 1e-9


@pytest.mark.parametrize("groups, device_of, message", [
    ([(1, 2)], [1, 2, 1], "replica of gpu:0"),
    ([(0, 1), (1, 2)], [0, 0, 0], "two replica groups"),
    ([(1,)], [1, 1, 1], "at least two devices"),
])
def test_invalid_replica_groups_are_rejected(groups, device_of, message):
    placement = Placement(device_of=device_of, objective="throughput", value=0.0,
                          lower_bound=0.0, method="given", replicas=groups)
    with pytest.raises(InvalidPlacementError, match=message):
        validate(heavy_chain(), placement)


def test_replicated_placement_round_trips_through_json():
    placement = solve(heavy_chain(), "throughput", "diviml-replicas", 10)
    again = Placement.from_dict(json.loads(placement.to_json()))
    assert again.replicas == placement.replicas
    assert evaluate(heavy_chain(), again).max_load == pytest.approx(placement.value)


def test_replicas_method_refuses_latency_and_too_many_devices():
    with pytest.raises(UnknownMethodError, match=r"solves \[.throughput.\], not .latency."):
        solve(heavy_chain(), "latency", "diviml-replicas", 1)
    many = random_problem(np.random.default_rng(0), 3, 8)
    with pytest.raises(UnknownMethodError, match="255 device groups on 8 devices"):
        solve(many, "throughput", "diviml-replicas", 1)


def test_identical_devices_give_consecutive_runs_only():
    problem = PlacementProblem(
        graph=OpGraph([OpNode("a"), OpNode("b")], [(0, 1)]),
        devices=[Device("cpu:0"), *(Device(f"gpu:{i}", "gpu") for i in range(3))],
        compute_time=[[4.0, 1.0, 1.0, 1.0], [4.0, 2.0, 2.0, 2.0]],
        transfer_time=[[0.0, 0.5, 0.5, 0.5]] * 2,
    )
    groups = replicas.device_groups(problem)
    # Runs of the three identical GPUs (6), each with or without the CPU, and the CPU alone.
    assert len(groups) == 13 and (1, 3) not in groups and (0, 1, 2, 3) in groups
    problem.compute_time[1, 3] = 3.0  # gpu:2 now differs: every subset
    assert len(replicas.device_groups(problem)) == 15
    # The optimum does not depend on which groups were left out: all three GPUs share everything.
    problem.compute_time[1, 3] = 2.0
    placement = solve(problem, "throughput", "diviml-replicas", 10)
    assert placement.value == pytest.approx(1.0) and placement.replicas == [(1, 2, 3)]


def test_replicated_bound_holds_where_the_plain_bound_does_not():
    problem = heavy_chain()
    assert bounds.lower_bound(problem, "throughput") == pytest.approx(10.0)
    assert bounds.lower_bound(problem, "throughput", replicas=True) <= 5.5


def test_equal_optima_give_the_same_plan_on_every_run():
    """A saved problem with several optimal latency orders (a small BERT layer on a CPU and a T4,
    priced by the learned model): CP-SAT's parallel workers returned 7 different orders in 10
    solves at the same value. A plan must be the same on every run (README, regression tests)."""
    problem = load_problem(Path(__file__).parent / "problems" / "bert-layer-learned-cpu-t4.json")
    plans = {solve(problem, "latency", "diviml-milp", 20).to_json() for _ in range(6)}
    assert len(plans) == 1
