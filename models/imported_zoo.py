"""Real architectures through the torch and ONNX import routes.

The same architectures as the `tvm.relax.frontend.nn` models (ResNet-18 and -50, a BERT encoder
layer, the BERT-base encoder, a GPT-2 block), written once more in plain torch and imported with
`torch.export` + `from_exported_program`, or built as an ONNX graph with `onnx.helper` from NumPy
weights and imported with `from_onnx`. The importers produce other graphs than `nn` does (their
own operator names, BatchNorm and LayerNorm lowering, constant layout), which is what these
exercise.

No torchvision or Hugging Face code: the architectures are written out here, with the parameter
names of torchvision's `resnet18` / `resnet50` and of Hugging Face's `BertLayer` / `BertEncoder`
/ `GPT2Block`, so the weight counts can be checked against the published ones. torch and onnx
stay optional (imported only when their model is built); ONNX graphs are built with
`onnx.helper` rather than exported from torch, because torch 2.13's default exporter (dynamo)
needs onnxscript, which is not installed.
Every model carries the source framework's own forward pass as `reference`.

For eager-torch baselines, :func:`torch_eager_module` returns a torch model's module and inputs;
given the `params` of its registry counterpart (`TORCH_COUNTERPARTS`, e.g. `resnet50` for
`torch-resnet50`), renamed to torchvision's / Hugging Face's names, it computes what that model
computes.
"""

import inspect
import math
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .imported import _import_optional, onnx_network
from .registry import ModelConfigError, Network, register
from .resnet import resnet_stages
from .transformer import check_heads
from .weights import random_weight

if TYPE_CHECKING:
    import torch


def _weight_names(net) -> list[str]:
    """The floating-point entries of `net`'s state dict that are weights, in order: BatchNorm's
    integer batch counter and the buffers a module lists in `not_weights` (masks) are not."""
    skip = getattr(net, "not_weights", ())
    return [
        name
        for name, tensor in net.state_dict().items()
        if tensor.is_floating_point() and name not in skip
    ]


def _draw_weights(torch, net, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights into `net`, by name and shape, as every model here draws them."""
    state = net.state_dict()
    params = {}
    with torch.no_grad():
        for name in _weight_names(net):
            params[name] = random_weight(name, tuple(state[name].shape), rng)
            state[name].copy_(torch.from_numpy(params[name]))
    return params


def _torch_network(
    torch, net, inputs: dict[str, tuple[int, ...]], rng: np.random.Generator
) -> Network:
    """Random weights into `net` (:func:`_draw_weights`), then `torch.export` and
    `from_exported_program`; `main` takes `inputs` (float32) in order."""
    from tvm.relax.frontend.torch import from_exported_program  # needs torch itself

    net = net.eval()
    params = _draw_weights(torch, net, rng)
    examples = tuple(torch.zeros(shape) for shape in inputs.values())
    exported = torch.export.export(net, examples)
    mod = from_exported_program(exported, unwrap_unit_return_tuple=True)

    def reference(*arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(*[torch.from_numpy(a) for a in arrays]).numpy()

    return Network(mod=mod, params=params, reference=reference)


def _build_torch(name: str, batch: int, rng: np.random.Generator, **sizes) -> Network:
    torch = _import_optional("torch", "torch==2.13.0", name)
    net, inputs = _TORCH_MODELS[name][1](torch, batch, **sizes)
    return _torch_network(torch, net, inputs, rng)


# --- ResNets in torch ---


def _torch_resnet(torch, bottleneck: bool, blocks_per_stage: list[int], width: int,
                  num_classes: int):
    """torchvision's `ResNet` with `BasicBlock` (ResNet-18) or `Bottleneck` (ResNet-50, v1.5:
    the stride on the 3x3 convolution), same parameter names."""
    nn = torch.nn

    def projection(in_channels: int, out_channels: int, stride: int):
        if stride == 1 and in_channels == out_channels:
            return None
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    class BasicBlock(nn.Module):
        """Two 3x3 conv-BN pairs, ReLU between and after the residual addition (torchvision)."""

        expansion = 1

        def __init__(self, in_channels: int, channels: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.downsample = projection(in_channels, channels, stride)

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        """1x1 reduce, 3x3 (carrying the stride), 1x1 expand (x4), each with BN, ReLU after
        the first two and after the residual addition (torchvision)."""

        expansion = 4

        def __init__(self, in_channels: int, channels: int, stride: int):
            super().__init__()
            out_channels = channels * self.expansion
            self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU()
            self.downsample = projection(in_channels, out_channels, stride)

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    block = Bottleneck if bottleneck else BasicBlock

    class ResNet(nn.Module):
        """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), four stages of widths w, 2w, 4w, 8w
        (times the block's expansion), global average pool, classifier."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, channels = resnet_stages(blocks_per_stage, width, block.expansion)
            for stage, blocks in enumerate(stages):
                setattr(self, f"layer{stage + 1}", nn.Sequential(*(block(*b) for b in blocks)))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(channels, num_classes)

        def forward(self, images):
            x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def _make_torch_resnet(torch, batch: int, image_size: int, width: int, num_classes: int, *,
                       bottleneck: bool, blocks_per_stage: list[int]):
    net = _torch_resnet(torch, bottleneck, blocks_per_stage, width, num_classes)
    return net, {"images": (batch, 3, image_size, image_size)}


def _resnet_params_to_torch(params: dict[str, np.ndarray], eps: float = 1e-5) -> dict:
    """The weights of the registry's ResNets (models/resnet.py: `ConvBN` = ``*.conv`` and an
    inference BatchNorm ``*.bn.scale`` / ``*.bn.shift``) under torchvision's names.

    A BatchNorm gets ``weight = scale``, ``bias = shift``, ``running_mean = 0`` and
    ``running_var = 1 - eps``, so that torch's ``(x - mean) / sqrt(var + eps) * weight + bias``
    is ``x * scale + shift``.
    """
    out = {}
    for name, value in params.items():
        if name.startswith("fc."):
            out[name] = value
            continue
        owner, kind, leaf = _split_conv_bn(name)
        if owner.endswith("downsample"):  # torchvision: Sequential(conv, BatchNorm)
            conv, norm = f"{owner}.0", f"{owner}.1"
        else:  # conv1 (the stem) or layerS.i.convK -> conv1 / bn1, layerS.i.convK / bnK
            base, _, conv_name = owner.rpartition(".")
            conv = owner
            norm = f"{base}.bn{conv_name[4:]}" if base else f"bn{conv_name[4:]}"
        if (kind, leaf) == ("conv", "weight"):
            out[f"{conv}.weight"] = value
        elif (kind, leaf) == ("bn", "scale"):
            out[f"{norm}.weight"] = value
            out[f"{norm}.running_mean"] = np.zeros_like(value)
            out[f"{norm}.running_var"] = np.full_like(value, 1.0 - eps)
        elif (kind, leaf) == ("bn", "shift"):
            out[f"{norm}.bias"] = value
        else:
            raise ModelConfigError(f"{name!r} is no weight of the registry's ResNets")
    return out


def _split_conv_bn(name: str) -> tuple[str, str, str]:
    """``"layer1.0.conv2.bn.scale"`` -> ``("layer1.0.conv2", "bn", "scale")``."""
    parts = name.split(".")
    if len(parts) < 3 or not (parts[-3].startswith("conv") or parts[-3] == "downsample"):
        raise ModelConfigError(f"{name!r} is no weight of the registry's ResNets")
    return ".".join(parts[:-2]), parts[-2], parts[-1]


def _register_torch_resnet(name: str, title: str, weights: int, description: str):
    """Register a torch ResNet (`_TORCH_MODELS[name]`), sized as its registry counterpart."""

    @register(name, "cnn", description)
    def build(batch: int, rng: np.random.Generator, image_size: int = 224, width: int = 64,
              num_classes: int = 1000) -> Network:
        return _build_torch(name, batch, rng, image_size=image_size, width=width,
                            num_classes=num_classes)

    build.__doc__ = f"""{title} on `image_size` x `image_size` RGB images, through the torch
    importer; the architecture of the registry's `{name.removeprefix("torch-")}`, with the same
    sizes.

    ==========  ========================  ===========
    weights     input                     output
    ==========  ========================  ===========
    {weights:<10,}  images (B, 3, 224, 224)   (B, 1000)
    ==========  ========================  ===========

    Weights as torchvision counts them (BatchNorm running statistics excluded); BatchNorm runs
    in inference mode with random statistics.
    """
    return build


# --- BERT encoder layers and GPT-2 block in torch ---

# Per layer: four hidden x hidden projections, the two FFN matrices, biases, two LayerNorms
# (4 h^2 + 2 h f + f + 9 h weights).
_LAYER_TABLE = """

    ==========  ===============================================
    weights     input = output
    ==========  ===============================================
    7,087,872   hidden_states (B, 128, 768) float32
    ==========  ===============================================
"""


def _torch_transformer_block(torch, hidden: int, heads: int, ffn: int, seq_len: int, gpt2: bool):
    nn = torch.nn
    head_dim = hidden // heads

    def split_heads(t, batch):
        return t.reshape(batch, seq_len, heads, head_dim).transpose(1, 2)

    def attend(query, key, value, batch, mask=None):
        scores = torch.matmul(split_heads(query, batch), split_heads(key, batch).transpose(-1, -2))
        scores = scores / math.sqrt(head_dim)
        if mask is not None:
            scores = scores + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), split_heads(value, batch))
        return context.transpose(1, 2).reshape(batch, seq_len, hidden)

    class BertSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)

    class BertSelfOutput(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.dense = nn.Linear(width, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    class BertAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = BertSelfAttention()
            self.output = BertSelfOutput(hidden)

    class BertIntermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, ffn)

    class BertLayer(nn.Module):
        """Hugging Face's BertLayer: post-LayerNorm, exact (erf) GELU, no mask."""

        def __init__(self):
            super().__init__()
            self.attention = BertAttention()
            self.intermediate = BertIntermediate()
            self.output = BertSelfOutput(ffn)

        def forward(self, hidden_states):
            batch = hidden_states.shape[0]
            qkv = self.attention.self
            context = attend(qkv.query(hidden_states), qkv.key(hidden_states),
                             qkv.value(hidden_states), batch)
            out = self.attention.output
            attended = out.LayerNorm(out.dense(context) + hidden_states)
            inner = nn.functional.gelu(self.intermediate.dense(attended))
            return self.output.LayerNorm(self.output.dense(inner) + attended)

    class GPT2Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(hidden, 3 * hidden)  # query, key, value in one matrix
            self.c_proj = nn.Linear(hidden, hidden)

    class GPT2MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(hidden, ffn)
            self.c_proj = nn.Linear(ffn, hidden)

    class GPT2Block(nn.Module):
        """Hugging Face's GPT2Block (nn.Linear instead of Conv1D: the same map, transposed):
        pre-LayerNorm, causal attention, tanh GELU."""

        not_weights = ("causal_mask",)

        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
            self.attn = GPT2Attention()
            self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
            self.mlp = GPT2MLP()
            future = torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1)
            # A large negative number rather than -inf: no -inf - -inf = NaN in softmax.
            mask = torch.zeros(seq_len, seq_len).masked_fill(future, -1e9)
            self.register_buffer("causal_mask", mask)

        def forward(self, hidden_states):
            batch = hidden_states.shape[0]
            query, key, value = self.attn.c_attn(self.ln_1(hidden_states)).split(hidden, dim=2)
            context = attend(query, key, value, batch, self.causal_mask)
            x = hidden_states + self.attn.c_proj(context)
            inner = nn.functional.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh")
            return x + self.mlp.c_proj(inner)

    return GPT2Block() if gpt2 else BertLayer()


def _torch_bert_encoder(torch, hidden: int, heads: int, ffn: int, seq_len: int, num_layers: int):
    """Hugging Face's BertEncoder (``layer.{i}.attention.self.query.weight``, ...): hidden
    states in, hidden states out, like the registry's `bert-base` (no embeddings, no pooler)."""
    nn = torch.nn

    class BertEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(
                _torch_transformer_block(torch, hidden, heads, ffn, seq_len, gpt2=False)
                for _ in range(num_layers)
            )

        def forward(self, hidden_states):
            for layer in self.layer:
                hidden_states = layer(hidden_states)
            return hidden_states

    return BertEncoder()


def _make_torch_block(torch, batch: int, seq_len: int, hidden: int, heads: int, ffn: int, *,
                      gpt2: bool):
    check_heads(hidden, heads)
    net = _torch_transformer_block(torch, hidden, heads, ffn, seq_len, gpt2=gpt2)
    return net, {"hidden_states": (batch, seq_len, hidden)}


def _make_torch_bert_base(torch, batch: int, seq_len: int, hidden: int, heads: int, ffn: int,
                          num_layers: int):
    check_heads(hidden, heads)
    net = _torch_bert_encoder(torch, hidden, heads, ffn, seq_len, num_layers)
    return net, {"hidden_states": (batch, seq_len, hidden)}


# The registry's transformer blocks (models/transformer.py) under Hugging Face's BertLayer names.
_BERT_NAMES = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.output": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "feed_forward.fc1": "intermediate.dense",
    "feed_forward.fc2": "output.dense",
    "feed_forward_norm": "output.LayerNorm",
}
# ... and under GPT2Block's (query, key and value go into c_attn, stacked in that order).
_GPT2_NAMES = {
    "attention_norm": "ln_1",
    "attention.output": "attn.c_proj",
    "feed_forward_norm": "ln_2",
    "feed_forward.fc1": "mlp.c_fc",
    "feed_forward.fc2": "mlp.c_proj",
}


def _transformer_layers(params: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """``layers.{i}.{rest}`` weights of the registry's transformers, by layer and rest."""
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, value in params.items():
        head, index, rest = (name.split(".", 2) + ["", ""])[:3]
        if head != "layers" or not index.isdigit() or not rest:
            raise ModelConfigError(f"{name!r} is no weight of the registry's transformers")
        layers.setdefault(int(index), {})[rest] = value
    return layers


def _rename_layer(rest: str, names: dict[str, str]) -> str:
    module, _, leaf = rest.rpartition(".")
    if module not in names:
        raise ModelConfigError(f"{rest!r} is no weight of the registry's transformer blocks")
    return f"{names[module]}.{leaf}"


def _bert_params_to_torch(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`bert-base` (``layers.{i}.attention.query.weight``, ...) under BertEncoder's names."""
    return {
        f"layer.{index}.{_rename_layer(rest, _BERT_NAMES)}": value
        for index, layer in _transformer_layers(params).items()
        for rest, value in layer.items()
    }


def _single_layer(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    layers = _transformer_layers(params)
    if set(layers) != {0}:
        raise ModelConfigError(f"one layer's weights expected, got layers {sorted(layers)}")
    return layers[0]


def _bert_layer_params_to_torch(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`bert-layer` (``layers.0.*``) under BertLayer's names."""
    return {_rename_layer(rest, _BERT_NAMES): value
            for rest, value in _single_layer(params).items()}


def _gpt2_params_to_torch(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`gpt2-block` (``layers.0.*``) under GPT2Block's names."""
    layer = _single_layer(params)
    out = {}
    for rest, value in layer.items():
        if rest.split(".")[-2] not in ("query", "key", "value"):
            out[_rename_layer(rest, _GPT2_NAMES)] = value
    for leaf in ("weight", "bias"):
        stacked = [layer.get(f"attention.{part}.{leaf}") for part in ("query", "key", "value")]
        if any(part is None for part in stacked):
            raise ModelConfigError(f"attention.query/key/value.{leaf} expected in layers.0")
        out[f"attn.c_attn.{leaf}"] = np.concatenate(stacked, axis=0)
    return out


def _register_layer(name: str, description: str, title: str, build_layer):
    """Register a model of one transformer layer with BERT-base's sizes, imported from another
    framework: `build_layer(batch, rng, **sizes)` builds it once the sizes are checked."""

    @register(name, "transformer", description)
    def build(batch: int, rng: np.random.Generator, seq_len: int = 128, hidden: int = 768,
              heads: int = 12, ffn: int = 3072) -> Network:
        check_heads(hidden, heads)
        return build_layer(batch, rng, seq_len=seq_len, hidden=hidden, heads=heads, ffn=ffn)

    build.__doc__ = title + _LAYER_TABLE
    return build


torch_resnet18 = _register_torch_resnet(
    "torch-resnet18", "ResNet-18", 11_689_512,
    "ResNet-18 written in torch (torchvision's layout), imported via torch.export, 11.7 M weights",
)
torch_resnet50 = _register_torch_resnet(
    "torch-resnet50", "ResNet-50 v1.5 (bottlenecks [3, 4, 6, 3], stride on the 3x3 convolution)",
    25_557_032,
    "ResNet-50 v1.5 written in torch (torchvision's layout), via torch.export, 25.6 M weights",
)
torch_bert_layer = _register_layer(
    "torch-bert-layer",
    "one BERT-base encoder layer written in torch (Hugging Face's BertLayer), via torch.export",
    "One BERT-base encoder layer (post-LayerNorm, erf GELU), through the torch importer.",
    partial(_build_torch, "torch-bert-layer"),
)
torch_gpt2_block = _register_layer(
    "torch-gpt2-block",
    "one GPT-2 small block written in torch (Hugging Face's GPT2Block), via torch.export",
    "One GPT-2 small block (pre-LayerNorm, causal, tanh GELU), through the torch importer.",
    partial(_build_torch, "torch-gpt2-block"),
)


@register(
    "torch-bert-base",
    "transformer",
    "BERT-base encoder written in torch (Hugging Face's BertEncoder, 12 layers), via torch.export",
)
def torch_bert_base(batch: int, rng: np.random.Generator, seq_len: int = 128, hidden: int = 768,
                    heads: int = 12, ffn: int = 3072, num_layers: int = 12) -> Network:
    """The BERT-base encoder (12 post-LayerNorm layers, erf GELU, no mask), through the torch
    importer; the architecture of the registry's `bert-base`, with the same sizes: hidden
    states in, hidden states out (no embeddings, no pooler).

    ==========  ===============================================
    weights     input = output
    ==========  ===============================================
    85,054,464  hidden_states (B, 128, 768) float32
    ==========  ===============================================
    """
    check_heads(hidden, heads)
    return _build_torch("torch-bert-base", batch, rng, seq_len=seq_len, hidden=hidden,
                        heads=heads, ffn=ffn, num_layers=num_layers)


# name: (its registered builder, the maker of its torch module, the translator of the weights
# of its counterpart in the registry into the module's names)
_TORCH_MODELS = {
    "torch-resnet18": (torch_resnet18, partial(_make_torch_resnet, bottleneck=False,
                                               blocks_per_stage=[2, 2, 2, 2]),
                       _resnet_params_to_torch),
    "torch-resnet50": (torch_resnet50, partial(_make_torch_resnet, bottleneck=True,
                                               blocks_per_stage=[3, 4, 6, 3]),
                       _resnet_params_to_torch),
    "torch-bert-layer": (torch_bert_layer, partial(_make_torch_block, gpt2=False),
                         _bert_layer_params_to_torch),
    "torch-bert-base": (torch_bert_base, _make_torch_bert_base, _bert_params_to_torch),
    "torch-gpt2-block": (torch_gpt2_block, partial(_make_torch_block, gpt2=True),
                         _gpt2_params_to_torch),
}

# Each torch model is named after its counterpart.
TORCH_COUNTERPARTS = {name: name.removeprefix("torch-") for name in _TORCH_MODELS}
"""The registry model (built with `tvm.relax.frontend.nn`) each torch model writes out again:
the same architecture and sizes, so that ``torch_eager_module(name, params=models.get(
TORCH_COUNTERPARTS[name], **sizes).params, **sizes)`` computes what that model computes."""


def torch_eager_module(
    name: str,
    batch: int = 1,
    seed: int = 0,
    params: dict[str, np.ndarray] | None = None,
    **sizes,
) -> "tuple[torch.nn.Module, list[torch.Tensor]]":
    """The eval-mode torch module of a torch model here and example inputs, for torch eager.

    ``module(*inputs)`` is the forward pass that ``models.get(name, batch, seed, **sizes)``
    imports, with the same weights and the same inputs (drawn from `seed` as `models.get`
    draws them): time it under ``torch.inference_mode()``.

    Parameters
    ----------
    name : str
        ``"torch-resnet18"``, ``"torch-resnet50"``, ``"torch-bert-layer"``,
        ``"torch-bert-base"`` or ``"torch-gpt2-block"``.
    batch, seed : int
        As for `models.get`.
    params : dict[str, numpy.ndarray] | None
        Weights to load instead of the random ones: either under the module's own (torchvision
        / Hugging Face) names, or the `params` of the registry model in `TORCH_COUNTERPARTS`
        (e.g. ``models.get("resnet50", **sizes).params`` for ``"torch-resnet50"``), whose
        output the module then reproduces. Copied, never shared.
    **sizes
        The size overrides the registered model accepts (e.g. ``image_size=32``).

    Returns
    -------
    tuple[torch.nn.Module, list[torch.Tensor]]
        The module (eval mode, gradients off) and its float32 inputs.

    Raises
    ------
    ModelConfigError
        When `name` is no torch model here, a size is unknown or does not fit, or `params`
        do not name and shape exactly the module's weights.
    MissingDependencyError
        When torch is not installed.
    """
    if name not in _TORCH_MODELS:
        raise ModelConfigError(
            f"no torch module for {name!r}; torch models: {', '.join(sorted(_TORCH_MODELS))}"
        )
    build, make, translate = _TORCH_MODELS[name]
    accepted = [p for p in inspect.signature(build).parameters if p not in ("batch", "rng")]
    unknown = sorted(set(sizes) - set(accepted))
    if unknown:
        raise ModelConfigError(
            f"model {name!r} has no size {', '.join(unknown)}; it accepts: {', '.join(accepted)}"
        )
    bound = inspect.signature(build).bind(batch=batch, rng=None, **sizes)
    bound.apply_defaults()
    sizes = {key: value for key, value in bound.arguments.items() if key not in ("batch", "rng")}
    torch = _import_optional("torch", "torch==2.13.0", name)
    net, input_shapes = make(torch, batch, **sizes)
    net = net.eval()
    # Two independent streams from `seed`, weights then inputs, as models.get draws them.
    weights_seed, inputs_seed = np.random.SeedSequence(seed).spawn(2)
    if params is None:
        _draw_weights(torch, net, np.random.default_rng(weights_seed))
    else:
        _load_weights(torch, net, params, translate)
    net.requires_grad_(False)
    rng = np.random.default_rng(inputs_seed)
    inputs = [
        torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        for shape in input_shapes.values()
    ]
    return net, inputs


def _load_weights(torch, net, params: dict[str, np.ndarray], translate) -> None:
    """Copy `params` into `net`: under its own names, or translated from the registry's."""
    names = _weight_names(net)
    if not set(names) <= set(params):
        params = translate(params)
    state = net.state_dict()
    missing = sorted(set(names) - set(params))
    unexpected = sorted(set(params) - set(names))
    if missing or unexpected:
        raise ModelConfigError(
            f"the weights do not fit the module: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    with torch.no_grad():
        for name in names:
            value = np.asarray(params[name], dtype=np.float32)
            if tuple(value.shape) != tuple(state[name].shape):
                raise ModelConfigError(
                    f"weight {name!r} has shape {value.shape}, the module wants "
                    f"{tuple(state[name].shape)}"
                )
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))


# --- BERT encoder layer in ONNX ---


def _onnx_bert_layer(batch: int, rng: np.random.Generator, seq_len: int, hidden: int, heads: int,
                     ffn: int) -> Network:
    _import_optional("onnx", "onnx==1.23.2", "onnx-bert-layer")
    from onnx import helper

    head_dim = hidden // heads
    shapes = {}
    for name, (rows, cols) in {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (hidden, ffn),
        "output.dense": (ffn, hidden),
    }.items():
        shapes[f"{name}.kernel"] = (rows, cols)
        shapes[f"{name}.bias"] = (cols,)
    for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[f"{norm}.weight"] = (hidden,)
        shapes[f"{norm}.bias"] = (hidden,)
    params = {name: random_weight(name, shape, rng) for name, shape in shapes.items()}
    constants = {
        "heads_shape": np.array([batch, seq_len, heads, head_dim], np.int64),
        "hidden_shape": np.array([batch, seq_len, hidden], np.int64),
        "scale": np.array(1.0 / math.sqrt(head_dim), np.float32),
        "sqrt2": np.array(math.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    node = helper.make_node
    nodes = []

    def dense(x: str, name: str, out: str) -> str:
        nodes.append(node("MatMul", [x, f"{name}.kernel"], [f"{out}.mm"]))
        nodes.append(node("Add", [f"{out}.mm", f"{name}.bias"], [out]))
        return out

    def residual_norm(step: str, x: str, residual: str, norm: str, out: str) -> str:
        """LayerNorm `norm` of ``x + residual``: BERT's post-LayerNorm residual connection."""
        nodes.append(node("Add", [x, residual], [f"{step}.residual"]))
        nodes.append(node("LayerNormalization", [f"{step}.residual", f"{norm}.weight",
                                                 f"{norm}.bias"], [out], axis=-1, epsilon=1e-12))
        return out

    def heads_of(x: str, perm: list[int]) -> str:
        nodes.append(node("Reshape", [x, "heads_shape"], [f"{x}.split"]))
        nodes.append(node("Transpose", [f"{x}.split"], [f"{x}.heads"], perm=perm))
        return f"{x}.heads"

    query = heads_of(dense("hidden_states", "attention.self.query", "q"), [0, 2, 1, 3])
    key = heads_of(dense("hidden_states", "attention.self.key", "k"), [0, 2, 3, 1])  # transposed
    value = heads_of(dense("hidden_states", "attention.self.value", "v"), [0, 2, 1, 3])
    nodes += [
        node("MatMul", [query, key], ["scores.raw"]),
        node("Mul", ["scores.raw", "scale"], ["scores"]),
        node("Softmax", ["scores"], ["probs"], axis=-1),
        node("MatMul", ["probs", value], ["context.heads"]),
        node("Transpose", ["context.heads"], ["context.split"], perm=[0, 2, 1, 3]),
        node("Reshape", ["context.split", "hidden_shape"], ["context"]),
    ]
    residual_norm("attn", dense("context", "attention.output.dense", "attn.out"), "hidden_states",
                  "attention.output.LayerNorm", "attended")
    dense("attended", "intermediate.dense", "inner")
    # GELU(x) = x * 0.5 * (1 + erf(x / sqrt 2)), the exact form BERT uses.
    nodes += [
        node("Div", ["inner", "sqrt2"], ["gelu.scaled"]),
        node("Erf", ["gelu.scaled"], ["gelu.erf"]),
        node("Add", ["gelu.erf", "one"], ["gelu.shifted"]),
        node("Mul", ["inner", "gelu.shifted"], ["gelu.product"]),
        node("Mul", ["gelu.product", "half"], ["gelu"]),
    ]
    residual_norm("ffn", dense("gelu", "output.dense", "ffn.out"), "attended", "output.LayerNorm",
                  "output")
    shape = (batch, seq_len, hidden)
    return onnx_network(nodes, "onnx_bert_layer", ("hidden_states", shape), ("output", shape), params,
                        constants)


onnx_bert_layer = _register_layer(
    "onnx-bert-layer",
    "one BERT-base encoder layer as an ONNX graph (MatMul, Softmax, LayerNormalization, Erf GELU)",
    """One BERT-base encoder layer built with `onnx.helper` (opset 17) and imported with
    `from_onnx`; the ONNX reference evaluator is its reference.

    Matrices are stored ``(in, out)`` (``*.kernel``), as ONNX's MatMul takes them.""",
    _onnx_bert_layer,
)
