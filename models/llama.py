"""A Llama-style decoder (Touvron et al., 2023) with the layer shapes of Llama-2 7B.

Each layer is pre-norm: RMSNorm, causal multi-head self-attention with rotary position
embeddings (RoPE) on queries and keys, a residual addition; RMSNorm, a SwiGLU feed-forward
network ``down(silu(gate(x)) * up(x))``, a residual addition. No biases anywhere.

Like the BERT and GPT-2 stacks of :mod:`.transformer` (whose attention and block this reuses),
`main` takes hidden states after the token embedding and returns the last layer's hidden
states: the embedding, the final RMSNorm and the LM head are not included. Rotary embedding is
the rotate-half form of the Hugging Face implementation: the cos and sin tables are constants
computed when the model is built, for the static sequence length, or for `max_seq_len` rows
taken up to the symbolic length (``seq_len="n"``: one module runs every length up to
`max_seq_len`, which `main`'s ``tir_var_upper_bound`` states).

The weights are stored ``(in_features, out_features)`` (:class:`~.layers.Dense`), so compiling
does not copy them into transposed constants. To keep the full depth buildable in memory (26 GB
of float32 weights), the layers reuse the random values of `distinct_layers` layers (by default
one): every operator still reads a constant of its own, so the graph and the weight bytes that
placement sees are those of the real model, while the process holds 0.8 GB.
"""

import dataclasses

import numpy as np
from tvm.relax.frontend import nn

from .layers import Dense
from .nn_export import export_with_random_weights
from .registry import ModelConfigError, Network, register
from .transformer import (
    GPT2_SMALL,
    SelfAttention,
    TransformerBlock,
    TransformerConfig,
    TransformerStack,
)

# Llama-2 7B: GPT-2's causal pre-norm layout and norm epsilon (1e-5) at hidden 4096,
# 32 heads of 128, SwiGLU width 11008 (gelu_approximate is unused).
LLAMA2_7B = dataclasses.replace(GPT2_SMALL, hidden=4096, heads=32, ffn=11008, num_layers=32,
                                gelu_approximate=None)
ROPE_THETA = 10000.0


def rotary_tables(
    seq_len: int, head_dim: int, theta: float = ROPE_THETA
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotation angles, ``(seq_len, head_dim)``, halves repeated."""
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(seq_len, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class LlamaAttention(SelfAttention):
    """Causal self-attention without biases, with rotary position embeddings."""

    def __init__(self, config: TransformerConfig, max_seq_len: int):
        super().__init__(config)
        self.max_seq_len = max_seq_len

    def projection(self, in_features: int, out_features: int) -> nn.Module:
        return Dense(in_features, out_features, bias=False)

    def position(self, query: nn.Tensor, key: nn.Tensor) -> tuple[nn.Tensor, nn.Tensor]:
        _, _, seq_len, head_dim = query.shape
        static = isinstance(seq_len, int)
        cos, sin = rotary_tables(seq_len if static else self.max_seq_len, int(head_dim))
        cos, sin = nn.Tensor.from_const(cos), nn.Tensor.from_const(sin)
        if not static:  # the first seq_len rows
            rows = nn.op.arange(0, seq_len, dtype="int64")
            cos, sin = nn.op.take(cos, rows, axis=0), nn.op.take(sin, rows, axis=0)

        def rotate(t: nn.Tensor) -> nn.Tensor:
            first, second = nn.op.split(t, 2, axis=-1)
            return t * cos + nn.op.concat([nn.op.negative(second), first], dim=-1) * sin

        return rotate(query), rotate(key)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: TransformerConfig):
        self.gate = Dense(config.hidden, config.ffn, bias=False)
        self.up = Dense(config.hidden, config.ffn, bias=False)
        self.down = Dense(config.ffn, config.hidden, bias=False)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.down(nn.op.silu(self.gate(x)) * self.up(x))


class LlamaBlock(TransformerBlock):
    """:class:`~.transformer.TransformerBlock`'s pre-norm residual layout, Llama's sublayers."""

    def __init__(self, config: TransformerConfig, max_seq_len: int):  # pylint: disable=super-init-not-called
        self.pre_norm = True
        self.attention = LlamaAttention(config, max_seq_len)
        self.attention_norm = nn.RMSNorm(config.hidden, -1, config.norm_eps, bias=False)
        self.feed_forward = SwiGLU(config)
        self.feed_forward_norm = nn.RMSNorm(config.hidden, -1, config.norm_eps, bias=False)


def _layer_sharing(distinct_layers: int):
    """Map ``layers.<i>.<rest>`` to ``layers.<i mod distinct_layers>.<rest>``."""

    def shared_with(name: str) -> str:
        prefix, index, rest = name.split(".", 2)
        return f"{prefix}.{int(index) % distinct_layers}.{rest}"

    return shared_with


def _register_llama(name: str, num_layers: int, description: str):
    @register(name, "transformer", description)
    def build(batch: int, rng: np.random.Generator, seq_len: int | str = LLAMA2_7B.seq_len,
              hidden: int = LLAMA2_7B.hidden, heads: int = LLAMA2_7B.heads,
              ffn: int = LLAMA2_7B.ffn, num_layers: int = num_layers, distinct_layers: int = 1,
              max_seq_len: int = 4096) -> Network:
        if hidden % heads or (hidden // heads) % 2:
            raise ModelConfigError(
                f"hidden size {hidden} is not divisible by {heads} attention heads of even size"
            )
        if distinct_layers < 1:
            raise ModelConfigError(f"distinct_layers must be at least 1, not {distinct_layers}")
        if isinstance(seq_len, str) and not seq_len.isidentifier():
            raise ModelConfigError(f"seq_len={seq_len!r}: a number, or a name for a symbolic length")
        config = dataclasses.replace(
            LLAMA2_7B, seq_len=seq_len, hidden=hidden, heads=heads, ffn=ffn, num_layers=num_layers
        )
        return export_with_random_weights(
            TransformerStack(config, lambda c: LlamaBlock(c, max_seq_len)),
            {"hidden_states": (batch, seq_len, hidden)},
            rng,
            shared_with=_layer_sharing(distinct_layers),
            upper_bounds={seq_len: max_seq_len} if isinstance(seq_len, str) else None,
        )

    build.__doc__ = f"""{description}.

    ==================  ======  ==============  ======  =====  =====================
    name                layers  weights         hidden  heads  input = output
    ==================  ======  ==============  ======  =====  =====================
    llama2-7b-4layers   4       809,533,440     4096    32     (B, 128, 4096)
    llama2-7b           32      6,476,267,520   4096    32     (B, 128, 4096)
    ==================  ======  ==============  ======  =====  =====================

    202,383,360 weights per layer (SwiGLU width 11008). `distinct_layers` is how many layers
    have weights of their own; the others reuse theirs (see the module docstring).
    ``seq_len="n"``: a symbolic sequence length, at most `max_seq_len`.
    """
    return build


llama2_7b_4layers = _register_llama(
    "llama2-7b-4layers",
    4,
    "first 4 layers of a Llama-2-7B-shaped decoder: RMSNorm, RoPE, SwiGLU, causal attention",
)
llama2_7b = _register_llama(
    "llama2-7b",
    32,
    "Llama-2-7B-shaped decoder, all 32 layers: RMSNorm, RoPE, SwiGLU, causal attention",
)
