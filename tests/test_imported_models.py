"""The real architectures imported through the torch and ONNX routes (models/imported_zoo.py).

Each is built at a small size, compiled for llvm and run in the Relax VM, and its output is
compared with its source framework's own forward pass (`Model.reference`: torch eager, or the
ONNX reference evaluator). torch and onnx are optional extras: without them these tests skip.
"""

import sys

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_place import models
from tvm_place.models.imported_zoo import TORCH_COUNTERPARTS, torch_eager_module
from tvm_place.passes import CollectOpGraph, prepare_pipeline

TINY_TRANSFORMER = {"seq_len": 8, "hidden": 32, "heads": 4, "ffn": 64}
TINY_RESNET = {"image_size": 32, "width": 8, "num_classes": 10}
# name: (the framework it needs, its small size)
IMPORTED = {
    "torch-resnet18": ("torch", TINY_RESNET),
    "torch-resnet50": ("torch", TINY_RESNET),
    "torch-bert-layer": ("torch", TINY_TRANSFORMER),
    "torch-bert-base": ("torch", {**TINY_TRANSFORMER, "num_layers": 2}),
    "torch-gpt2-block": ("torch", TINY_TRANSFORMER),
    "onnx-bert-layer": ("onnx", TINY_TRANSFORMER),
}
BATCH = 2
ATOL = 1e-4
# LLVM without optimisation: the same numerics, compiles about three times faster.
FAST_LLVM = tvm.target.Target({"kind": "llvm", "opt-level": 0})


def need(framework: str) -> None:
    pytest.importorskip(
        framework,
        reason=f"{framework} is an optional extra (pip install 'tvm-place[{framework}]'); "
        "the imported models need it",
    )


def test_imported_models_are_registered():
    assert set(IMPORTED) <= set(models.list())
    for name in IMPORTED:
        family = models.describe(name)["family"]
        assert family == ("cnn" if "resnet" in name else "transformer")


@pytest.fixture(scope="module", params=sorted(IMPORTED))
def imported(request) -> models.Model:
    framework, sizes = IMPORTED[request.param]
    need(framework)
    return models.get(request.param, batch=BATCH, **sizes)


def test_imported_model_matches_its_framework(imported):
    relax.analysis.well_formed(imported.mod)
    main = imported.mod["main"]
    assert len(main.params) == len(imported.inputs) == 1
    assert main.params[0].name == ("images" if "resnet" in imported.name else "hidden_states")
    assert [tuple(int(d) for d in p.ty.shape) for p in main.params] == [
        x.shape for x in imported.inputs
    ]
    assert imported.reference is not None
    vm = relax.VirtualMachine(tvm.compile(imported.mod, target=FAST_LLVM), tvm.cpu())
    actual = vm["main"](*[tvm.runtime.tensor(x) for x in imported.inputs]).numpy()
    expected = imported.reference(*imported.inputs)
    assert actual.shape == expected.shape
    assert actual.shape[0] == BATCH and np.isfinite(actual).all() and actual.std() > 1e-3
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL)


def test_imported_weights_are_bound_as_constants(imported):
    constant_elements = []
    relax.analysis.post_order_visit(
        imported.mod["main"],
        lambda expr: isinstance(expr, tvm.ir.GenericConst)
        and constant_elements.append(int(np.prod(expr.value.shape))),
    )
    assert sum(constant_elements) >= sum(w.size for w in imported.params.values()) > 0


@pytest.mark.parametrize("name", ["torch-gpt2-block", "onnx-bert-layer"])
def test_imported_transformer_lowers_to_placeable_operators(name):
    framework, sizes = IMPORTED[name]
    need(framework)
    collect = CollectOpGraph()
    collect(prepare_pipeline()(models.get(name, **sizes).mod))
    graph = collect.result.graph
    assert len(graph.nodes) > 0 and sum(node.flops for node in graph.nodes) > 0
    assert sum(node.param_bytes for node in graph.nodes) > 0


def test_gpt2_block_is_causal():
    """Changing the last token changes no earlier position's output, in torch and in TVM."""
    framework, sizes = IMPORTED["torch-gpt2-block"]
    need(framework)
    model = models.get("torch-gpt2-block", batch=BATCH, **sizes)
    (hidden_states,) = model.inputs
    changed = hidden_states.copy()
    changed[:, -1] += 1.0
    before, after = model.reference(hidden_states), model.reference(changed)
    np.testing.assert_array_equal(before[:, :-1], after[:, :-1])
    assert not np.allclose(before[:, -1], after[:, -1])


def trainable_weights(params: dict) -> int:
    """Weights as torchvision and Hugging Face count them: BatchNorm statistics are not."""
    return sum(
        w.size for name, w in params.items() if not name.endswith(("running_mean", "running_var"))
    )


# Published weight counts: torchvision's resnet18 / resnet50, one Hugging Face BertLayer /
# GPT2Block, BERT-base's encoder (12 BertLayers, without embeddings and pooler).
FULL_WEIGHTS = {
    "torch-resnet18": 11_689_512,
    "torch-resnet50": 25_557_032,
    "torch-bert-layer": 7_087_872,
    "torch-bert-base": 12 * 7_087_872,
    "torch-gpt2-block": 7_087_872,
    "onnx-bert-layer": 7_087_872,
}


@pytest.mark.slow  # about 40 s for the six (torch.export and the import at full size)
@pytest.mark.parametrize("name", sorted(FULL_WEIGHTS))
def test_full_size_weights_match_the_published_counts(name):
    need(IMPORTED[name][0])
    model = models.get(name)
    assert trainable_weights(model.params) == FULL_WEIGHTS[name]
    expected_input = (1, 3, 224, 224) if "resnet" in name else (1, 128, 768)
    assert model.inputs[0].shape == expected_input
    if name in TORCH_COUNTERPARTS:  # the registry's own model has as many weights
        counterpart = models.get(TORCH_COUNTERPARTS[name])
        assert sum(w.size for w in counterpart.params.values()) == FULL_WEIGHTS[name]
        module, inputs = torch_eager_module(name, params=counterpart.params)
        assert [tuple(x.shape) for x in inputs] == [expected_input]
        state = module.state_dict()
        assert sum(state[k].numel() for k in model.params) == sum(
            w.size for w in model.params.values()
        )


@pytest.mark.parametrize("name", sorted(TORCH_COUNTERPARTS))
def test_torch_eager_module_computes_what_the_registry_model_computes(name):
    """The registry's nn model (compiled for llvm) and the torch module, given that model's
    weights (renamed to torchvision's / Hugging Face's names), agree on the same inputs."""
    need("torch")
    import torch

    sizes = IMPORTED[name][1]
    counterpart = models.get(TORCH_COUNTERPARTS[name], batch=BATCH, **sizes)
    module, inputs = torch_eager_module(name, batch=BATCH, params=counterpart.params, **sizes)
    assert not module.training
    for tensor, array in zip(inputs, counterpart.inputs, strict=True):
        np.testing.assert_array_equal(tensor.numpy(), array)
    with torch.inference_mode():
        expected = module(*inputs).numpy()
    vm = relax.VirtualMachine(tvm.compile(counterpart.mod, target=FAST_LLVM), tvm.cpu())
    actual = vm["main"](*[tvm.runtime.tensor(x) for x in counterpart.inputs]).numpy()
    assert actual.shape == expected.shape and actual.std() > 1e-3
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL)


def test_torch_eager_module_is_the_registered_forward_pass(imported):
    """Without `params`: the weights and inputs of `models.get` with the same seed."""
    if imported.name not in TORCH_COUNTERPARTS:
        pytest.skip("no torch module")
    import torch

    module, inputs = torch_eager_module(imported.name, batch=BATCH, **IMPORTED[imported.name][1])
    assert len(inputs) == len(imported.inputs)
    for tensor, array in zip(inputs, imported.inputs, strict=True):
        np.testing.assert_array_equal(tensor.numpy(), array)
    with torch.inference_mode():
        actual = module(*inputs).numpy()
    np.testing.assert_array_equal(actual, imported.reference(*imported.inputs))


def test_torch_eager_module_refuses_what_does_not_fit():
    need("torch")
    with pytest.raises(models.ModelConfigError, match="torch-resnet50"):
        torch_eager_module("resnet50")
    with pytest.raises(models.ModelConfigError, match="no size depth"):
        torch_eager_module("torch-resnet50", depth=3)
    with pytest.raises(models.ModelConfigError, match="not divisible"):
        torch_eager_module("torch-bert-base", hidden=30, heads=4)
    params = models.get("bert-base", num_layers=1, **TINY_TRANSFORMER).params
    with pytest.raises(models.ModelConfigError, match="missing"):  # one layer for two
        torch_eager_module("torch-bert-base", params=params, num_layers=2, **TINY_TRANSFORMER)
    with pytest.raises(models.ModelConfigError, match="no weight of the registry's ResNets"):
        torch_eager_module("torch-resnet18", params=params, **TINY_RESNET)


@pytest.mark.parametrize(
    "name, module, requirement",
    [
        ("torch-resnet18", "torch", "pip install torch==2.13.0"),
        ("torch-bert-base", "torch", "pip install torch==2.13.0"),
        ("torch-gpt2-block", "torch", "pip install torch==2.13.0"),
        ("onnx-bert-layer", "onnx", "pip install onnx==1.23.2"),
    ],
)
def test_missing_framework_names_the_package(monkeypatch, name, module, requirement):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(models.MissingDependencyError, match=requirement):
        models.get(name, **IMPORTED[name][1])


def test_bad_sizes_are_refused_before_importing():
    with pytest.raises(models.ModelConfigError, match="not divisible"):
        models.get("onnx-bert-layer", hidden=30, heads=4)
