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
from numpy.lib.stride_tricks import sliding_window_view
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


def test_weights_are_bound_as_constants(small_model):
    constant_elements = []
    relax.analysis.post_order_visit(
        small_model.mod["main"],
        lambda expr: isinstance(expr, tvm.ir.GenericConst)
        and constant_elements.append(math.prod(expr.value.shape)),
    )
    # Importers may add constants of their own (shapes, epsilons) but must keep every weight.
    assert sum(constant_elements) >= sum(w.size for w in small_model.params.values()) > 0


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


# --- NumPy references, in float64, reading the weights by the names the models give them ---


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """NCHW convolution, OIHW weights."""
    x = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    windows = sliding_window_view(x, weight.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def max_pool_3x3_stride_2(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)], constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-2, -1))


CONVS = ("conv1", "conv2", "conv3")  # of a basic block (two) or a bottleneck (three)


def resnet_reference(params: dict, images: np.ndarray, strided_conv: str) -> np.ndarray:
    """ResNet forward pass; `strided_conv` names the conv of a block that carries its stride."""
    params = {name: value.astype(np.float64) for name, value in params.items()}

    def conv_bn(prefix, x, stride):
        weight = params[f"{prefix}.conv.weight"]
        y = conv2d(x, weight, stride, weight.shape[2] // 2)
        scale, shift = params[f"{prefix}.bn.scale"], params[f"{prefix}.bn.shift"]
        return y * scale[:, None, None] + shift[:, None, None]

    x = max_pool_3x3_stride_2(relu(conv_bn("conv1", images.astype(np.float64), 2)))
    for stage in range(1, 5):
        block = 0
        while f"layer{stage}.{block}.conv1.conv.weight" in params:
            prefix = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            convs = [c for c in CONVS if f"{prefix}.{c}.conv.weight" in params]
            out = x
            for conv in convs:
                out = conv_bn(f"{prefix}.{conv}", out, stride if conv == strided_conv else 1)
                out = relu(out) if conv != convs[-1] else out
            has_projection = f"{prefix}.downsample.conv.weight" in params
            shortcut = conv_bn(f"{prefix}.downsample", x, stride) if has_projection else x
            x = relu(out + shortcut)
            block += 1
    features = x.mean(axis=(2, 3))
    return features @ params["fc.weight"].T + params["fc.bias"]


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def transformer_reference(
    params: dict, hidden_states: np.ndarray, *, heads: int, gpt2: bool
) -> np.ndarray:
    """BERT (post-LayerNorm, erf GELU) or GPT-2 (pre-LayerNorm, tanh GELU, causal) layers."""
    params = {name: value.astype(np.float64) for name, value in params.items()}
    eps, gelu = (1e-5, gelu_tanh) if gpt2 else (1e-12, gelu_erf)
    x = hidden_states.astype(np.float64)
    batch, seq_len, hidden = x.shape
    head_dim = hidden // heads

    def linear(name, t):
        return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def split_heads(t):
        return t.reshape(batch, seq_len, heads, head_dim).transpose(0, 2, 1, 3)

    def attention(prefix, t):
        q, k, v = (split_heads(linear(f"{prefix}.{p}", t)) for p in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
        if gpt2:
            scores = np.where(np.triu(np.ones((seq_len, seq_len), bool), k=1), -np.inf, scores)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq_len, hidden)
        return linear(f"{prefix}.output", context)

    def feed_forward(prefix, t):
        return linear(f"{prefix}.fc2", gelu(linear(f"{prefix}.fc1", t)))

    layer = 0
    while f"layers.{layer}.attention.query.weight" in params:
        prefix = f"layers.{layer}"
        for sublayer, name in ((attention, "attention"), (feed_forward, "feed_forward")):
            norm_weight = params[f"{prefix}.{name}_norm.weight"]
            norm_bias = params[f"{prefix}.{name}_norm.bias"]
            if gpt2:
                x = x + sublayer(f"{prefix}.{name}", layer_norm(x, norm_weight, norm_bias, eps))
            else:
                x = layer_norm(x + sublayer(f"{prefix}.{name}", x), norm_weight, norm_bias, eps)
        layer += 1
    return x


_TINY_HEADS = TINY_TRANSFORMER["heads"]
# reference(params, *inputs) for each model defined in Relax, at its size in SMALL_SIZES.
NUMPY_REFERENCES = {
    "resnet18": functools.partial(resnet_reference, strided_conv="conv1"),
    "resnet50": functools.partial(resnet_reference, strided_conv="conv2"),
    "bert-layer": functools.partial(transformer_reference, heads=_TINY_HEADS, gpt2=False),
    "bert-base": functools.partial(transformer_reference, heads=_TINY_HEADS, gpt2=False),
    "gpt2-block": functools.partial(transformer_reference, heads=_TINY_HEADS, gpt2=True),
}
