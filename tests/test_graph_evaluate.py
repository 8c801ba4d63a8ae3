"""The plain-data model: graph checks, the validator, the evaluator, the JSON form, the bounds."""

import json
import math

import numpy as np
import pytest

from tvm_place.errors import InvalidGraphError, InvalidPlacementError
from tvm_place.evaluate import evaluate, validate
from tvm_place.formats import load_problem, problem_from_dict, problem_to_json
from tvm_place.graph import Device, OpGraph, OpNode, Placement, PlacementProblem
from tvm_place.solvers import bounds


def fan_out_problem() -> PlacementProblem:
    """a -> b, a -> c, b -> d, c -> d; device 0 pays no transfers (a host CPU)."""
    nodes = [OpNode(name) for name in "abcd"]
    graph = OpGraph(nodes, [(0, 1), (0, 2), (1, 3), (2, 3)])
    compute = np.array([[4.0, 1.0], [4.0, 1.0], [8.0, 2.0], [4.0, 1.0]])
    transfer = np.array([[0.0, 0.5], [0.0, 0.25], [0.0, 0.75], [0.0, 1.0]])
    devices = [Device("cpu:0", "cpu"), Device("gpu:0", "gpu", memory_capacity=10.0)]
    return PlacementProblem(graph, devices, compute, transfer, memory=np.array([1.0, 2.0, 3.0, 4.0]))


def test_graph_rejects_empty_cyclic_and_dangling():
    with pytest.raises(InvalidGraphError, match="empty"):
        OpGraph([], [])
    with pytest.raises(InvalidGraphError, match="cycle"):
        OpGraph([OpNode("a"), OpNode("b")], [(0, 1), (1, 0)])
    with pytest.raises(InvalidGraphError, match="outside"):
        OpGraph([OpNode("a")], [(0, 3)])


def test_topological_order_is_deterministic():
    graph = OpGraph([OpNode(n) for n in "abc"], [(2, 0), (2, 1)])
    assert graph.topological_order.tolist() == [2, 0, 1]


def test_fan_out_value_is_sent_once_and_received_once_per_device():
    problem = fan_out_problem()
    # a on gpu; b, c on cpu; d on gpu: a's output goes to the cpu once (two consumers there).
    evaluation = evaluate(problem, np.array([1, 0, 0, 1]))
    assert evaluation.copies == [(0, 0), (1, 1), (2, 1)]
    # gpu: compute a + d = 2; sends a once (0.5); receives b (0.25) and c (0.75).
    assert evaluation.compute.tolist() == [12.0, 2.0]
    assert evaluation.transfer_out.tolist() == [0.0, 0.5]
    assert evaluation.transfer_in.tolist() == [0.0, 1.0]
    assert evaluation.max_load == 12.0
    # latency: a 0..1; b, c on cpu one after the other from 1.5 (a's transfer 0.5 + 0.0);
    # b 1.5..5.5, c 5.5..13.5; d waits for c + 0.75 -> 14.25..15.25.
    assert evaluation.latency == pytest.approx(15.25)


def test_latency_respects_given_order():
    problem = fan_out_problem()
    evaluation = evaluate(problem, np.array([0, 0, 0, 0]), order=np.array([0, 2, 1, 3]))
    assert evaluation.start.tolist() == [0.0, 12.0, 4.0, 16.0]
    with pytest.raises(InvalidPlacementError, match="before its input"):
        evaluate(problem, np.array([0, 0, 0, 0]), order=np.array([3, 0, 1, 2]))


def test_validator_catches_each_violation():
    problem = fan_out_problem()
    problem.memory[0] = 1.5
    with pytest.raises(InvalidPlacementError, match="capacity"):
        validate(problem, np.array([1, 1, 1, 1]))
    with pytest.raises(InvalidPlacementError, match="matches"):
        validate(problem, np.array([0, 1]))
    problem.pins = {3: (0,)}
    with pytest.raises(InvalidPlacementError, match="pinned"):
        validate(problem, np.array([0, 0, 0, 1]))
    problem.pins = {}
    problem.compute_time[2, 1] = math.inf
    with pytest.raises(InvalidPlacementError, match="not supported"):
        validate(problem, np.array([0, 0, 1, 0]))
    problem.compute_time[2, 1] = 2.0
    problem.colour_classes = [[1, 2]]
    with pytest.raises(InvalidPlacementError, match="colour"):
        validate(problem, np.array([0, 0, 1, 0]))
    problem.colour_classes = []
    validate(problem, np.array([0, 1, 0, 0]))
    with pytest.raises(InvalidPlacementError, match="contiguous"):
        validate(problem, np.array([0, 1, 0, 0]), contiguous=True)


def test_exact_capacity_fit_is_accepted():
    problem = fan_out_problem()
    validate(problem, np.array([1, 1, 1, 1]))
    assert problem.memory.sum() == 10.0


def test_json_round_trip(tmp_path):
    problem = fan_out_problem()
    problem.compute_time[2, 1] = math.inf
    problem.pins = {0: (1,)}
    path = tmp_path / "problem.json"
    path.write_text(problem_to_json(problem))
    loaded = load_problem(path)
    assert np.array_equal(loaded.compute_time, problem.compute_time)
    assert np.array_equal(loaded.transfer_time, problem.transfer_time)
    assert loaded.pins == {0: (1,)}
    assert loaded.graph.edges.tolist() == problem.graph.edges.tolist()
    assert loaded.capacity.tolist() == problem.capacity.tolist()
    placement = Placement(np.array([1, 0, 0, 1]), "latency", 3.0, 2.0, "given", order=np.arange(4))
    again = Placement.from_dict(json.loads(placement.to_json()))
    assert again.device_of.tolist() == [1, 0, 0, 1] and again.gap == pytest.approx(1 / 3)


def test_malformed_problem_files_get_clear_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(InvalidGraphError, match="not valid JSON"):
        load_problem(path)
    with pytest.raises(InvalidGraphError, match="does not exist"):
        load_problem(tmp_path / "missing.json")
    with pytest.raises(InvalidGraphError, match="tvm-place problem"):
        problem_from_dict({"nodes": []})
    data = json.loads(problem_to_json(fan_out_problem()))
    data["nodes"][0]["compute_time"] = [1.0]
    with pytest.raises(InvalidGraphError, match="one per device"):
        problem_from_dict(data)
    data = json.loads(problem_to_json(fan_out_problem()))
    data["edges"].append([3, 0])
    with pytest.raises(InvalidGraphError, match="cycle"):
        problem_from_dict(data)


def test_bounds_never_exceed_the_evaluated_objective():
    problem = fan_out_problem()
    for assignment in np.ndindex(*(2,) * 4):
        device_of = np.array(assignment)
        try:
            evaluation = evaluate(problem, device_of)
        except InvalidPlacementError:
            continue
        assert bounds.lower_bound(problem, "throughput") <= evaluation.max_load + 1e-12
        assert bounds.lower_bound(problem, "latency") <= evaluation.latency + 1e-12


def test_a_plan_for_other_operators_is_refused():
    from tvm_place.solvers import solve

    problem = fan_out_problem()
    placement = Placement.from_dict(json.loads(solve(problem, "throughput", "dp", 5).to_json()))
    assert placement.operators == problem.graph.names
    validate(problem, placement)
    renamed = Placement.from_dict({**placement.to_dict(), "operators": ["a", "b", "x", "d"]})
    with pytest.raises(InvalidPlacementError, match="operator 2 is 'x', the model's is"):
        validate(problem, renamed)
    shorter = Placement.from_dict({**placement.to_dict(), "operators": ["a", "b"]})
    with pytest.raises(InvalidPlacementError, match="names 2 operators, the model has 4"):
        evaluate(problem, shorter)


def test_call_overhead_delays_each_stage_start_and_loads_its_device():
    """Placement a, c, d on cpu:0 and b on gpu:0 makes stages {a}, {b}, {c}, {d} (a sends, d
    receives): with 1 s to start a stage, cpu:0 pays 3 s and gpu:0 1 s per input, and on the
    critical path a, c and d each start 1 s later (16 s -> 19 s)."""
    import dataclasses

    problem = fan_out_problem()
    placement = np.array([0, 1, 0, 0])
    plain = evaluate(problem, placement)
    slow = dataclasses.replace(
        problem, devices=[dataclasses.replace(d, call_overhead=1.0) for d in problem.devices])
    priced = evaluate(slow, placement)
    assert plain.latency == 16.0 and priced.latency == 19.0
    assert (priced.load - plain.load).tolist() == [3.0, 1.0]
    again = problem_from_dict(json.loads(problem_to_json(slow)))
    assert [d.call_overhead for d in again.devices] == [1.0, 1.0]
    assert evaluate(again, placement).latency == 19.0


def chain_problem(times) -> PlacementProblem:
    """A chain of operators taking ``times[u]`` seconds on either of two devices, copies free."""
    n = len(times)
    graph = OpGraph([OpNode(f"op{u}") for u in range(n)], [(u, u + 1) for u in range(n - 1)])
    compute = np.repeat(np.asarray(times, dtype=float)[:, None], 2, axis=1)
    devices = [Device("cpu:0", "cpu"), Device("cpu:1", "cpu")]
    return PlacementProblem(graph, devices, compute, np.zeros((n, 2)), memory=np.zeros(n))


def test_stream_interval_of_a_contiguous_split_is_its_max_stage_time_once_enough_inputs_fly():
    from tvm_place.evaluate import stream_interval

    problem = chain_problem([1.0, 2.0, 3.0, 1.0])
    split = np.array([0, 0, 1, 1])  # loads 3 and 4
    evaluation = evaluate(problem, split)
    assert stream_interval(problem, split, depth=1) == pytest.approx(evaluation.latency)
    assert stream_interval(problem, split, depth=2) == pytest.approx(evaluation.max_load)
    assert stream_interval(problem, split, depth=8) == pytest.approx(evaluation.max_load)


def test_stream_interval_sees_a_back_and_forth_split_overlap_less_than_its_bound():
    """Stages 3, 1, 1, 3 seconds on devices A, B, A, B with two inputs in flight: A takes the
    second input's long first stage while the first input's short A stage waits for it, so an
    input leaves every 5 s rather than the max-stage time's 4 s (= latency 8 / 2 inputs)."""
    from tvm_place.evaluate import stream_interval

    problem = chain_problem([3.0, 1.0, 1.0, 3.0])
    split = np.array([0, 1, 0, 1])
    evaluation = evaluate(problem, split)
    bound = max(evaluation.max_load, evaluation.latency / 2)
    assert bound == pytest.approx(4.0)
    assert stream_interval(problem, split, depth=2) == pytest.approx(5.0)
    for depth in (1, 2, 3, 8):  # never better than the max-stage time
        assert stream_interval(problem, split, depth) >= evaluation.max_load - 1e-9


# A BERT layer (seq 512, measured costs on this machine) split back and forth over two CPUs in 9
# stages: per stage its device, its seconds (compute and copy halves) and the stages it reads.
BACK_AND_FORTH = dict(
    stage_device=[0, 1, 0, 0, 1, 0, 1, 1, 0],
    busy=[0.889, 0.005, 0.176, 0.186, 0.005, 0.305, 1.149, 1.240, 0.003],
    needs=[[], [0], [0], [1, 2], [3], [4], [5], [5, 6], [7]],
)


def back_and_forth_stream(depth, inputs=None):
    from tvm_place.schedule import Stream

    busy = np.repeat(np.asarray(BACK_AND_FORTH["busy"])[:, None], 2, axis=1)
    return Stream(BACK_AND_FORTH["stage_device"], busy, BACK_AND_FORTH["needs"], depth, inputs)


def test_stream_rule_reaches_the_max_stage_time_on_a_chain_back_and_forth():
    """Nine equal stages alternating between two devices: with two inputs in flight each device
    works all the time (input k's stage s beside input k + 1's stage s - 1)."""
    from tvm_place.evaluate import stream_interval

    problem = chain_problem([1.0] * 9)
    split = np.arange(9) % 2
    assert evaluate(problem, split).max_load == 5.0
    assert stream_interval(problem, split, depth=1) == pytest.approx(9.0)
    for depth in (2, 4, 8):
        assert stream_interval(problem, split, depth) == pytest.approx(5.0)


def test_stream_rule_on_a_bert_layer_split_back_and_forth():
    """A split like the one whose Ray run measured 3468 ms per input against a 2375 ms max-stage
    time (4 in flight): the stream rule runs it at the max-stage time from 4 inputs in flight
    (the fixed order by the hop key the Ray runtime used, simulated on these times, ran at
    1.57x); fewer in flight cannot keep both devices busy."""
    busy = np.asarray(BACK_AND_FORTH["busy"])
    max_stage = max(busy[[0, 2, 3, 5, 8]].sum(), busy[[1, 4, 6, 7]].sum())
    for depth in (4, 8):
        assert back_and_forth_stream(depth, 64).interval() == pytest.approx(max_stage)
    # one in flight: its latency (stages 1 and 2 run side by side)
    assert back_and_forth_stream(1, 64).interval() == pytest.approx(busy.sum() - busy[1])
    assert back_and_forth_stream(2, 64).interval() > max_stage
    # each device runs each input's stages in stage order, and inputs in order per stage
    calls = back_and_forth_stream(4, 16).run().calls
    for device, sequence in ((0, [0, 2, 3, 5, 8]), (1, [1, 4, 6, 7])):
        for k in range(16):
            assert [s for i, s, *_ in calls[device] if i == k] == sequence
        for s in sequence:
            assert [i for i, t, *_ in calls[device] if t == s] == list(range(16))


def test_endless_stream_orders_calls_as_asked():
    """The runtime's view (no count of inputs): the calls of a device as far as asked, the same
    as a finite stream's until its inputs run out."""
    endless, finite = back_and_forth_stream(4), back_and_forth_stream(4, 64).run()
    for device in (0, 1):
        got = [endless.call(device, i) for i in range(40)]
        assert got == [call[:2] for call in finite.calls[device][:40]]
    assert back_and_forth_stream(4, 2).call(0, 10) is None


def test_stream_interval_of_replicas_deals_inputs_to_the_members_in_turn():
    """A two-operator chain (3 s) replicated on both devices: one input in flight takes 3 s;
    two keep both members busy, 1.5 s per input, the max-stage time (each carries half)."""
    from tvm_place.evaluate import stream_interval

    problem = chain_problem([1.0, 2.0])
    replicated = Placement(device_of=np.zeros(2, dtype=np.int64), objective="throughput",
                           value=0.0, lower_bound=0.0, method="given", replicas=[(0, 1)])
    assert evaluate(problem, replicated).max_load == 1.5
    assert stream_interval(problem, replicated, depth=1) == pytest.approx(3.0)
    for depth in (2, 4):
        assert stream_interval(problem, replicated, depth) == pytest.approx(1.5)
