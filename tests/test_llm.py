"""Splitting a decoder language model (tvm_place.llm): layers read off weight names, the layer
splits users have as placements, and the figures a placement gives."""

import numpy as np
import pytest

from tvm_place import llm
from tvm_place.entries import BOUNDARY, Entry, joint_problem
from tvm_place.errors import InvalidPlacementError
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem


def decoder(num_layers: int, name: str, capacities=(np.inf, np.inf)):
    """embed -> per layer (cache read, matmul reading layers.i.w, add) -> head: a chain, with
    each layer's cache read an operator of inputs only."""
    nodes, edges, weights = [OpNode("embed", output_bytes=4.0)], [], {"embed.weight": (0, 100.0)}
    previous = 0
    for i in range(num_layers):
        cache = len(nodes)
        nodes += [OpNode(f"cache{i}", output_bytes=4.0), OpNode(f"matmul{i}", output_bytes=4.0),
                  OpNode(f"add{i}", output_bytes=4.0)]
        edges += [(previous, cache + 1), (cache, cache + 2), (cache + 1, cache + 2)]
        weights[f"model.layers.{i}.w"] = (cache + 1, 10.0 * (i + 1))
        previous = cache + 2
    nodes.append(OpNode("head", output_bytes=4.0))
    edges.append((previous, len(nodes) - 1))
    weights["lm_head.w"] = (len(nodes) - 1, 50.0)
    n = len(nodes)
    problem = PlacementProblem(
        graph=OpGraph(nodes, edges),
        devices=[Device("cpu:0", memory_capacity=capacities[0]), Device("cpu:1", memory_capacity=capacities[1])],
        compute_time=np.ones((n, 2)), transfer_time=np.full((n, 2), 0.1),
        memory=memory_of(weights, n), name=name)
    return problem, weights


def memory_of(weights, num_ops):
    memory = np.zeros(num_ops)
    for reader, size in weights.values():
        memory[reader] += size
    return memory


def test_each_operator_gets_the_layer_of_its_weight_its_producers_or_its_consumers():
    problem, weights = decoder(3, "d")
    layers = llm.operator_layers(problem, weights)
    named = dict(zip(problem.graph.names, layers.tolist()))
    assert named["embed"] == 0  # reads inputs only: with the first layer that reads its output
    assert [named[f"matmul{i}"] for i in range(3)] == [0, 1, 2]
    assert [named[f"cache{i}"] for i in range(3)] == [0, 1, 2]  # inputs only: its consumer's layer
    assert [named[f"add{i}"] for i in range(3)] == [0, 1, 2]
    assert named["head"] == 2
    with pytest.raises(InvalidPlacementError, match="layers.<i>"):
        llm.operator_layers(problem, {"embed.weight": (0, 1.0)})


@pytest.mark.parametrize("sizes, shares, counts", [
    ([1] * 8, [1, 1], [4, 4]),
    ([1] * 7, [1, 1], [4, 3]),
    ([1] * 8, [3, 1], [6, 2]),
    ([1, 1, 1, 5], [1, 1], [3, 1]),
    ([1] * 4, [1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]),
])
def test_contiguous_counts_cut_where_the_running_total_reaches_each_share(sizes, shares, counts):
    got = llm.contiguous_counts(sizes, shares)
    assert got == counts and sum(got) == len(sizes)


def decoder_functions(objective: str):
    """A 4-layer decoder's prefill and decode (8 calls) on devices of 300 and 100 bytes: the
    entries, their joint problem and its baseline splits."""
    prefill, weights = decoder(4, "prefill", capacities=(300.0, 100.0))
    decode, _ = decoder(4, "decode", capacities=(300.0, 100.0))
    entries = [Entry("prefill", prefill, 1.0, weights), Entry("decode", decode, 8.0, weights)]
    joint = joint_problem(entries, objective)
    return entries, joint, llm.baseline_splits(joint, entries)


def test_baseline_splits_place_both_functions_by_layer_and_keep_shared_weights_together():
    entries, joint, splits = decoder_functions("latency")
    prefill, weights = entries[0].problem, entries[0].weights
    assert sorted(splits) == sorted(llm.BASELINES)
    for name, device_of in splits.items():
        for entry in entries:
            part = device_of[entry.nodes]
            assert np.all(np.diff(part) >= 0), name  # contiguous: devices in layer order
        boundary = [u for u, node in enumerate(joint.graph.nodes) if node.kind == BOUNDARY][0]
        assert device_of[boundary] == device_of[joint.graph.predecessors[boundary][0]]
    layers = llm.operator_layers(prefill, weights)

    def layers_on(device_of, device):
        return sorted(set(layers[device_of[entries[0].nodes] == device].tolist()))
    assert layers_on(splits["uniform"], 0) == [0, 1]
    assert layers_on(splits["parameters"], 0) == [0, 1, 2]  # layer bytes 10, 20, 30, 40
    assert layers_on(splits["memory"], 0) == [0, 1, 2]  # 300 : 100 of memory
    figures = llm.llm_figures(joint, entries, splits["uniform"], batch=4)
    # Uniform: 7 operators on each device (embed and two layers; two layers and head), 1 s each,
    # and the one copy between them.
    assert figures.decode_tokens_per_second == pytest.approx(4 / (7 + 0.1), rel=1e-9)
    assert figures.time_to_first_token > 0 and not figures.fits  # cpu:1: 120 bytes over 100
    assert llm.llm_figures(joint, entries, splits["memory"], batch=4).fits
    with pytest.raises(InvalidPlacementError, match="no entry function"):
        llm.llm_figures(joint, entries, splits["uniform"], batch=1, decode="step")


def test_a_llama_with_a_kv_cache_generates_pipelined_the_tokens_of_one_device_and_baselines_price():
    """Two micro-batches of two sequences in flight through prefill and decode placed over two
    CPUs, weights bound: the tokens of TVM's unsplit build; every baseline split priced."""
    import tvm
    from tvm import relax

    import tvm_place
    from tvm_place.models import llama_kv

    config = llama_kv.config("tiny", num_layers=1)
    mod, params = llama_kv.build(config, batch=2)
    placed = tvm_place.compile(mod, ["llvm", "llvm"], objective="throughput", method="greedy",
                               entries={"prefill": 1, "decode": 8}, shape_hints={"n": 8, "m": 12},
                               time_limit=5)
    assert {len(set(f.placement.device_of)) for f in placed.functions.values()} == {2}
    placed.bind(params)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, config.vocab, (2, 6)) for _ in range(2)]
    generation = llm.generate(placed, prompts, steps=5)
    prefill, decode = llama_kv.vm_functions(relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu()), params)
    for prompt, tokens in zip(prompts, generation.tokens):
        np.testing.assert_array_equal(tokens, llama_kv.generate(prefill, decode, prompt, 5))
    assert generation.decode_tokens_per_second > 0
    entries = [Entry(name, f.problem, f.calls, f.weights) for name, f in placed.functions.items()]
    joint = joint_problem(entries, "throughput")
    layers = llm.operator_layers(entries[1].problem, entries[1].weights)
    assert set(layers.tolist()) == {0}
    for name, device_of in llm.baseline_splits(joint, entries).items():
        figures = llm.llm_figures(joint, entries, device_of, batch=2)
        assert figures.decode_tokens_per_second > 0 and figures.fits, name
    placed.close()


def test_best_split_keeps_a_baseline_that_beats_the_solvers_placement_and_fits():
    entries, joint, splits = decoder_functions("throughput")
    one_device = np.zeros(joint.num_ops, dtype=np.int64)  # as a solver cut short might leave it
    chosen, name = llm.best_split(joint, entries, {"solver": one_device, **splits}, batch=1)
    # Layers 0-2 | 3 (by parameters, and by 300:100 of memory) fit; uniform's 2 | 2 does not.
    assert name == "parameters" and np.array_equal(chosen, splits["parameters"])
    chosen, name = llm.best_split(joint, entries, {"solver": splits["memory"], "uniform": splits["uniform"]},
                                  batch=1)
    assert name == "solver"
    with pytest.raises(InvalidPlacementError, match="fits"):
        llm.best_split(joint, entries, {"uniform": splits["uniform"]}, batch=1)


def test_few_micro_batches_in_flight_give_at_most_their_tokens_per_step_latency():
    from tvm_place.evaluate import evaluate
    from tvm_place.graph import Placement

    entries, joint, splits = decoder_functions("throughput")
    decode = entries[1]
    step = evaluate(decode.problem, Placement(splits["memory"][decode.nodes], "latency", 0, 0, "given"))
    assert step.latency > step.max_load  # one micro-batch cannot keep both devices busy
    one = llm.llm_figures(joint, entries, splits["memory"], batch=4, micro_batches=1)
    assert one.decode_tokens_per_second == pytest.approx(4 / step.latency)
    many = llm.llm_figures(joint, entries, splits["memory"], batch=4, micro_batches=100)
    assert many.decode_tokens_per_second == pytest.approx(4 / step.max_load)
    assert many.decode_tokens_per_second == pytest.approx(
        llm.llm_figures(joint, entries, splits["memory"], batch=4).decode_tokens_per_second)
