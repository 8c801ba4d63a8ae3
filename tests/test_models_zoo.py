"""Tests of the model zoo beyond the first models (those are in test_models.py).

Every model is built at a tiny size, compiled for llvm (LLVM opt-level 0: the numerics are the
same and compiling is three times faster) and run in the Relax VM; the output has the right
shape and is finite, and where an independent NumPy reimplementation is short (the transformers,
with their causal masks, the mixture of experts, DLRM, VGG, ResNet-152) it is compared with it,
using the same weights (`Model.params`). The full-size models are built (not compiled) and their weights counted against
the published counts: the small ones by default, the large ones (seconds and gigabytes each)
under the `slow` marker.
"""

import collections
from functools import partial

import numpy as np
import pytest
import tvm
import tvm_ffi
from numpy_references import (
    BERT,
    GPT2,
    dlrm_reference,
    llama_reference,
    moe_reference,
    resnet_reference,
    t5_reference,
    transformer_reference,
    two_tower_reference,
    vgg_reference,
    vit_reference,
)
from test_models import SMALL_SIZES, TINY_TRANSFORMER, assert_weights_are_constants
from tvm import relax

from tvm_place import models
from tvm_place.models.randwire import random_dag
from tvm_place.passes import CollectOpGraph, prepare_pipeline

TINY_LLAMA = {"seq_len": 8, "hidden": 32, "heads": 4, "ffn": 48}
TINY_RANDWIRE = {"image_size": 32, "num_nodes": 12, "channels": 8}
TINY_NASNET = {"image_size": 32, "stem_filters": 8, "filters": 8, "repeats": 1}
# A tiny size of every model that test_models.py does not cover.
ZOO_SIZES = {
    "resnet152": {"image_size": 32, "width": 8, "blocks_per_stage": (1, 2, 2, 1)},
    "mobilenet-v2": {"image_size": 32, "width_mult": 0.25},
    "efficientnet-b0": {"image_size": 32, "width_mult": 0.25, "depth_mult": 0.25},
    "inception-v3": {"image_size": 75, "channels": 0.125},
    "inception-v3-ops": {"image_size": 75, "channels": 0.125},
    "nasnet-a-mobile": TINY_NASNET,
    "nasnet-a-large": TINY_NASNET,
    "vgg16": {"image_size": 32, "width": 8, "hidden": 32},
    "densenet121": {
        "image_size": 32,
        "growth": 4,
        "block_config": (2, 2, 2, 2),
        "init_features": 8,
    },
    "unet": {"image_size": 32, "width": 4},
    "vit-b16": {"image_size": 32, "patch": 8, "hidden": 32, "heads": 4, "ffn": 64, "num_layers": 2},
    "bert-large": {"num_layers": 2, **TINY_TRANSFORMER},
    "gpt2-small": {"num_layers": 2, **TINY_TRANSFORMER},
    "gpt2-medium": {"num_layers": 2, **TINY_TRANSFORMER},
    "llama2-7b-4layers": {"num_layers": 3, "distinct_layers": 2, **TINY_LLAMA},
    "llama2-7b": {"num_layers": 2, **TINY_LLAMA},
    "t5-base": {
        "seq_len": 8,
        "decoder_seq_len": 6,
        "num_layers": 2,
        "decoder_layers": 2,
        **TINY_LLAMA,
    },
    "moe-block": {"num_experts": 4, "top_k": 2, **TINY_TRANSFORMER},
    "dlrm": {
        "num_dense": 5,
        "table_sizes": (7, 3, 50, 1),
        "embedding_dim": 4,
        "bottom_mlp": (16,),
        "top_mlp": (8,),
    },
    "two-tower": {"query_rows": 11, "item_rows": 7, "id_dim": 4, "query_dense": 5,
                  "item_dense": 3, "widths": (16, 8)},
    "randwire-ws": TINY_RANDWIRE,
    "randwire-er": TINY_RANDWIRE,
    "randwire-ba": TINY_RANDWIRE,
}
BATCH = 2
ATOL = 1e-4
# LLVM without optimisation: compiles about three times faster than the default -O3.
FAST_LLVM = tvm.target.Target({"kind": "llvm", "opt-level": 0})


def test_small_sizes_cover_the_registry():
    """Every registered model has a tiny size here, in test_models.py or test_imported_models.py."""
    assert not set(SMALL_SIZES) & set(ZOO_SIZES)
    from test_imported_models import IMPORTED

    assert sorted({**SMALL_SIZES, **ZOO_SIZES, **IMPORTED}) == models.list()


@pytest.fixture(scope="module", params=sorted(ZOO_SIZES))
def tiny_model(request) -> models.Model:
    return models.get(request.param, batch=BATCH, **ZOO_SIZES[request.param])


def run_main(model: models.Model) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(model.mod, target=FAST_LLVM), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(x) for x in model.inputs]).numpy()


def test_tiny_model_compiles_runs_and_matches_reference(tiny_model):
    relax.analysis.well_formed(tiny_model.mod)
    main = tiny_model.mod["main"]
    assert [tuple(int(d) for d in p.ty.shape) for p in main.params] == [
        x.shape for x in tiny_model.inputs
    ]
    assert all(x.shape[0] == BATCH for x in tiny_model.inputs)
    assert tiny_model.family in ("cnn", "transformer", "recommender")
    actual = run_main(tiny_model)
    assert actual.shape == tuple(int(d) for d in main.ret_ty.shape)
    assert actual.shape[0] == BATCH and np.isfinite(actual).all()
    assert actual.std() > 1e-3  # not collapsed to a constant
    reference = NUMPY_REFERENCES.get(tiny_model.name)
    if reference is not None:
        expected = reference(tiny_model.params, *tiny_model.inputs)
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL)


# The models whose operators the placement pipeline is checked on by default: those with
# operators no earlier model has. The CNNs are slow to check (FoldConstant compiles every folded
# BatchNorm reshape) and use convolutions, pooling and elementwise operators that ResNet's
# placement tests already lower; a slow test checks them too.
LOWERING_CHECKED = ["dlrm", "llama2-7b", "moe-block", "t5-base", "vit-b16"]


def check_lowers_to_placeable_operators(model: models.Model) -> None:
    """Every operator lowers to TIR, which is what placement needs (topk, e.g., does not)."""
    collect = CollectOpGraph()
    collect(prepare_pipeline()(model.mod))
    graph = collect.result.graph
    assert len(graph.nodes) > 0 and sum(node.flops for node in graph.nodes) > 0


@pytest.mark.parametrize("name", LOWERING_CHECKED)
def test_tiny_model_lowers_to_placeable_operators(name):
    check_lowers_to_placeable_operators(models.get(name, **ZOO_SIZES[name]))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ZOO_SIZES) - set(LOWERING_CHECKED)))
def test_other_tiny_model_lowers_to_placeable_operators(name):
    check_lowers_to_placeable_operators(models.get(name, **ZOO_SIZES[name]))


def test_tiny_weights_are_bound_as_constants(tiny_model):
    assert_weights_are_constants(tiny_model)


# --- full sizes: weights against the published counts, inputs and outputs ---

# name: (input shapes, output shape, weights). Counts of torchvision's models (Inception-v3
# without its auxiliary classifier), of Hugging Face's encoder/decoder layers (embeddings, pooler
# and LM head excluded), of Llama-2-7B's decoder layers, and of DLRM's Criteo Kaggle setup.
FULL_SIZES = {
    "resnet152": ([(1, 3, 224, 224)], (1, 1000), 60_192_808),
    "mobilenet-v2": ([(1, 3, 224, 224)], (1, 1000), 3_504_872),
    "efficientnet-b0": ([(1, 3, 224, 224)], (1, 1000), 5_288_548),
    "inception-v3": ([(1, 3, 299, 299)], (1, 1000), 23_834_568),
    "inception-v3-ops": ([(1, 3, 299, 299)], (1, 1000), 23_834_568),
    # The PyTorch port's counts (pretrainedmodels' nasnetamobile and nasnetalarge, no aux head).
    "nasnet-a-mobile": ([(1, 3, 224, 224)], (1, 1000), 5_289_978),
    "nasnet-a-large": ([(1, 3, 331, 331)], (1, 1000), 88_753_150),
    "vgg16": ([(1, 3, 224, 224)], (1, 1000), 138_357_544),
    "densenet121": ([(1, 3, 224, 224)], (1, 1000), 7_978_856),
    "unet": ([(1, 3, 512, 512)], (1, 2, 512, 512), 31_037_698),
    "vit-b16": ([(1, 3, 224, 224)], (1, 1000), 86_567_656),
    "bert-large": ([(1, 128, 1024)], (1, 128, 1024), 24 * 12_596_224),
    "gpt2-small": ([(1, 128, 768)], (1, 128, 768), 12 * 7_087_872),
    "gpt2-medium": ([(1, 128, 1024)], (1, 128, 1024), 24 * 12_596_224),
    "llama2-7b-4layers": ([(1, 128, 4096)], (1, 128, 4096), 4 * 202_383_360),
    "llama2-7b": ([(1, 128, 4096)], (1, 128, 4096), 32 * 202_383_360),
    "t5-base": ([(1, 128, 768), (1, 128, 768)], (1, 128, 768), 198_229_248),
    "moe-block": ([(1, 128, 768)], (1, 128, 768), 40_151_040),
    "dlrm": ([(1, 13), (1, 26)], (1, 1), 540_677_217),
    # Two 1M x 64 tables and two 320-1024-512-256 MLPs.
    "two-tower": ([(1, 1), (1, 256), (1, 1), (1, 256)], (1, 1), 2 * (64_000_000 + 320 * 1024 + 1024
                                                               + 1024 * 512 + 512 + 512 * 256 + 256)),
    "randwire-ws": ([(1, 3, 224, 224)], (1, 1000), None),
    "randwire-er": ([(1, 3, 224, 224)], (1, 1000), None),
    "randwire-ba": ([(1, 3, 224, 224)], (1, 1000), None),
}
# Operators of the full-size models (Relax calls in `main` before lowering), where they say
# something about the architecture.
FULL_SIZE_OPERATORS = {
    "resnet152": {"relax.nn.conv2d": 155},
    "mobilenet-v2": {"relax.nn.conv2d": 52},
    "efficientnet-b0": {"relax.nn.conv2d": 81},
    "inception-v3": {"relax.nn.conv2d": 94, "relax.concat": 11},
    # The stem convolution; 12 normal and 2 stack reduction cells of 2 adapters and 5 branches of
    # 2 separable convolutions (22 convolutions; a factorised reduction adds 1 in each stack's
    # first cell); the stem cells: 1 adapter + 20, and 1 adapter + a factorised reduction + 20.
    # Concatenations: 16 cells and 4 factorised reductions.
    "nasnet-a-mobile": {"relax.nn.conv2d": 1 + 14 * 22 + 3 + 21 + 23, "relax.concat": 16 + 4},
    "vgg16": {"relax.nn.conv2d": 13, "relax.nn.max_pool2d": 5, "relax.matmul": 3},
    "densenet121": {"relax.nn.conv2d": 120, "relax.concat": 58},
    "unet": {"relax.nn.conv2d": 19, "relax.nn.conv2d_transpose": 4, "relax.concat": 4},
    "vit-b16": {"relax.matmul": 12 * 8 + 1},
    "llama2-7b-4layers": {"relax.matmul": 4 * 9, "relax.nn.rms_norm": 8},
    "llama2-7b": {"relax.matmul": 32 * 9, "relax.nn.rms_norm": 64},
    "t5-base": {"relax.matmul": 12 * 8 + 12 * 14, "relax.take": 2},
    "moe-block": {"relax.matmul": 6 + 1 + 8 * 2, "relax.nn.softmax": 2},
    "dlrm": {"relax.take": 27, "relax.matmul": 4 + 3 + 1},
}
# Built by default: a second or less each, under 150 MB of weights (one RandWire: the three
# differ by their graphs only, which tiny models test).
SMALL_FULL_SIZES = [
    "mobilenet-v2",
    "efficientnet-b0",
    "inception-v3",
    "nasnet-a-mobile",
    "densenet121",
    "unet",
    "moe-block",
    "randwire-ws",
]


def operator_counts(mod: tvm.IRModule) -> collections.Counter:
    counts = collections.Counter()
    relax.analysis.post_order_visit(
        mod["main"],
        lambda expr: isinstance(expr, relax.Call)
        and isinstance(expr.op, tvm.ir.Op)
        and counts.update([expr.op.name]),
    )
    return counts


def check_full_size(name: str) -> None:
    input_shapes, output_shape, num_weights = FULL_SIZES[name]
    model = models.get(name)
    assert [x.shape for x in model.inputs] == input_shapes
    assert tuple(int(d) for d in model.mod["main"].ret_ty.shape) == output_shape
    if num_weights is not None:
        assert sum(w.size for w in model.params.values()) == num_weights
    counts = operator_counts(model.mod)
    for op, expected in FULL_SIZE_OPERATORS.get(name, {}).items():
        assert counts[op] == expected, op


@pytest.mark.parametrize("name", SMALL_FULL_SIZES)
def test_full_size_model_builds(name):
    check_full_size(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FULL_SIZES) - set(SMALL_FULL_SIZES)))
def test_large_full_size_model_builds(name):
    check_full_size(name)


def test_full_sizes_cover_the_zoo():
    assert sorted(FULL_SIZES) == sorted(ZOO_SIZES)


# --- properties of particular families ---


def test_randwire_graphs_are_seeded_dags():
    for generator in ("ws", "er", "ba"):
        dag = random_dag(generator, 16, seed=3)
        assert dag == random_dag(generator, 16, seed=3)
        assert dag != random_dag(generator, 16, seed=4)
        assert all(u < v for v, predecessors in enumerate(dag) for u in predecessors)
    edges = {g: sum(map(len, random_dag(g, 32, seed=0))) for g in ("ws", "ba")}
    assert edges == {"ws": 32 * 4 // 2, "ba": (32 - 5) * 5}  # rewiring keeps WS's edge count
    # The weights depend on `seed` only, so the modules differ by their graphs alone.
    first, again, other = (
        models.get("randwire-er", graph_seed=graph_seed, **TINY_RANDWIRE).mod
        for graph_seed in (0, 0, 1)
    )
    assert tvm_ffi.structural_equal(first, again)
    assert not tvm_ffi.structural_equal(first, other)


def test_operator_granularity_keeps_every_relax_operator_apart():
    """inception-v3-ops computes what inception-v3 does with the same weights, and placement sees
    one operator per Relax call: several times the fused model's operators."""
    sizes = ZOO_SIZES["inception-v3-ops"]
    fused, unfused = models.get("inception-v3", **sizes), models.get("inception-v3-ops", **sizes)
    np.testing.assert_allclose(run_main(unfused), run_main(fused), rtol=0, atol=ATOL)

    def operators(model):
        collect = CollectOpGraph()
        collect(prepare_pipeline()(model.mod))
        return len(collect.result.graph.nodes)

    calls = operator_counts(fused.mod)
    assert operators(unfused) > 2 * operators(fused)
    # Every convolution is its own operator (and so is each BatchNorm multiply and add after it).
    assert operators(unfused) >= calls["relax.nn.conv2d"] * 3


def test_llama_layers_share_weight_memory_but_not_constants():
    model = models.get("llama2-7b", num_layers=4, distinct_layers=2, **TINY_LLAMA)
    weight = "attention.query.kernel"
    params = model.params
    assert np.shares_memory(params[f"layers.0.{weight}"], params[f"layers.2.{weight}"])
    assert not np.shares_memory(params[f"layers.0.{weight}"], params[f"layers.1.{weight}"])
    # Each layer still has its own constants, so placement counts every layer's weight bytes.
    assert_weights_are_constants(model)


def test_dlrm_ids_stay_within_their_tables():
    sizes = ZOO_SIZES["dlrm"]["table_sizes"]
    dense, sparse = models.get("dlrm", batch=1000, **ZOO_SIZES["dlrm"]).inputs
    assert dense.dtype == np.float32 and sparse.dtype == np.int64
    assert sparse.shape == (1000, len(sizes))
    assert (sparse >= 0).all() and (sparse < np.array(sizes)).all()
    assert (sparse.max(axis=0) == np.array(sizes) - 1).all()  # every row reachable


_HEADS = TINY_TRANSFORMER["heads"]
# reference(params, *inputs) for the models whose NumPy reimplementation is short, at their
# sizes in ZOO_SIZES.
NUMPY_REFERENCES = {
    "resnet152": partial(resnet_reference, strided_conv="conv2"),
    "vgg16": vgg_reference,
    "vit-b16": partial(vit_reference, patch=ZOO_SIZES["vit-b16"]["patch"], heads=_HEADS),
    "bert-large": partial(transformer_reference, heads=_HEADS, **BERT),
    "gpt2-small": partial(transformer_reference, heads=_HEADS, **GPT2),
    "gpt2-medium": partial(transformer_reference, heads=_HEADS, **GPT2),
    "llama2-7b-4layers": partial(llama_reference, heads=TINY_LLAMA["heads"]),
    "llama2-7b": partial(llama_reference, heads=TINY_LLAMA["heads"]),
    "t5-base": partial(t5_reference, heads=TINY_LLAMA["heads"]),
    "moe-block": partial(moe_reference, heads=_HEADS, top_k=ZOO_SIZES["moe-block"]["top_k"]),
    "dlrm": dlrm_reference,
    "two-tower": two_tower_reference,
}


# --- training graphs: what TVM 0.27's reverse-mode AD (relax.transform.Gradient) handles ---

# Models whose `main` uses an operator that TVM 0.27 registers no gradient for.
NO_GRADIENT = {
    "bert-base": "relax.nn.gelu",
    "bert-large": "relax.nn.gelu",
    "bert-layer": "relax.nn.gelu",
    "gpt2-block": "relax.nn.gelu_tanh",
    "gpt2-medium": "relax.nn.gelu_tanh",
    "gpt2-small": "relax.nn.gelu_tanh",
    "llama2-7b": "relax.nn.rms_norm",
    "llama2-7b-4layers": "relax.nn.rms_norm",
    "moe-block": "relax.nn.gelu",
    "t5-base": "relax.nn.rms_norm",
    "unet": "relax.nn.conv2d_transpose",
    "vgg16": "relax.nn.adaptive_avg_pool2d",  # at the tiny size only: none at 224 x 224
    "vit-b16": "relax.nn.gelu",
}


@relax.expr_functor.mutator
class WeightsToParameters(relax.PyExprMutator):
    """Turn the constants that hold a model's weights into parameters (in order of use)."""

    def __init__(self, model: models.Model):
        super().__init__(model.mod)
        self.params = list(model.params.values())
        self.weights: list[relax.Var] = []
        self.values: list[np.ndarray] = []

    def is_weight(self, value: np.ndarray) -> bool:
        # The weights' own memory (tvm.relax.frontend.nn models), or a copy of their values
        # (the torch and ONNX importers copy them); not a mask, a rotary table, ids.
        return any(
            value.ctypes.data == w.ctypes.data
            or (value.shape == w.shape and np.array_equal(value, w))
            for w in self.params
        )

    def visit_generic_const_(self, const):
        value = np.from_dlpack(const.value)
        if not self.is_weight(value):
            return const
        ty = relax.TensorType(value.shape, str(value.dtype))
        self.weights.append(relax.Var(f"w{len(self.weights)}", ty))
        self.values.append(value)
        return self.weights[-1]


def training_module(model: models.Model) -> tuple[tvm.IRModule, list[np.ndarray]]:
    """`main(inputs..., weights...)` returning the scalar loss sum(output ** 2), differentiated
    with respect to the weights by Gradient into `main_adjoint`; and the weights' values."""
    main = model.mod["main"]
    mutator = WeightsToParameters(model)
    body = mutator.visit_expr(main.body)
    builder = relax.BlockBuilder()
    with builder.function("main", [*main.params, *mutator.weights]):
        with builder.dataflow():
            output = builder.emit(body)
            loss = builder.emit_output(relax.op.sum(relax.op.multiply(output, output)))
        builder.emit_func_output(loss)
    mod = relax.transform.Normalize()(builder.get())
    # Splits layer_norm and batch_norm into operators that have gradients.
    mod = relax.transform.DecomposeOpsForTraining()(mod)
    return relax.transform.Gradient("main", require_grads=mutator.weights)(mod), mutator.values


def check_gradient(name: str, sizes: dict) -> None:
    model = models.get(name, **sizes)
    mod, weights = training_module(model)
    adjoint = mod["main_adjoint"]
    assert len(adjoint.ret_ty.fields[1].fields) == len(weights) > 0
    # The backward operators lower to TIR, so placement can place the training graph.
    collect = CollectOpGraph()
    collect(prepare_pipeline()(tvm.IRModule({"main": adjoint.with_attr("global_symbol", "main")})))
    assert len(collect.result.graph.nodes) > 0


def test_gradient_of_dlrm_matches_finite_differences():
    model = models.get("dlrm", **ZOO_SIZES["dlrm"])
    mod, weights = training_module(model)
    vm = relax.VirtualMachine(tvm.compile(mod, target=FAST_LLVM), tvm.cpu())
    loss, grads = vm["main_adjoint"](*[tvm.runtime.tensor(x) for x in [*model.inputs, *weights]])

    def loss_with(index, position, delta):
        changed = [w.copy() for w in weights]
        changed[index][position] += delta
        args = [tvm.runtime.tensor(x) for x in [*model.inputs, *changed]]
        return float(vm["main"](*args).numpy())

    assert float(loss.numpy()) == pytest.approx(loss_with(0, (0, 0), 0.0))
    for index in (0, 3, 5, len(weights) - 2):  # weights from the bottom MLP to the top MLP
        position = tuple(s // 2 for s in weights[index].shape)
        numeric = (loss_with(index, position, 1e-2) - loss_with(index, position, -1e-2)) / 2e-2
        assert grads[index].numpy()[position] == pytest.approx(numeric, rel=1e-3, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                name in NO_GRADIENT, reason=f"no gradient for {NO_GRADIENT.get(name)}", strict=True
            ),
        )
        for name in sorted({**SMALL_SIZES, **ZOO_SIZES})
    ],
)
def test_gradient_pass_differentiates(name):
    check_gradient(name, {**SMALL_SIZES, **ZOO_SIZES}[name])
