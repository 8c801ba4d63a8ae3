"""A mixture-of-experts transformer block (Shazeer et al., 2017; GShard, Switch, Mixtral style).

A pre-LayerNorm block of :mod:`.transformer` whose feed-forward network is replaced by
`num_experts` GELU feed-forward experts and a linear router. Each token is routed to its
`top_k` experts with the highest router logits; their gates are the softmax of those logits
(renormalised over the selected experts, as Mixtral does), the others get gate zero.

Static shapes: instead of dispatching each token to its experts (data-dependent shapes), every
expert computes every token and its output is weighted by its gate, zero for tokens not routed to
it. The output is what a dispatching MoE computes; the work is `num_experts` / `top_k` times
larger. Each expert is its own operators, so placement can spread experts over devices (expert
parallelism).
"""

import dataclasses

import numpy as np
from tvm.relax.frontend import nn

from .nn_export import export_with_random_weights
from .registry import ModelConfigError, Network, register
from .transformer import (
    _MASKED_SCORE,
    BERT_BASE,
    FeedForward,
    TransformerBlock,
    TransformerConfig,
    TransformerStack,
    check_heads,
)

MOE_BASE = dataclasses.replace(BERT_BASE, pre_norm=True, num_layers=1)


class MixtureOfExperts(nn.Module):
    """Top-k gated experts, computed densely (see the module docstring)."""

    def __init__(self, config: TransformerConfig, num_experts: int, top_k: int):
        self.top_k = top_k
        self.router = nn.Linear(config.hidden, num_experts, bias=False)
        self.experts = nn.ModuleList([FeedForward(config) for _ in range(num_experts)])

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        logits = self.router(x)  # (batch, seq, experts)
        # An expert is among the top k when fewer than k experts have a larger logit. Counted
        # with a comparison and a sum rather than with topk, which TVM 0.27's LegalizeOps does
        # not lower to TIR (tvm-place places TIR operators only).
        larger = nn.op.greater(nn.op.unsqueeze(logits, -2), nn.op.unsqueeze(logits, -1))
        rank = nn.op.sum(nn.op.astype(larger, "float32"), axis=-1)  # (batch, seq, experts)
        masked = nn.op.where(
            nn.op.less(rank, nn.Tensor.from_const(np.full((1,), self.top_k, dtype=np.float32))),
            logits,
            nn.Tensor.from_const(np.full((1,), _MASKED_SCORE, dtype=np.float32)),
        )
        gates = nn.op.split(nn.op.softmax(masked, axis=-1), len(self.experts), axis=-1)
        outputs = [gate * expert(x) for gate, expert in zip(gates, self.experts)]
        total = outputs[0]
        for output in outputs[1:]:
            total = total + output
        return total


class MoEBlock(TransformerBlock):
    """Pre-LayerNorm self-attention, then the mixture of experts, each with a residual."""

    def __init__(self, config: TransformerConfig, num_experts: int, top_k: int):
        super().__init__(config)
        self.feed_forward = MixtureOfExperts(config, num_experts, top_k)


@register(
    "moe-block",
    "transformer",
    "mixture-of-experts block: attention + 8 GELU experts (FFN 3072), top-2 router, hidden 768",
)
def moe_block(batch: int, rng: np.random.Generator, seq_len: int = MOE_BASE.seq_len,
              hidden: int = MOE_BASE.hidden, heads: int = MOE_BASE.heads, ffn: int = MOE_BASE.ffn,
              num_experts: int = 8, top_k: int = 2, num_layers: int = 1) -> Network:
    """One MoE transformer block on ``(batch, seq_len, hidden)`` hidden states.

    ===========  ===============  ===============  ==================================
    weights      input            output           experts
    ===========  ===============  ===============  ==================================
    40,151,040   (B, 128, 768)    (B, 128, 768)    8 x (768 -> 3072 -> 768), top-2
    ===========  ===============  ===============  ==================================

    The attention and expert sizes are BERT-base's (Switch-Base's with 8 experts).
    """
    check_heads(hidden, heads)
    if not 1 <= top_k <= num_experts:
        raise ModelConfigError(
            f"top_k must be between 1 and num_experts ({num_experts}), not {top_k}"
        )
    config = dataclasses.replace(
        MOE_BASE, seq_len=seq_len, hidden=hidden, heads=heads, ffn=ffn, num_layers=num_layers
    )
    shapes = {"hidden_states": (batch, seq_len, hidden)}
    stack = TransformerStack(config, lambda c: MoEBlock(c, num_experts, top_k))
    return export_with_random_weights(stack, shapes, rng)
