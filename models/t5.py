"""A T5 encoder-decoder (Raffel et al., 2020) with the sizes of T5-base (v1.0).

Encoder layers: RMS LayerNorm, bidirectional self-attention, residual; RMS LayerNorm,
``wo(relu(wi(x)))``, residual. Decoder layers add cross-attention to the encoder's output between
a causal self-attention and the feed-forward network. No biases; attention scores are not
scaled (T5 folds that into its weights) and get T5's relative position bias: a learned scalar per
head and per bucket of the key-query distance (32 buckets, logarithmic beyond 8, up to 128),
held by each stack's first layer and added in every layer. The buckets depend only on the static
sequence lengths, so they are computed when the model is built; the lookup of the bias table
stays in the graph.

`main` takes the embedded encoder and decoder inputs (hidden states; the shared token embedding
and the LM head are not included) and returns the decoder's final hidden states.
"""

import dataclasses
import math

import numpy as np
from tvm.relax.frontend import nn

from .layers import Dense, take
from .nn_export import export_with_random_weights
from .registry import Network, register
from .transformer import BERT_BASE, SelfAttention, TransformerConfig, check_heads

# BERT-base's sizes; pre-norm; the feed-forward network is ReLU (gelu_approximate is unused).
T5_BASE = dataclasses.replace(BERT_BASE, pre_norm=True, norm_eps=1e-6)
NUM_BUCKETS = 32
MAX_DISTANCE = 128


def relative_position_buckets(
    query_len: int, key_len: int, bidirectional: bool, num_buckets: int = NUM_BUCKETS
) -> np.ndarray:
    """T5's bucket of each (query, key) pair, ``(query_len, key_len)`` int64."""
    relative = np.arange(key_len)[None, :] - np.arange(query_len)[:, None]
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0) * num_buckets
        distance = np.abs(relative)
    else:
        distance = -np.minimum(relative, 0)
    max_exact = num_buckets // 2
    # Logarithmic buckets beyond max_exact (the clip only avoids log(0) where it is unused).
    large = max_exact + (
        np.log(np.maximum(distance, 1) / max_exact)
        / math.log(MAX_DISTANCE / max_exact)
        * (num_buckets - max_exact)
    ).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int64)


class T5Attention(SelfAttention):
    """Bias-free, unscaled attention; optionally owns the relative position bias table."""

    scaled = False

    def __init__(self, config: TransformerConfig, causal: bool, has_position_bias: bool):
        super().__init__(dataclasses.replace(config, causal=causal))
        self.relative_attention_bias = (
            nn.Embedding(NUM_BUCKETS, config.heads) if has_position_bias else None
        )

    def projection(self, in_features: int, out_features: int) -> nn.Module:
        return Dense(in_features, out_features, bias=False)

    def position_bias(self, query_len: int, key_len: int) -> nn.Tensor:
        """``(1, heads, query_len, key_len)`` from the bias table."""
        buckets = relative_position_buckets(query_len, key_len, bidirectional=not self.causal)
        table = self.relative_attention_bias.weight  # (buckets, heads)
        bias = take(table, nn.Tensor.from_const(buckets.reshape(-1)))
        bias = nn.op.reshape(bias, [query_len, key_len, table.shape[1]])
        return nn.op.unsqueeze(nn.op.permute_dims(bias, [2, 0, 1]), 0)


class RMSNorm(nn.RMSNorm):
    """T5's LayerNorm: scale by the root mean square, no mean, no bias."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config.hidden, -1, config.norm_eps, bias=False)


class T5FeedForward(nn.Module):
    def __init__(self, config: TransformerConfig):
        self.wi = Dense(config.hidden, config.ffn, bias=False)
        self.wo = Dense(config.ffn, config.hidden, bias=False)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.wo(nn.op.relu(self.wi(x)))


class T5Layer(nn.Module):
    """Self-attention, cross-attention (decoder only), feed-forward; pre-norm residuals."""

    def __init__(self, config: TransformerConfig, decoder: bool, first: bool):
        self.self_attention = T5Attention(config, causal=decoder, has_position_bias=first)
        self.self_attention_norm = RMSNorm(config)
        if decoder:
            self.cross_attention = T5Attention(config, causal=False, has_position_bias=False)
            self.cross_attention_norm = RMSNorm(config)
        else:
            self.cross_attention = None
        self.feed_forward = T5FeedForward(config)
        self.feed_forward_norm = RMSNorm(config)

    def forward(self, x: nn.Tensor, position_bias: nn.Tensor, encoded: nn.Tensor | None):
        normed = self.self_attention_norm(x)
        x = x + self.self_attention.attend(normed, normed, position_bias)
        if self.cross_attention is not None:
            x = x + self.cross_attention.attend(self.cross_attention_norm(x), encoded)
        return x + self.feed_forward(self.feed_forward_norm(x))


class T5Stack(nn.Module):
    def __init__(self, config: TransformerConfig, decoder: bool):
        self.layers = nn.ModuleList(
            [T5Layer(config, decoder, first=i == 0) for i in range(config.num_layers)]
        )
        self.final_norm = RMSNorm(config)

    def forward(self, x: nn.Tensor, encoded: nn.Tensor | None = None) -> nn.Tensor:
        seq_len = int(x.shape[1])
        position_bias = self.layers[0].self_attention.position_bias(seq_len, seq_len)
        for layer in self.layers:
            x = layer(x, position_bias, encoded)
        return self.final_norm(x)


class T5(nn.Module):
    def __init__(self, config: TransformerConfig, decoder_layers: int):
        self.encoder = T5Stack(config, decoder=False)
        self.decoder = T5Stack(dataclasses.replace(config, num_layers=decoder_layers), decoder=True)

    def forward(self, encoder_states: nn.Tensor, decoder_states: nn.Tensor) -> nn.Tensor:
        return self.decoder(decoder_states, self.encoder(encoder_states))


@register(
    "t5-base",
    "transformer",
    "T5-base encoder-decoder: 12 + 12 layers, hidden 768, 12 heads, relative position bias",
)
def t5_base(batch: int, rng: np.random.Generator, seq_len: int = 128, decoder_seq_len: int = 128,
            hidden: int = T5_BASE.hidden, heads: int = T5_BASE.heads, ffn: int = T5_BASE.ffn,
            num_layers: int = T5_BASE.num_layers,
            decoder_layers: int = T5_BASE.num_layers) -> Network:
    """T5-base on embedded encoder and decoder inputs.

    ============  ========================================  =================
    weights       inputs                                    output
    ============  ========================================  =================
    198,229,248   (B, 128, 768) encoder, (B, 128, 768)      (B, 128, 768)
                  decoder
    ============  ========================================  =================

    Hugging Face's t5-base has 222,903,552 weights; the difference is the shared token
    embedding (32128 x 768), which is not included.
    """
    check_heads(hidden, heads)
    config = dataclasses.replace(
        T5_BASE, hidden=hidden, heads=heads, ffn=ffn, num_layers=num_layers, seq_len=seq_len
    )
    shapes = {
        "encoder_states": (batch, seq_len, hidden),
        "decoder_states": (batch, decoder_seq_len, hidden),
    }
    return export_with_random_weights(T5(config, decoder_layers), shapes, rng)
