"""A Llama-architecture language model with a KV cache: `prefill` and `decode` in one module.

The whole model, token ids in and logits out: the token embedding, `num_layers` pre-norm layers
(RMSNorm, causal self-attention with rotary position embeddings and grouped key/value heads,
a residual addition; RMSNorm, a SwiGLU feed-forward network ``down(silu(gate(x)) * up(x))``, a
residual addition; no biases), the final RMSNorm and the LM head, which is applied to the last
position only. Built with `tvm.relax.frontend.nn` and exported with `export_tvm` as one IRModule
with two entry functions over the same weights::

    prefill(tokens: (b, "n") int64, *weights)
        -> (logits (b, vocab), k_0, v_0, ..., k_{L-1}, v_{L-1})          caches (b, n, kv_heads, head_dim)
    decode(token: (b, 1) int64, k_0, v_0, ..., k_{L-1}, v_{L-1}, *weights)   caches (b, "m", kv_heads, head_dim)
        -> (logits (b, vocab), k_0, v_0, ...)                           caches (b, m + 1, kv_heads, head_dim)

The weights are parameters after ``num_input`` (1 for prefill, ``1 + 2 L`` for decode), with the
same names in both functions (``embed_tokens.weight``, ``layers.<i>.self_attn.q_proj.kernel``,
``layers.<i>.mlp.gate.kernel``, ..., ``norm.weight``, ``lm_head.kernel``; matrices stored
``(in_features, out_features)``; :func:`hf_state_dict` renames and transposes them into Hugging
Face's ``LlamaForCausalLM`` state dict), so a joint placement of the two
functions (``tvm_place.compile(mod, targets, entries={"prefill": 1, "decode": 32})``) sees every
weight shared between them. The cache holds keys after the rotary embedding, as Hugging Face's.

Why this design. The cache is functional: decode takes the cache as inputs and returns a new
one, the old rows with the new key and value appended; its length is a symbolic dimension
(``n`` in prefill, ``m`` in decode) rather than a static maximum with a position argument. So
every value is an ordinary tensor passed between operators: no in-place update, no effect or
runtime object (TVM's paged KV cache is a runtime object that placement could neither cost nor
split across devices), and a cache tensor is just another value that placement puts on a device,
copies between devices and charges to that device's memory. Symbolic lengths make each step
compute over the real length, not a padded maximum, and let one compiled module serve every
length. The new token's rotary position is the cache length ``m``: decode takes row ``m`` of a
precomputed cos/sin table of `max_len` rows. Both functions carry ``tir_var_upper_bound``
(``n <= max_len``, ``m <= max_len - 1`` so that ``m + 1 <= max_len``), so memory is planned for,
and placement charges, the longest sequence.

The cost: every decode step copies the whole cache into the new one (``O(m)`` bytes per layer and
step, so ``O(steps^2)`` over a generation) and allocates it, where a paged or preallocated
in-place cache writes one row. For Llama-2 7B at batch 1 and m = 2048 the float32 cache is 2 GiB:
the copy reads and writes 4 GiB per step beside the 25 GiB of weights and the 2 GiB of cache that
the step reads anyway (about 15% more memory traffic); for TinyLlama-1.1B (4 key/value heads) the
cache is 88 MiB beside 4.1 GiB of weights (about 4%). The share grows with the length and batch.

Some kernels see the lengths only as expressions (decode's attention reads the cache of length
``m + 1``; the rotary row is ``arange(m, m + 1)``, prefill's last position ``arange(n - 1, n)``),
so TVM hands them ``m`` or ``n`` as a scalar size argument; tvm-place costs such kernels at a
size with its own specialisation (``passes/collect.py``, ``at_sizes``), where TVM's
``SpecializePrimFuncBasedOnCallSite`` refuses them.

:func:`build` gives ``(mod, params)``, the weights random (:mod:`.weights`), NumPy arrays by
parameter name in the order the functions take them; :func:`export` the module and the weight
shapes only (for the full-size configs, whose weights need not exist to be placed).
:func:`generate` is a greedy loop over any prefill and decode callables; :func:`reference_prefill`
and :func:`reference_decode` compute the same model in NumPy.

This module is not in the model registry: the registry's builders return one ``main`` with the
weights bound as constants, and this model is two functions with the weights as parameters.
"""

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tvm
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import spec as nn_spec

from .layers import Dense
from .llama import SwiGLU, rotary_tables
from .registry import ModelConfigError
from .transformer import _MASKED_SCORE
from .weights import random_weight


@dataclasses.dataclass(frozen=True)
class LlamaKVConfig:
    """The sizes of a Llama-architecture model.

    Attributes
    ----------
    hidden : int
        Width of the hidden states.
    heads : int
        Query heads; ``hidden // heads`` is the head size, which must be even (RoPE).
    kv_heads : int
        Key and value heads (grouped-query attention); must divide `heads`. Equal to `heads`
        for multi-head attention (Llama-2 7B).
    ffn : int
        Inner width of the SwiGLU feed-forward network.
    num_layers : int
        Decoder layers.
    vocab : int
        Vocabulary size: rows of the embedding, columns of the LM head.
    max_len : int
        The longest sequence (prompt and generated tokens): rows of the rotary tables, and the
        ``tir_var_upper_bound`` of the cache length.
    norm_eps : float
        The epsilon of every RMSNorm.
    rope_theta : float
        The base of the rotary embedding's frequencies.
    dtype : str
        The weights', activations' and caches' type: ``"float32"``, or ``"float16"`` (what
        LLMs are served in: half the memory; the NumPy reference still computes in float64).
    """

    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    num_layers: int
    vocab: int
    max_len: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def validate(self) -> None:
        if self.hidden % self.heads or self.head_dim % 2:
            raise ModelConfigError(
                f"hidden size {self.hidden} is not divisible by {self.heads} heads of even size"
            )
        if self.kv_heads < 1 or self.heads % self.kv_heads:
            raise ModelConfigError(f"{self.kv_heads} key/value heads do not divide {self.heads} heads")
        if self.dtype not in ("float32", "float16"):
            raise ModelConfigError(f"dtype {self.dtype!r}: float32 or float16")
        for field in ("ffn", "num_layers", "vocab", "max_len"):
            if getattr(self, field) < 1:
                raise ModelConfigError(f"{field} must be at least 1, not {getattr(self, field)}")

    def num_weights(self) -> int:
        """The number of weights (parameters) of the model."""
        kv = self.kv_heads * self.head_dim
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.ffn
        return 2 * self.vocab * self.hidden + self.num_layers * (per_layer + 2 * self.hidden) + self.hidden

    def cache_bytes(self, batch: int, length: int) -> int:
        """Bytes of the keys and values of all layers for `batch` sequences of `length` tokens."""
        itemsize = np.dtype(self.dtype).itemsize
        return 2 * self.num_layers * batch * length * self.kv_heads * self.head_dim * itemsize


# Llama-2 7B (Touvron et al., 2023): multi-head attention, 4096-token context.
LLAMA2_7B = LlamaKVConfig(
    hidden=4096, heads=32, kv_heads=32, ffn=11008, num_layers=32, vocab=32000, max_len=4096
)
# TinyLlama-1.1B (Zhang et al., 2024): Llama-2's architecture at 1.1B, 4 key/value heads.
TINYLLAMA_1B = LlamaKVConfig(
    hidden=2048, heads=32, kv_heads=4, ffn=5632, num_layers=22, vocab=32000, max_len=2048
)
# For tests: grouped heads (4 queries over 2 key/value heads), head size 16.
TINY = LlamaKVConfig(hidden=64, heads=4, kv_heads=2, ffn=128, num_layers=2, vocab=256, max_len=64)

CONFIGS = {"llama2-7b": LLAMA2_7B, "tinyllama-1.1b": TINYLLAMA_1B, "tiny": TINY}


def config(name: str = "tinyllama-1.1b", num_layers: int | None = None, **overrides) -> LlamaKVConfig:
    """A named configuration (:data:`CONFIGS`), with `num_layers` (a few-layer version) and any
    other field replaced, e.g. ``config("llama2-7b", num_layers=4)``."""
    if name not in CONFIGS:
        raise ModelConfigError(f"unknown configuration {name!r}; available: {', '.join(CONFIGS)}")
    if num_layers is not None:
        overrides["num_layers"] = num_layers
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(LlamaKVConfig)})
    if unknown:
        raise ModelConfigError(f"{', '.join(unknown)}: not a field of LlamaKVConfig")
    result = dataclasses.replace(CONFIGS[name], **overrides)
    result.validate()
    return result


def _rotate(t: nn.Tensor, cos: nn.Tensor, sin: nn.Tensor) -> nn.Tensor:
    """The rotate-half rotary embedding of ``t (b, s, heads, head_dim)``; cos, sin ``(s, 1, head_dim)``."""
    first, second = nn.op.split(t, 2, axis=-1)
    return t * cos + nn.op.concat([nn.op.negative(second), first], dim=-1) * sin


class Attention(nn.Module):
    """Causal self-attention with RoPE, grouped key/value heads and a functional KV cache."""

    def __init__(self, config: LlamaKVConfig):
        self.heads, self.kv_heads, self.head_dim = config.heads, config.kv_heads, config.head_dim
        self.q_proj = Dense(config.hidden, config.heads * config.head_dim, bias=False)
        self.k_proj = Dense(config.hidden, config.kv_heads * config.head_dim, bias=False)
        self.v_proj = Dense(config.hidden, config.kv_heads * config.head_dim, bias=False)
        self.o_proj = Dense(config.heads * config.head_dim, config.hidden, bias=False)

    def _grouped(self, key: nn.Tensor, value: nn.Tensor) -> tuple[nn.Tensor, nn.Tensor]:
        """Keys ``(b, kv_heads, 1, d, t)`` and values ``(b, kv_heads, 1, t, d)`` from ``(b, t, kv_heads, d)``."""
        batch, length, kv_heads, head_dim = key.shape
        return (
            nn.op.reshape(nn.op.permute_dims(key, [0, 2, 3, 1]), [batch, kv_heads, 1, head_dim, length]),
            nn.op.reshape(nn.op.permute_dims(value, [0, 2, 1, 3]), [batch, kv_heads, 1, length, head_dim]),
        )

    def forward(self, x: nn.Tensor, cos: nn.Tensor, sin: nn.Tensor,
                past: tuple[nn.Tensor, nn.Tensor] | None):
        """The output ``(b, s, hidden)`` and the cache ``(b, t, kv_heads, head_dim)``: this
        call's keys and values (prefill, ``t = s``), or the past's with them appended
        (decode, ``s = 1``, ``t = m + 1``)."""
        batch, seq_len, _ = x.shape
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        group = heads // kv_heads
        scale = 1.0 / float(np.sqrt(head_dim))
        query = nn.op.reshape(self.q_proj(x), [batch, seq_len, heads, head_dim])
        key = nn.op.reshape(self.k_proj(x), [batch, seq_len, kv_heads, head_dim])
        value = nn.op.reshape(self.v_proj(x), [batch, seq_len, kv_heads, head_dim])
        query, key = _rotate(query, cos, sin), _rotate(key, cos, sin)
        # Query head h reads key/value head h // group: queries (b, kv_heads, group, s, d)
        # against keys (b, kv_heads, 1, d, t), broadcast over the group without copying.
        q = nn.op.permute_dims(
            nn.op.reshape(query, [batch, seq_len, kv_heads, group, head_dim]), [0, 2, 3, 1, 4]
        )
        if past is None:  # prefill: causal attention within the prompt
            k, v = self._grouped(key, value)
            scores = nn.op.matmul(q, k) * scale  # (b, kv_heads, group, n, n)
            # -1e9 in float32; float16's -65504 / 2 (-1e9 would be -inf there).
            masked = max(_MASKED_SCORE, float(np.finfo(x.dtype).min) / 2)
            mask = nn.op.triu(nn.op.full([seq_len, seq_len], masked, dtype=x.dtype), 1)
            context = nn.op.matmul(nn.op.softmax(scores + mask, axis=-1), v)
        else:  # decode: the new token attends to the cache and to itself
            key = nn.op.concat([past[0], key], dim=1)  # (b, m + 1, kv_heads, d)
            value = nn.op.concat([past[1], value], dim=1)
            k, v = self._grouped(key, value)
            context = nn.op.matmul(nn.op.softmax(nn.op.matmul(q, k) * scale, axis=-1), v)
        context = nn.op.permute_dims(context, [0, 3, 1, 2, 4])  # (b, s, kv_heads, group, d)
        return self.o_proj(nn.op.reshape(context, [batch, seq_len, heads * head_dim])), key, value


class Layer(nn.Module):
    def __init__(self, config: LlamaKVConfig):
        self.input_layernorm = nn.RMSNorm(config.hidden, -1, config.norm_eps, bias=False)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden, -1, config.norm_eps, bias=False)
        self.mlp = SwiGLU(config)  # gate, up, down

    def forward(self, x, cos, sin, past):
        attended, key, value = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), key, value


class LlamaKV(nn.Module):
    """The model; `prefill` and `decode` are its two exported functions."""

    def __init__(self, config: LlamaKVConfig):
        config.validate()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab, config.hidden)
        self.layers = nn.ModuleList([Layer(config) for _ in range(config.num_layers)])
        self.norm = nn.RMSNorm(config.hidden, -1, config.norm_eps, bias=False)
        self.lm_head = Dense(config.hidden, config.vocab, bias=False)

    def _tables(self) -> tuple[nn.Tensor, nn.Tensor]:
        """The cos and sin tables, ``(max_len, head_dim)``."""
        tables = rotary_tables(self.config.max_len, self.config.head_dim, self.config.rope_theta)
        return tuple(nn.Tensor.from_const(t.astype(self.config.dtype)) for t in tables)

    def _run(self, tokens: nn.Tensor, cos, sin, pasts):
        head_dim = self.config.head_dim
        cos, sin = (nn.op.reshape(t, [t.shape[0], 1, head_dim]) for t in (cos, sin))
        x = self.embed_tokens(tokens)
        caches = []
        for layer, past in zip(self.layers, pasts):
            x, key, value = layer(x, cos, sin, past)
            caches += [key, value]
        batch, length, hidden = x.shape
        if not isinstance(length, int):  # prefill: the last position only
            x = nn.op.take(x, nn.op.arange(length - 1, length, dtype="int64"), axis=1)
        logits = self.lm_head(self.norm(nn.op.reshape(x, [batch, hidden])))
        return (logits, *caches)

    def prefill(self, tokens: nn.Tensor):
        rows = nn.op.arange(0, tokens.shape[1], dtype="int64")  # positions 0 .. n - 1
        cos, sin = (nn.op.take(t, rows, axis=0) for t in self._tables())
        return self._run(tokens, cos, sin, [None] * self.config.num_layers)

    def decode(self, token: nn.Tensor, *caches: nn.Tensor):
        past_len = caches[0].shape[1]  # m, the new token's position
        rows = nn.op.arange(past_len, past_len + 1, dtype="int64")
        cos, sin = (nn.op.take(t, rows, axis=0) for t in self._tables())
        pasts = [(caches[2 * i], caches[2 * i + 1]) for i in range(self.config.num_layers)]
        return self._run(token, cos, sin, pasts)


def cache_names(num_layers: int) -> list[str]:
    """``k_0, v_0, ..., k_{L-1}, v_{L-1}``: decode's cache inputs, in order."""
    return [f"{kind}_{i}" for i in range(num_layers) for kind in ("k", "v")]


def export(config: LlamaKVConfig, batch: int | str = 1, max_batch: int | None = None
           ) -> tuple[tvm.IRModule, list[tuple[str, tuple[int, ...]]]]:
    """The IRModule with `prefill` and `decode`, and the weights' names and shapes in the order
    the functions take them (after ``num_input``).

    `batch` is a number, or a name for a symbolic batch dimension, bounded by `max_batch` in
    ``tir_var_upper_bound`` when given.
    """
    config.validate()
    if isinstance(batch, str) and (not batch.isidentifier() or batch in ("n", "m")):
        raise ModelConfigError(f"batch={batch!r}: a number, or a name other than n and m")
    model = LlamaKV(config)
    model.to(config.dtype)
    cache = nn_spec.Tensor([batch, "m", config.kv_heads, config.head_dim], config.dtype)
    names = ["token", *cache_names(config.num_layers)]
    decode = nn_spec.MethodSpec(
        model.decode, names,
        [nn_spec.Tensor([batch, 1], "int64")] + [cache] * (len(names) - 1),
        param_mode="plain", effect_mode="none",
    )
    spec = {"prefill": {"tokens": nn_spec.Tensor([batch, "n"], "int64")}, "decode": decode}
    mod, named_params = model.export_tvm(spec=spec)
    bounds = {"prefill": {"n": config.max_len}, "decode": {"m": config.max_len - 1}}
    for name, bound in bounds.items():
        if isinstance(batch, str) and max_batch is not None:
            bound = {**bound, batch: max_batch}
        mod[name] = mod[name].with_attr("tir_var_upper_bound", bound)
    shapes = [(name, tuple(int(d) for d in param.shape)) for name, param in named_params]
    return mod, shapes


def build(config: LlamaKVConfig, batch: int | str = 1, seed: int | np.random.Generator = 0,
          max_batch: int | None = None) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """:func:`export` with random weights: ``(mod, params)``, `params` NumPy arrays of the
    config's dtype by parameter name, in the order `prefill` and `decode` take them after their
    inputs (the same values whatever the dtype: float32 draws, rounded)::

        mod, params = build(config("tinyllama-1.1b", num_layers=2))
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        tokens = generate(*vm_functions(vm, params), prompt, steps=16)
    """
    mod, shapes = export(config, batch, max_batch)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return mod, {name: random_weight(name, shape, rng).astype(config.dtype, copy=False)
                 for name, shape in shapes}


def _numpy(value) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.numpy()


def generate(prefill_fn: Callable, decode_fn: Callable, tokens, steps: int,
             weights: Iterable = (), max_len: int | None = None) -> np.ndarray:
    """Greedy decoding: `steps` new tokens ``(b, steps)`` int64 after the prompt `tokens` ``(b, n)``.

    ``prefill_fn(tokens, *weights)`` and ``decode_fn(token, *caches, *weights)`` return what the
    functions of :func:`export` return: logits first, then the caches. Any callables do: the
    functions of a Relax VM (:func:`vm_functions`), tvm-place's ``placed["prefill"]`` and
    ``placed["decode"]`` with ``weights=params.values()``, :func:`reference_functions`. The
    caches go from one call to the next as returned (no copy to NumPy); the logits are read as
    NumPy. The prompt and the generated tokens must fit in the model's ``max_len``
    (``n + steps - 1`` positions): past it, the rotary table has no row and the memory planned at
    the ``tir_var_upper_bound`` is too small; give `max_len` to have that checked.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or steps < 1:
        raise ValueError(f"tokens must be (batch, n) and steps at least 1, not {tokens.shape} and {steps}")
    if max_len is not None and tokens.shape[1] + steps - 1 > max_len:
        raise ValueError(f"{tokens.shape[1]} prompt tokens and {steps} steps need "
                         f"{tokens.shape[1] + steps - 1} positions; the model has {max_len}")
    weights = list(weights)
    outputs = prefill_fn(np.ascontiguousarray(tokens, dtype=np.int64), *weights)
    generated = []
    for step in range(steps):
        token = np.argmax(_numpy(outputs[0]), axis=-1).astype(np.int64)[:, None]
        generated.append(token)
        if step + 1 < steps:
            outputs = decode_fn(token, *outputs[1:], *weights)
    return np.concatenate(generated, axis=1)


def vm_functions(vm, params: dict[str, np.ndarray] | Sequence, device=None) -> tuple[Callable, Callable]:
    """``(prefill, decode)`` callables over a `relax.VirtualMachine` of :func:`export`'s module,
    with the weights moved to the device once and bound: ``prefill(tokens)``,
    ``decode(token, *caches)``; NumPy inputs are converted."""
    device = device or tvm.cpu()
    values = params.values() if isinstance(params, dict) else params
    weights = [tvm.runtime.tensor(np.ascontiguousarray(w), device) for w in values]

    def bind(name):
        def call(*inputs):
            inputs = [tvm.runtime.tensor(x, device) if isinstance(x, np.ndarray) else x for x in inputs]
            return vm[name](*inputs, *weights)
        return call

    return bind("prefill"), bind("decode")


_HF_RENAMES = {"mlp.gate.": "mlp.gate_proj.", "mlp.up.": "mlp.up_proj.", "mlp.down.": "mlp.down_proj."}


def hf_state_dict(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights under the names and layout of Hugging Face's ``LlamaForCausalLM``
    (``model.`` prefix, ``*_proj.weight`` matrices ``(out_features, in_features)``), for
    ``model.load_state_dict({k: torch.from_numpy(v) for k, v in ...})``."""
    state = {}
    for name, value in params.items():
        for ours, theirs in _HF_RENAMES.items():
            name = name.replace(ours, theirs)
        if name.endswith(".kernel"):
            name, value = name[: -len("kernel")] + "weight", value.T
        state[name if name.startswith("lm_head.") else "model." + name] = np.ascontiguousarray(value)
    return state


# ----------------------------------------------------------------------------------------------
# The NumPy reference (float64)


def _rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _reference(config: LlamaKVConfig, params, tokens, caches, start: int):
    tokens = np.asarray(tokens)
    batch, seq_len = tokens.shape
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    heads, kv_heads, head_dim = config.heads, config.kv_heads, config.head_dim
    cos, sin = (t[start:start + seq_len, None, :].astype(np.float64)
                for t in rotary_tables(config.max_len, head_dim, config.rope_theta))

    def rotate(t):
        first, second = np.split(t, 2, axis=-1)
        return t * cos + np.concatenate([-second, first], axis=-1) * sin

    x = p["embed_tokens.weight"][tokens]
    new_caches = []
    for i in range(config.num_layers):
        w = lambda name: p[f"layers.{i}.{name}"]  # noqa: E731
        h = _rms_norm(x, w("input_layernorm.weight"), config.norm_eps)
        q = rotate((h @ w("self_attn.q_proj.kernel")).reshape(batch, seq_len, heads, head_dim))
        k = rotate((h @ w("self_attn.k_proj.kernel")).reshape(batch, seq_len, kv_heads, head_dim))
        v = (h @ w("self_attn.v_proj.kernel")).reshape(batch, seq_len, kv_heads, head_dim)
        if caches is not None:
            k = np.concatenate([np.asarray(caches[2 * i], np.float64), k], axis=1)
            v = np.concatenate([np.asarray(caches[2 * i + 1], np.float64), v], axis=1)
        new_caches += [k, v]
        group = heads // kv_heads
        kr, vr = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)  # head h reads h // group
        scores = np.einsum("bshd,bthd->bhst", q, kr) / np.sqrt(head_dim)
        total = k.shape[1]
        future = np.arange(total)[None, :] > (start + np.arange(seq_len))[:, None]
        scores = np.where(future, -np.inf, scores)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        context = np.einsum("bhst,bthd->bshd", probs, vr).reshape(batch, seq_len, heads * head_dim)
        x = x + context @ w("self_attn.o_proj.kernel")
        h = _rms_norm(x, w("post_attention_layernorm.weight"), config.norm_eps)
        gate = h @ w("mlp.gate.kernel")
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w("mlp.up.kernel"))) @ w("mlp.down.kernel")
    logits = _rms_norm(x[:, -1], p["norm.weight"], config.norm_eps) @ p["lm_head.kernel"]
    return (logits, *new_caches)


def reference_prefill(config: LlamaKVConfig, params: dict[str, np.ndarray], tokens):
    """NumPy (float64) `prefill`: ``(logits, k_0, v_0, ...)`` for `tokens` ``(b, n)``."""
    return _reference(config, params, tokens, None, 0)


def reference_decode(config: LlamaKVConfig, params: dict[str, np.ndarray], token, *caches):
    """NumPy (float64) `decode`: ``(logits, k_0, v_0, ...)``, the caches one row longer."""
    if len(caches) != 2 * config.num_layers:
        raise ValueError(f"decode takes {2 * config.num_layers} caches, not {len(caches)}")
    return _reference(config, params, token, caches, int(np.shape(caches[0])[1]))


def reference_functions(config: LlamaKVConfig, params: dict[str, np.ndarray]) -> tuple[Callable, Callable]:
    """``(prefill, decode)`` in NumPy, with the call signatures of :func:`vm_functions`'s."""
    return (lambda tokens: reference_prefill(config, params, tokens),
            lambda token, *caches: reference_decode(config, params, token, *caches))
