"""Tests of the model registry: every model builds, compiles, runs and computes what it should.

Each model is built at a small size, compiled for llvm and run in the Relax VM; its output is
compared with an independent NumPy reimplementation that uses the same weights (`Model.params`),
or, for imported models, with the source framework's own forward pass (`Model.reference`).
"""

import functools
import math
import sys

import numpy as np
import pytest
import tvm
from numpy_references import BERT, GPT2, resnet_reference, transformer_reference
from tvm import relax

from tvm_place import models
from tvm_place.errors import TvmPlaceError

# A size of every registered model that compiles and runs in a second or two.
TINY_TRANSFORMER = {"seq_len": 8, "hidden": 32, "heads": 4, "ffn": 64}
SMALL_SIZES = {
    "resnet18": {"image_size": 32},
    "resnet50": {"image_size": 32},
    "bert-layer": TINY_TRANSFORMER,
    "bert-base": TINY_TRANSFORMER,
    "gpt2-block": TINY_TRANSFORMER,
    "torch-cnn": {"image_size": 16},
    "onnx-cnn": {"image_size": 16},
}
# The optional framework each imported model needs.
REQUIRES = {"torch-cnn": "torch", "onnx-cnn": "onnx"}
# Largest absolute difference allowed between TVM's output and a reference.
ATOL = 1e-4


def run_main(vm: relax.VirtualMachine, inputs: list[np.ndarray]) -> np.ndarray:
    """Run `main` on NumPy inputs and return its output as NumPy."""
    return vm["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()


def test_small_sizes_name_registered_models():
    """The models exercised below; test_models_zoo.py covers the rest of the registry (and
    checks that every registered model is in one of the two)."""
    assert set(SMALL_SIZES) <= set(models.list())


@pytest.fixture(scope="module", params=sorted(SMALL_SIZES))
def small_model(request) -> models.Model:
    """Each registered model at its small size (imported ones skipped without their framework)."""
    name = request.param
    if name in REQUIRES:
        pytest.importorskip(REQUIRES[name])
    return models.get(name, **SMALL_SIZES[name])


@pytest.fixture(scope="module")
def small_vm(small_model) -> relax.VirtualMachine:
    """`small_model` compiled for llvm, in a VM on the CPU."""
    return relax.VirtualMachine(tvm.compile(small_model.mod, target="llvm"), tvm.cpu())


def test_main_takes_only_static_float32_data_inputs(small_model):
    main = small_model.mod["main"]
    relax.analysis.well_formed(small_model.mod)
    assert len(main.params) == len(small_model.inputs) == 1
    for param, data in zip(main.params, small_model.inputs):
        assert isinstance(param.ty, relax.TensorType)
        assert param.ty.dtype == "float32" and data.dtype == np.float32
        assert all(isinstance(dim, tvm.tirx.IntImm) for dim in param.ty.shape)
        assert tuple(int(dim) for dim in param.ty.shape) == data.shape
    assert small_model.family in ("cnn", "transformer")


def assert_weights_are_constants(model: models.Model) -> None:
    """`main` holds at least as many constant elements as the model has weights."""
    constant_elements = []
    relax.analysis.post_order_visit(
        model.mod["main"],
        lambda expr: isinstance(expr, tvm.ir.GenericConst)
        and constant_elements.append(math.prod(expr.value.shape)),
    )
    # Importers may add constants of their own (shapes, epsilons) but must keep every weight.
    assert sum(constant_elements) >= sum(w.size for w in model.params.values()) > 0


def test_weights_are_bound_as_constants(small_model):
    assert_weights_are_constants(small_model)


def test_output_matches_reference(small_model, small_vm):
    if small_model.reference is not None:
        expected = small_model.reference(*small_model.inputs)
    else:
        expected = NUMPY_REFERENCES[small_model.name](small_model.params, *small_model.inputs)
    actual = run_main(small_vm, small_model.inputs)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL)


def test_only_gpt2_attention_is_causal(small_model, small_vm):
    if small_model.family != "transformer":
        pytest.skip("attention masks concern transformers only")
    (hidden_states,) = small_model.inputs
    changed = hidden_states.copy()
    changed[:, -1] += 1.0
    before, after = run_main(small_vm, [hidden_states]), run_main(small_vm, [changed])
    earlier_tokens_unchanged = np.allclose(before[:, :-1], after[:, :-1], rtol=0, atol=ATOL)
    assert earlier_tokens_unchanged == (small_model.name == "gpt2-block")


@pytest.mark.parametrize(
    "name, input_shape, output_shape, num_weights",
    [
        # Weight counts of torchvision's resnet18 / resnet50 and of Hugging Face's
        # BERT-base encoder layers (embeddings and pooler excluded).
        ("resnet18", (1, 3, 224, 224), (1, 1000), 11_689_512),
        ("resnet50", (1, 3, 224, 224), (1, 1000), 25_557_032),
        ("bert-layer", (1, 128, 768), (1, 128, 768), 7_087_872),
        ("bert-base", (1, 128, 768), (1, 128, 768), 12 * 7_087_872),
        ("gpt2-block", (1, 128, 768), (1, 128, 768), 7_087_872),
    ],
)
def test_full_size_models_build(name, input_shape, output_shape, num_weights):
    model = models.get(name)
    assert model.inputs[0].shape == input_shape
    assert tuple(int(dim) for dim in model.mod["main"].ret_ty.shape) == output_shape
    assert sum(w.size for w in model.params.values()) == num_weights


def test_batch_and_seed():
    first = models.get("resnet18", batch=2, seed=7, image_size=32)
    again = models.get("resnet18", batch=2, seed=7, image_size=32)
    other = models.get("resnet18", batch=2, seed=8, image_size=32)
    assert first.inputs[0].shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(first.inputs[0], again.inputs[0])
    np.testing.assert_array_equal(first.params["fc.weight"], again.params["fc.weight"])
    assert not np.array_equal(first.inputs[0], other.inputs[0])
    assert not np.array_equal(first.params["fc.weight"], other.params["fc.weight"])


def test_unknown_name_lists_available_models():
    with pytest.raises(models.ModelConfigError, match="resnet18.*resnet50") as caught:
        models.get("resnet19")
    assert isinstance(caught.value, TvmPlaceError) and isinstance(caught.value, ValueError)


def test_unknown_override_lists_accepted_sizes():
    with pytest.raises(models.ModelConfigError, match="depth.*image_size"):
        models.get("resnet18", depth=34)


def test_heads_must_divide_hidden():
    with pytest.raises(models.ModelConfigError, match="not divisible"):
        models.get("bert-layer", hidden=30, heads=4)


def test_missing_framework_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(models.MissingDependencyError, match="pip install onnx"):
        models.get("onnx-cnn")


_HEADS = TINY_TRANSFORMER["heads"]
# reference(params, *inputs) for each model defined in Relax, at its size in SMALL_SIZES.
NUMPY_REFERENCES = {
    "resnet18": functools.partial(resnet_reference, strided_conv="conv1"),
    "resnet50": functools.partial(resnet_reference, strided_conv="conv2"),
    "bert-layer": functools.partial(transformer_reference, heads=_HEADS, **BERT),
    "bert-base": functools.partial(transformer_reference, heads=_HEADS, **BERT),
    "gpt2-block": functools.partial(transformer_reference, heads=_HEADS, **GPT2),
}
