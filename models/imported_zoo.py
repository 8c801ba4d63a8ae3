"""Real architectures through the torch and ONNX import routes (issue 4).

The same architectures as the `tvm.relax.frontend.nn` models (ResNet-18, a BERT encoder layer, a
GPT-2 block), written once more in plain torch and imported with `torch.export` +
`from_exported_program`, or built as an ONNX graph with `onnx.helper` from NumPy weights and
imported with `from_onnx`. The importers produce other graphs than `nn` does (their own operator
names, BatchNorm and LayerNorm lowering, constant layout), which is what these exercise.

No torchvision or Hugging Face code: the architectures are written out here, with the parameter
names of torchvision's `resnet18` and of Hugging Face's `BertLayer` / `GPT2Block`, so the weight
counts can be checked against the published ones. torch and onnx stay optional (imported only
when their model is built); ONNX graphs are built with `onnx.helper` rather than exported from
torch, because torch 2.13's default exporter (dynamo) needs onnxscript, which is not installed.
Every model carries the source framework's own forward pass as `reference`.
"""

import math

import numpy as np

from .imported import _import_optional, onnx_network
from .registry import ModelConfigError, Network, register
from .weights import random_weight


def _check_heads(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise ModelConfigError(f"hidden size {hidden} is not divisible by {heads} attention heads")


def _torch_network(
    torch, net, inputs: dict[str, tuple[int, ...]], rng: np.random.Generator
) -> Network:
    """Random weights into `net` (by name and shape, as every model here draws them), then
    `torch.export` and `from_exported_program`; `main` takes `inputs` (float32) in order."""
    from tvm.relax.frontend.torch import from_exported_program  # needs torch itself

    net = net.eval()
    params = {}
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            # BatchNorm's integer batch counter is no weight; registered masks are no weights.
            if tensor.is_floating_point() and name not in getattr(net, "not_weights", ()):
                params[name] = random_weight(name, tuple(tensor.shape), rng)
                tensor.copy_(torch.from_numpy(params[name]))
    examples = tuple(torch.zeros(shape) for shape in inputs.values())
    exported = torch.export.export(net, examples)
    mod = from_exported_program(exported, unwrap_unit_return_tuple=True)

    def reference(*arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(*[torch.from_numpy(a) for a in arrays]).numpy()

    return Network(mod=mod, params=params, reference=reference)


# --- ResNet-18 in torch ---


def _torch_resnet18(torch, width: int, num_classes: int):
    nn = torch.nn

    class BasicBlock(nn.Module):
        """Two 3x3 conv-BN pairs, ReLU between and after the residual addition (torchvision)."""

        def __init__(self, in_channels: int, channels: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.downsample = None
            if stride != 1 or in_channels != channels:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                    nn.BatchNorm2d(channels),
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), stages [2, 2, 2, 2] of widths
        w, 2w, 4w, 8w, global average pool, classifier."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            channels = width
            for stage in range(4):
                out_channels = width * 2**stage
                stride = 1 if stage == 0 else 2
                blocks = nn.Sequential(
                    BasicBlock(channels, out_channels, stride),
                    BasicBlock(out_channels, out_channels, 1),
                )
                setattr(self, f"layer{stage + 1}", blocks)
                channels = out_channels
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(channels, num_classes)

        def forward(self, images):
            x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


@register(
    "torch-resnet18",
    "cnn",
    "ResNet-18 written in torch (torchvision's layout), imported via torch.export, 11.7 M weights",
)
def torch_resnet18(
    batch: int,
    rng: np.random.Generator,
    image_size: int = 224,
    width: int = 64,
    num_classes: int = 1000,
) -> Network:
    """ResNet-18 on `image_size` x `image_size` RGB images, through the torch importer.

    ==========  ========================  ===========
    weights     input                     output
    ==========  ========================  ===========
    11,689,512  images (B, 3, 224, 224)   (B, 1000)
    ==========  ========================  ===========

    Weights as torchvision counts them (BatchNorm running statistics excluded); BatchNorm runs
    in inference mode with random statistics.
    """
    torch = _import_optional("torch", "torch==2.13.0", "torch-resnet18")
    net = _torch_resnet18(torch, width, num_classes)
    return _torch_network(torch, net, {"images": (batch, 3, image_size, image_size)}, rng)


# --- BERT encoder layer and GPT-2 block in torch ---


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


# Per layer: four hidden x hidden projections, the two FFN matrices, biases, two LayerNorms
# (4 h^2 + 2 h f + f + 9 h weights).
_LAYER_TABLE = """

    ==========  ===============================================
    weights     input = output
    ==========  ===============================================
    7,087,872   hidden_states (B, 128, 768) float32
    ==========  ===============================================
"""


@register(
    "torch-bert-layer",
    "transformer",
    "one BERT-base encoder layer written in torch (Hugging Face's BertLayer), via torch.export",
)
def torch_bert_layer(
    batch: int,
    rng: np.random.Generator,
    seq_len: int = 128,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
) -> Network:
    """One BERT-base encoder layer (post-LayerNorm, erf GELU), through the torch importer."""
    _check_heads(hidden, heads)
    torch = _import_optional("torch", "torch==2.13.0", "torch-bert-layer")
    net = _torch_transformer_block(torch, hidden, heads, ffn, seq_len, gpt2=False)
    return _torch_network(torch, net, {"hidden_states": (batch, seq_len, hidden)}, rng)


@register(
    "torch-gpt2-block",
    "transformer",
    "one GPT-2 small block written in torch (Hugging Face's GPT2Block), via torch.export",
)
def torch_gpt2_block(
    batch: int,
    rng: np.random.Generator,
    seq_len: int = 128,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
) -> Network:
    """One GPT-2 small block (pre-LayerNorm, causal, tanh GELU), through the torch importer."""
    _check_heads(hidden, heads)
    torch = _import_optional("torch", "torch==2.13.0", "torch-gpt2-block")
    net = _torch_transformer_block(torch, hidden, heads, ffn, seq_len, gpt2=True)
    return _torch_network(torch, net, {"hidden_states": (batch, seq_len, hidden)}, rng)


torch_bert_layer.__doc__ += _LAYER_TABLE
torch_gpt2_block.__doc__ += _LAYER_TABLE


# --- BERT encoder layer in ONNX ---


@register(
    "onnx-bert-layer",
    "transformer",
    "one BERT-base encoder layer as an ONNX graph (MatMul, Softmax, LayerNormalization, Erf GELU)",
)
def onnx_bert_layer(
    batch: int,
    rng: np.random.Generator,
    seq_len: int = 128,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
) -> Network:
    """One BERT-base encoder layer built with `onnx.helper` (opset 17) and imported with
    `from_onnx`; the ONNX reference evaluator is its reference.

    Matrices are stored ``(in, out)`` (``*.kernel``), as ONNX's MatMul takes them.
    """
    _check_heads(hidden, heads)
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
    dense("context", "attention.output.dense", "attn.out")
    nodes += [
        node("Add", ["attn.out", "hidden_states"], ["attn.residual"]),
        node(
            "LayerNormalization",
            [
                "attn.residual",
                "attention.output.LayerNorm.weight",
                "attention.output.LayerNorm.bias",
            ],
            ["attended"],
            axis=-1,
            epsilon=1e-12,
        ),
    ]
    dense("attended", "intermediate.dense", "inner")
    # GELU(x) = x * 0.5 * (1 + erf(x / sqrt 2)), the exact form BERT uses.
    nodes += [
        node("Div", ["inner", "sqrt2"], ["gelu.scaled"]),
        node("Erf", ["gelu.scaled"], ["gelu.erf"]),
        node("Add", ["gelu.erf", "one"], ["gelu.shifted"]),
        node("Mul", ["inner", "gelu.shifted"], ["gelu.product"]),
        node("Mul", ["gelu.product", "half"], ["gelu"]),
    ]
    dense("gelu", "output.dense", "ffn.out")
    nodes += [
        node("Add", ["ffn.out", "attended"], ["ffn.residual"]),
        node(
            "LayerNormalization",
            ["ffn.residual", "output.LayerNorm.weight", "output.LayerNorm.bias"],
            ["output"],
            axis=-1,
            epsilon=1e-12,
        ),
    ]
    shape = (batch, seq_len, hidden)
    return onnx_network(nodes, "onnx_bert_layer", ("hidden_states", shape), ("output", shape), params,
                        constants)


onnx_bert_layer.__doc__ += _LAYER_TABLE
