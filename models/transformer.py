"""Transformer encoder and decoder blocks (BERT, GPT-2) built with `tvm.relax.frontend.nn`.

The models start from hidden states, after the token embedding: `main` then takes one float32
tensor ``(batch, seq_len, hidden)`` like every other model here, instead of integer token ids.
Attention is written out with matmul and softmax so that each step is its own operator for
placement to assign.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
from tvm.relax.frontend import nn

from .nn_export import export_with_random_weights
from .registry import ModelConfigError, Network, register

# Added to the scores of future positions: large enough that softmax gives them zero weight,
# small enough that adding it to a score stays finite (so no -inf - -inf = NaN in softmax).
_MASKED_SCORE = -1e9


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The sizes and the variant of a stack of transformer blocks.

    Attributes
    ----------
    hidden : int
        Width of the hidden states.
    heads : int
        Attention heads; must divide `hidden`.
    ffn : int
        Inner width of the feed-forward network.
    num_layers : int
        Blocks in the stack.
    seq_len : int | str
        Tokens per sequence; a name (``"n"``) makes it a symbolic dimension of the input.
    causal : bool
        Whether a token attends only to itself and earlier tokens (GPT-2) or to all (BERT).
    pre_norm : bool
        LayerNorm before each sublayer, inside the residual (GPT-2), or after the residual
        addition (BERT).
    gelu_approximate : str | None
        ``"tanh"`` for GPT-2's GELU approximation, None for the exact (erf) GELU of BERT.
    norm_eps : float
        The epsilon of every LayerNorm.
    """

    hidden: int
    heads: int
    ffn: int
    num_layers: int
    seq_len: int | str
    causal: bool
    pre_norm: bool
    gelu_approximate: str | None
    norm_eps: float


# The published sizes; seq_len is a common inference length, not the models' maximum (512, 1024).
BERT_BASE = TransformerConfig(
    hidden=768,
    heads=12,
    ffn=3072,
    num_layers=12,
    seq_len=128,
    causal=False,
    pre_norm=False,
    gelu_approximate=None,
    norm_eps=1e-12,
)
GPT2_SMALL = dataclasses.replace(
    BERT_BASE, causal=True, pre_norm=True, gelu_approximate="tanh", norm_eps=1e-5
)
BERT_LARGE = dataclasses.replace(BERT_BASE, hidden=1024, heads=16, ffn=4096, num_layers=24)
GPT2_MEDIUM = dataclasses.replace(GPT2_SMALL, hidden=1024, heads=16, ffn=4096, num_layers=24)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with separate query, key, value projections.

    Subclasses change the projections (:meth:`projection`), add position information to the
    split queries and keys (:meth:`position`), or attend to another sequence (:meth:`attend`).
    """

    # Whether the scores are divided by sqrt(head_dim) (T5 folds that into its weights).
    scaled = True

    def __init__(self, config: TransformerConfig):
        self.heads = config.heads
        self.causal = config.causal
        self.query = self.projection(config.hidden, config.hidden)
        self.key = self.projection(config.hidden, config.hidden)
        self.value = self.projection(config.hidden, config.hidden)
        self.output = self.projection(config.hidden, config.hidden)

    def projection(self, in_features: int, out_features: int) -> nn.Module:
        return nn.Linear(in_features, out_features)

    def position(self, query: nn.Tensor, key: nn.Tensor) -> tuple[nn.Tensor, nn.Tensor]:
        """Queries and keys ``(batch, heads, seq, head_dim)`` with positions applied (none here)."""
        return query, key

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.attend(x, x)

    def attend(
        self, x: nn.Tensor, context: nn.Tensor, scores_bias: nn.Tensor | None = None
    ) -> nn.Tensor:
        """Queries from `x` attend to keys and values from `context`, adding `scores_bias`
        (broadcast to ``(batch, heads, len(x), len(context))``) to the scores if given."""
        batch, seq_len, hidden = x.shape
        context_len = context.shape[1]
        head_dim = hidden // self.heads

        def split_heads(t: nn.Tensor, length: int) -> nn.Tensor:
            # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
            t = nn.op.reshape(t, [batch, length, self.heads, head_dim])
            return nn.op.permute_dims(t, [0, 2, 1, 3])

        query = split_heads(self.query(x), seq_len)
        key = split_heads(self.key(context), context_len)
        value = split_heads(self.value(context), context_len)
        query, key = self.position(query, key)
        scores = nn.op.matmul(query, nn.op.permute_dims(key, [0, 1, 3, 2]))
        if self.scaled:
            scores = scores * (1.0 / float(np.sqrt(head_dim)))
        if scores_bias is not None:
            scores = scores + scores_bias
        if self.causal and isinstance(seq_len, int) and isinstance(context_len, int):
            future = np.triu(np.ones((seq_len, context_len), dtype=bool), k=1)
            mask = np.where(future, _MASKED_SCORE, 0.0).astype(np.float32)
            scores = scores + nn.Tensor.from_const(mask)
        elif self.causal:  # a symbolic length: the same mask, made in the graph
            scores = scores + nn.op.triu(nn.op.full([seq_len, context_len], _MASKED_SCORE), 1)
        probs = nn.op.softmax(scores, axis=-1)
        context = nn.op.permute_dims(nn.op.matmul(probs, value), [0, 2, 1, 3])
        return self.output(nn.op.reshape(context, [batch, seq_len, hidden]))


class FeedForward(nn.Module):
    """Position-wise ``fc2(gelu(fc1(x)))``."""

    def __init__(self, config: TransformerConfig):
        self.gelu_approximate = config.gelu_approximate
        self.fc1 = nn.Linear(config.hidden, config.ffn)
        self.fc2 = nn.Linear(config.ffn, config.hidden)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.fc2(nn.op.gelu(self.fc1(x), approximate=self.gelu_approximate))


class TransformerBlock(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and a LayerNorm."""

    def __init__(self, config: TransformerConfig):
        self.pre_norm = config.pre_norm
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden, eps=config.norm_eps)
        self.feed_forward = FeedForward(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden, eps=config.norm_eps)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        sublayers = [
            (self.attention, self.attention_norm),
            (self.feed_forward, self.feed_forward_norm),
        ]
        for sublayer, norm in sublayers:
            x = x + sublayer(norm(x)) if self.pre_norm else norm(x + sublayer(x))
        return x


class TransformerStack(nn.Module):
    """`config.num_layers` blocks applied to ``(batch, seq_len, hidden)`` hidden states.

    `block` makes each block from the config: :class:`TransformerBlock` (BERT, GPT-2, ViT), or a
    variant with other sublayers (Llama's, the mixture of experts').
    """

    def __init__(self, config: TransformerConfig, block: Callable[[TransformerConfig], nn.Module]
                 = TransformerBlock):
        self.layers = nn.ModuleList([block(config) for _ in range(config.num_layers)])

    def forward(self, hidden_states: nn.Tensor) -> nn.Tensor:
        return self.layers(hidden_states)


def check_heads(hidden: int, heads: int) -> None:
    """Refuse a hidden size that the attention heads do not divide."""
    if hidden % heads:
        raise ModelConfigError(f"hidden size {hidden} is not divisible by {heads} attention heads")


def build_transformer(config: TransformerConfig, batch: int, rng: np.random.Generator) -> Network:
    """Export a :class:`TransformerStack` with random weights."""
    check_heads(config.hidden, config.heads)
    shapes = {"hidden_states": (batch, config.seq_len, config.hidden)}
    return export_with_random_weights(TransformerStack(config), shapes, rng)


def _register_preset(name: str, preset: TransformerConfig, num_layers: int, description: str):
    """Register `preset` with `num_layers` blocks; its sizes are the overrides."""

    @register(name, "transformer", description)
    def build(batch: int, rng: np.random.Generator, seq_len: int = preset.seq_len,
              hidden: int = preset.hidden, heads: int = preset.heads, ffn: int = preset.ffn,
              num_layers: int = num_layers) -> Network:
        config = dataclasses.replace(
            preset, seq_len=seq_len, hidden=hidden, heads=heads, ffn=ffn, num_layers=num_layers
        )
        return build_transformer(config, batch, rng)

    hidden, ffn = preset.hidden, preset.ffn
    # Per layer: four hidden x hidden projections, the two FFN matrices, biases, two LayerNorms.
    weights = num_layers * (4 * hidden * hidden + 2 * hidden * ffn + ffn + 9 * hidden)
    shape = f"(B, {preset.seq_len}, {preset.hidden})"
    build.__doc__ = f"""{description}.

    Hidden states in, hidden states out (embeddings, pooler and LM head are not included):

    ======  ======  =====  =====  =============  ====================
    layers  hidden  heads  FFN    weights        input = output
    ======  ======  =====  =====  =============  ====================
    {num_layers:<6}  {hidden:<6}  {preset.heads:<5}  {ffn:<5}  {weights:<13,}  {shape}
    ======  ======  =====  =====  =============  ====================
    """


_register_preset(
    "bert-layer", BERT_BASE, 1, "one BERT-base encoder layer: hidden 768, 12 heads, FFN 3072"
)
_register_preset("bert-base", BERT_BASE, 12, "BERT-base encoder: 12 layers, hidden 768, 12 heads")
_register_preset(
    "gpt2-block",
    GPT2_SMALL,
    1,
    "one GPT-2 small decoder block: causal attention, pre-LayerNorm, hidden 768, 12 heads",
)
_register_preset(
    "bert-large", BERT_LARGE, 24, "BERT-large encoder: 24 layers, hidden 1024, 16 heads"
)
_register_preset(
    "gpt2-small", GPT2_SMALL, 12, "GPT-2 small decoder: 12 causal layers, hidden 768, 12 heads"
)
_register_preset(
    "gpt2-medium", GPT2_MEDIUM, 24, "GPT-2 medium decoder: 24 causal layers, hidden 1024, 16 heads"
)
