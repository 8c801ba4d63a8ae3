"""NumPy references of the registry's models, in float64, reading the weights by the names the
models give them (`Model.params`): what test_models.py and test_models_zoo.py compare TVM's
output with. Each is an independent reimplementation of the architecture, not of the Relax code.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def as_float64(params: dict) -> dict:
    return {name: value.astype(np.float64) for name, value in params.items()}


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """NCHW convolution, OIHW weights."""
    x = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    windows = sliding_window_view(x, weight.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def max_pool(x: np.ndarray, size: int, stride: int, padding: int = 0) -> np.ndarray:
    x = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)],
               constant_values=-np.inf)
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride].max(
        axis=(-2, -1))


def adaptive_avg_pool(x: np.ndarray, size: int) -> np.ndarray:
    """torch's adaptive average pooling: cell i covers [floor(i n / s), ceil((i + 1) n / s))."""
    n = x.shape[-1]
    bounds = [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]
    rows = [[x[..., a:b, c:d].mean(axis=(-2, -1)) for c, d in bounds] for a, b in bounds]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def linear(p: dict, name: str, x: np.ndarray) -> np.ndarray:
    """``nn.Linear`` `name`: its weight is stored ``(out, in)``."""
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps):
    return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps) * weight


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v, heads, *, scale=True, bias=None, causal=False):
    """Multi-head attention on projected ``(batch, seq, hidden)`` queries, keys and values."""
    batch, q_len, hidden = q.shape
    k_len = k.shape[1]
    head_dim = hidden // heads

    def split(t):
        return t.reshape(batch, -1, heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(0, 1, 3, 2)
    if scale:
        scores = scores / math.sqrt(head_dim)
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = np.where(np.triu(np.ones((q_len, k_len), bool), k=1), -np.inf, scores)
    return (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(batch, q_len, hidden)


# --- CNNs ---

CONVS = ("conv1", "conv2", "conv3")  # of a basic block (two) or a bottleneck (three)


def resnet_reference(params: dict, images: np.ndarray, strided_conv: str) -> np.ndarray:
    """ResNet forward pass; `strided_conv` names the conv of a block that carries its stride."""
    params = as_float64(params)

    def conv_bn(prefix, x, stride):
        weight = params[f"{prefix}.conv.weight"]
        y = conv2d(x, weight, stride, weight.shape[2] // 2)
        scale, shift = params[f"{prefix}.bn.scale"], params[f"{prefix}.bn.shift"]
        return y * scale[:, None, None] + shift[:, None, None]

    x = max_pool(relu(conv_bn("conv1", images.astype(np.float64), 2)), 3, 2, 1)
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


def vgg_reference(params, images):
    p = as_float64(params)
    x = images.astype(np.float64)
    pool_after = {1, 3, 6, 9, 12}
    for index in range(13):
        bias = p[f"features.{index}.bias"][:, None, None]
        x = relu(conv2d(x, p[f"features.{index}.weight"], 1, 1) + bias)
        if index in pool_after:
            x = max_pool(x, 2, 2)
    x = adaptive_avg_pool(x, 7).reshape(x.shape[0], -1)
    x = relu(linear(p, "fc1", x))
    return linear(p, "fc3", relu(linear(p, "fc2", x)))


# --- transformers ---

# The variants of models/transformer.py's TransformerBlock, as keyword arguments of
# transformer_reference.
BERT = {"pre_norm": False, "causal": False, "eps": 1e-12, "gelu": gelu_erf}
GPT2 = {"pre_norm": True, "causal": True, "eps": 1e-5, "gelu": gelu_tanh}


def transformer_reference(params, hidden_states, *, heads, pre_norm, causal, eps, gelu=gelu_erf,
                          prefix="layers", feed_forward=None):
    """The layers ``{prefix}.{i}`` of TransformerBlocks: self-attention, then a feed-forward
    network, each with a residual connection and a LayerNorm, before the sublayer (`pre_norm`:
    GPT-2, ViT) or after the addition (BERT). The feed-forward network is
    ``fc2(gelu(fc1(x)))`` unless `feed_forward(p, name, x)` replaces it (a mixture of experts)."""
    p = as_float64(params)
    x = hidden_states.astype(np.float64)

    def self_attention(p, name, t):
        q, k, v = (linear(p, f"{name}.{n}", t) for n in ("query", "key", "value"))
        return linear(p, f"{name}.output", attention(q, k, v, heads, causal=causal))

    def gelu_network(p, name, t):
        return linear(p, f"{name}.fc2", gelu(linear(p, f"{name}.fc1", t)))

    sublayers = (("attention", self_attention), ("feed_forward", feed_forward or gelu_network))
    layer = 0
    while f"{prefix}.{layer}.attention.query.weight" in p:
        for name, sublayer in sublayers:
            name = f"{prefix}.{layer}.{name}"
            weight, bias = p[f"{name}_norm.weight"], p[f"{name}_norm.bias"]
            if pre_norm:
                x = x + sublayer(p, name, layer_norm(x, weight, bias, eps))
            else:
                x = layer_norm(x + sublayer(p, name, x), weight, bias, eps)
        layer += 1
    return x


def moe_reference(params, hidden_states, *, heads, top_k):
    """Pre-LayerNorm attention, then top-k routed GELU experts (gates renormalised over the k)."""

    def experts(p, name, h):
        logits = h @ p[f"{name}.router.weight"].T  # (batch, seq, experts)
        out = np.zeros_like(h)
        for index in np.ndindex(*logits.shape[:2]):
            chosen = np.argsort(logits[index])[::-1][:top_k]
            for gate, e in zip(softmax(logits[index][chosen]), chosen):
                hidden = gelu_erf(linear(p, f"{name}.experts.{e}.fc1", h[index]))
                out[index] += gate * linear(p, f"{name}.experts.{e}.fc2", hidden)
        return out

    return transformer_reference(params, hidden_states, heads=heads, pre_norm=True, causal=False,
                                 eps=1e-12, feed_forward=experts)


def vit_reference(params, images, *, patch, heads):
    p = as_float64(params)
    x = conv2d(images.astype(np.float64), p["conv_proj.weight"], patch, 0)
    x = x + p["conv_proj.bias"][:, None, None]
    batch, hidden = x.shape[:2]
    x = x.reshape(batch, hidden, -1).transpose(0, 2, 1)
    cls = np.broadcast_to(p["class_token"], (batch, 1, hidden))
    x = np.concatenate([cls, x], axis=1) + p["pos_embedding"]
    x = transformer_reference(params, x, heads=heads, pre_norm=True, causal=False, eps=1e-6,
                              prefix="encoder.layers")
    x = layer_norm(x, p["norm.weight"], p["norm.bias"], 1e-6)
    return linear(p, "head", x[:, 0])


def llama_reference(params, hidden_states, *, heads):
    """Pre-RMSNorm layers, rotary embedding on pairs (i, i + head_dim / 2), SwiGLU."""
    p = as_float64(params)
    x = hidden_states.astype(np.float64)
    batch, seq_len, hidden = x.shape
    head_dim = hidden // heads
    angles = np.arange(seq_len)[:, None] * 10000.0 ** (-np.arange(head_dim // 2) * 2 / head_dim)

    def rope(t):  # rotate each pair of features by its position's angle
        t = t.reshape(batch, seq_len, heads, 2, head_dim // 2)
        a, b = t[:, :, :, 0], t[:, :, :, 1]
        cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
        return np.stack([a * cos - b * sin, a * sin + b * cos], axis=3).reshape(x.shape)

    layer = 0
    while f"layers.{layer}.attention.query.kernel" in p:
        prefix = f"layers.{layer}."
        w = {name[len(prefix) :]: v for name, v in p.items() if name.startswith(prefix)}
        h = rms_norm(x, w["attention_norm.weight"], 1e-5)
        q, k, v = (h @ w[f"attention.{n}.kernel"] for n in ("query", "key", "value"))
        x = x + attention(rope(q), rope(k), v, heads, causal=True) @ w["attention.output.kernel"]
        h = rms_norm(x, w["feed_forward_norm.weight"], 1e-5)
        gate = h @ w["feed_forward.gate.kernel"]
        silu = gate / (1.0 + np.exp(-gate))
        x = x + (silu * (h @ w["feed_forward.up.kernel"])) @ w["feed_forward.down.kernel"]
        layer += 1
    return x


def t5_bucket(relative: int, bidirectional: bool, num_buckets=32, max_distance=128) -> int:
    """Hugging Face's `_relative_position_bucket`, one position at a time."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if relative > 0 else 0
        relative = abs(relative)
    else:
        relative = -min(relative, 0)
    max_exact = num_buckets // 2
    if relative < max_exact:
        return bucket + relative
    log_ratio = math.log(relative / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + int(log_ratio * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


def t5_reference(params, encoder_states, decoder_states, *, heads):
    p = as_float64(params)

    def position_bias(table, length, bidirectional):
        buckets = [[t5_bucket(k - q, bidirectional) for k in range(length)] for q in range(length)]
        return table[np.array(buckets)].transpose(2, 0, 1)[None]  # (1, heads, q, k)

    def attend(prefix, x, context, bias=None, causal=False):
        q = x @ p[f"{prefix}.query.kernel"]
        k, v = (context @ p[f"{prefix}.{n}.kernel"] for n in ("key", "value"))
        out = attention(q, k, v, heads, scale=False, bias=bias, causal=causal)
        return out @ p[f"{prefix}.output.kernel"]

    def stack(name, x, encoded=None):
        decoder = encoded is not None
        table = p[f"{name}.layers.0.self_attention.relative_attention_bias.weight"]
        bias = position_bias(table, x.shape[1], bidirectional=not decoder)
        layer = 0
        while f"{name}.layers.{layer}.feed_forward.wi.kernel" in p:
            prefix = f"{name}.layers.{layer}"
            h = rms_norm(x, p[f"{prefix}.self_attention_norm.weight"], 1e-6)
            x = x + attend(f"{prefix}.self_attention", h, h, bias, causal=decoder)
            if decoder:
                h = rms_norm(x, p[f"{prefix}.cross_attention_norm.weight"], 1e-6)
                x = x + attend(f"{prefix}.cross_attention", h, encoded)
            h = rms_norm(x, p[f"{prefix}.feed_forward_norm.weight"], 1e-6)
            ffn = relu(h @ p[f"{prefix}.feed_forward.wi.kernel"])
            x = x + ffn @ p[f"{prefix}.feed_forward.wo.kernel"]
            layer += 1
        return rms_norm(x, p[f"{name}.final_norm.weight"], 1e-6)

    encoded = stack("encoder", encoder_states.astype(np.float64))
    return stack("decoder", decoder_states.astype(np.float64), encoded)


# --- recommenders ---


def dlrm_reference(params, dense, sparse):
    p = as_float64(params)

    def mlp(name, x, last):
        layer = 0
        while f"{name}.layers.{layer}.weight" in p:
            x = linear(p, f"{name}.layers.{layer}", x)
            final = f"{name}.layers.{layer + 1}.weight" not in p
            x = 1.0 / (1.0 + np.exp(-x)) if final and last == "sigmoid" else relu(x)
            layer += 1
        return x

    bottom = mlp("bottom", dense.astype(np.float64), "relu")
    vectors = [bottom] + [p[f"tables.{t}.weight"][sparse[:, t]] for t in range(sparse.shape[1])]
    # Dot products of every pair (i, j) with j < i, row by row.
    pairs = [(vectors[i] * vectors[j]).sum(-1) for i in range(len(vectors)) for j in range(i)]
    interactions = np.stack(pairs, axis=1)
    return mlp("top", np.concatenate([bottom, interactions], axis=1), "sigmoid")


def two_tower_reference(params, query_ids, query_dense, item_ids, item_dense):
    p = as_float64(params)

    def tower(name, ids, dense):
        x = np.concatenate([p[f"{name}.table.weight"][ids[:, 0]], dense.astype(np.float64)], axis=1)
        layer = 0
        while f"{name}.layers.{layer}.weight" in p:
            x = linear(p, f"{name}.layers.{layer}", x)
            layer += 1
            if f"{name}.layers.{layer}.weight" in p:
                x = relu(x)
        return x / np.sqrt((x * x).sum(axis=1, keepdims=True) + 1e-12)

    q, v = tower("query", query_ids, query_dense), tower("item", item_ids, item_dense)
    return (q * v).sum(axis=1, keepdims=True)
