"""The bidirectional Gemma 3 encoder and its sentence-embedding head, in Flax Linen.

Semantics follow transformers 5.x ``Gemma3TextModel(use_bidirectional_attention=True)``
+ sentence-transformers Pooling/Dense/Normalize (docs/numerics.md). Each layer
gets its own :class:`~tarka_jax.nn.config.LayerSpec` (window, rotary base), so
``DecoderLayer`` / ``Attention`` can be built and tested alone. Parameter names
mirror the checkpoint so the converter is one key table; weight layout is
Flax's ``[in, out]`` (every transpose lives in ``tarka_jax.convert``). RMSNorm weights are stored as the
checkpoint stores them: offsets, applied as ``(1 + w)``.

Param tree::

    {"encoder": {"embed_tokens": {"embedding": [V, E]},
                 "layers_{i}": {"self_attn": {"q_proj": {"kernel": [E, Hq*D]}, "k_proj", "v_proj",
                                              "o_proj": {"kernel": [Hq*D, E]},
                                              "q_norm": {"weight": [D]}, "k_norm"},
                                "mlp": {"gate_proj", "up_proj": {"kernel": [E, F]},
                                        "down_proj": {"kernel": [F, E]}},
                                "input_layernorm", "post_attention_layernorm",
                                "pre_feedforward_layernorm", "post_feedforward_layernorm":
                                    {"weight": [E]}},
                 "norm": {"weight": [E]}},
     "dense_{k}": {"kernel": [in, out], ("bias": [out])}}
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tarka_jax.kernels import attention as attention_op
from tarka_jax.nn.config import LayerSpec, ModelConfig
from tarka_jax.nn.numerics import l2_normalize, matmul_precision, resolve_dtype
from tarka_jax.nn.scan_layers import layer_runs, scan_runs, stack_runs

__all__ = ["RMSNorm", "Linear", "rotary", "Attention", "MLP", "DecoderLayer", "Encoder",
           "EmbeddingModel", "mean_pool", "embed", "token_embeddings", "init_params",
           "resolve_dtype"]

Array = jax.Array


class RMSNorm(nn.Module):
    """Gemma RMSNorm in float32 with a (1 + w) scale; output in the input's dtype."""

    eps: float

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.zeros_init(), (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + w.astype(jnp.float32))).astype(x.dtype)


class Linear(nn.Module):
    """Bias-free projection with a ``[in, out]`` kernel, computed in ``dtype``."""

    features: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features), jnp.float32
        )
        return jnp.dot(x, kernel.astype(self.dtype), precision=matmul_precision(self.dtype))


def rotary(x: Array, positions: Array, theta: float, factor: float) -> Array:
    """Half-split RoPE (not interleaved), as HF's rotate_half.

    Args:
      x: [B, T, N, D]. positions: int32 [B, T]. factor: linear scaling (1 = none).
    """
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))  # [D/2]
    inv_freq = inv_freq / factor
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, D]
    cos = jnp.cos(angles).astype(x.dtype)
    sin = jnp.sin(angles).astype(x.dtype)
    half = d // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """GQA/MQA self-attention with q/k RMSNorm and RoPE; window and rope come from ``spec``."""

    config: ModelConfig  # shared sizes (heads, head_dim, hidden, eps, scale)
    spec: LayerSpec
    dtype: Any = jnp.float32
    attention: str | None = None  # implementation name (tarka_jax.kernels); None = best

    @nn.compact
    def __call__(self, x, segment_ids, positions):
        cfg = self.config
        b, t, _ = x.shape
        q = Linear(cfg.num_heads * cfg.head_dim, self.dtype, name="q_proj")(x)
        k = Linear(cfg.num_kv_heads * cfg.head_dim, self.dtype, name="k_proj")(x)
        v = Linear(cfg.num_kv_heads * cfg.head_dim, self.dtype, name="v_proj")(x)
        q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)  # [B, T, Hq, D]
        k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)  # [B, T, Hkv, D]
        v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)  # [B, T, Hkv, D]
        # Per-head norms over D, before RoPE; v is not normalised.
        q = RMSNorm(cfg.rms_norm_eps, name="q_norm")(q)
        k = RMSNorm(cfg.rms_norm_eps, name="k_norm")(k)
        q = rotary(q, positions, self.spec.rope_theta, self.spec.rope_factor)
        k = rotary(k, positions, self.spec.rope_theta, self.spec.rope_factor)
        out = attention_op(
            q, k, v, segment_ids,
            window=self.spec.window,
            scale=cfg.attention_scale,
            implementation=self.attention,
        )  # [B, T, Hq, D]
        out = out.reshape(b, t, cfg.num_heads * cfg.head_dim)
        return Linear(cfg.hidden_size, self.dtype, name="o_proj")(out)


class MLP(nn.Module):
    """Gated GELU (tanh) feed-forward: down(gelu(gate(x)) * up(x))."""

    config: ModelConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        gate = Linear(cfg.intermediate_size, self.dtype, name="gate_proj")(x)
        up = Linear(cfg.intermediate_size, self.dtype, name="up_proj")(x)
        # gelu_pytorch_tanh == tanh-approximate GELU (the erf form differs by ~5e-4).
        hidden = jax.nn.gelu(gate, approximate=True) * up
        return Linear(cfg.hidden_size, self.dtype, name="down_proj")(hidden)


class DecoderLayer(nn.Module):
    """Sandwich-norm block: four RMSNorms, attention then MLP, two residuals."""

    config: ModelConfig
    spec: LayerSpec
    dtype: Any = jnp.float32
    attention: str | None = None  # implementation name (tarka_jax.kernels); None = best

    @nn.compact
    def __call__(self, x, segment_ids, positions):
        eps = self.config.rms_norm_eps
        h = RMSNorm(eps, name="input_layernorm")(x)
        h = Attention(self.config, self.spec, self.dtype, self.attention,
                      name="self_attn")(h, segment_ids, positions)
        x = x + RMSNorm(eps, name="post_attention_layernorm")(h)
        h = RMSNorm(eps, name="pre_feedforward_layernorm")(x)
        h = MLP(self.config, self.dtype, name="mlp")(h)
        return x + RMSNorm(eps, name="post_feedforward_layernorm")(h)


class Encoder(nn.Module):
    """Token ids -> final-norm hidden states ``[B, T, E]`` (HF's last_hidden_state).

    ``scan_layers=True`` runs the layers under ``lax.scan`` (one traced and
    compiled body per layer type instead of one per layer; when it pays is in
    docs/compile.md); the parameter tree stays ``layers_{i}`` and the result
    equals the unrolled loop to float rounding.
    """

    config: ModelConfig
    dtype: Any = jnp.float32
    attention: str | None = None
    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(self, input_ids, segment_ids, positions):
        cfg = self.config
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype,
                         param_dtype=jnp.float32, name="embed_tokens")
        # HF multiplies by sqrt(E) cast to the weight dtype first (27.75 in bf16).
        x = embed(input_ids).astype(self.dtype) * jnp.asarray(
            math.sqrt(cfg.hidden_size), jnp.float32).astype(self.dtype)
        if self.scan_layers and not self.is_initializing():
            x = self._scanned_layers(x, segment_ids, positions)
        else:  # init always takes this path, so the tree is layers_{i} either way
            layer_cls = nn.remat(DecoderLayer) if self.remat else DecoderLayer
            for i in range(cfg.num_layers):
                x = layer_cls(cfg, cfg.layer(i), self.dtype, self.attention, name=f"layers_{i}")(
                    x, segment_ids, positions)
        return RMSNorm(cfg.rms_norm_eps, name="norm")(x)

    def _scanned_layers(self, x, segment_ids, positions):
        """The layer loop as tarka_jax.nn.scan_layers.scan_runs over this scope's layers_{i} params."""
        cfg = self.config
        stacked = stack_runs(self.variables["params"], cfg)  # a copy of the layer weights
        bodies = []
        for start, _ in layer_runs(cfg):
            # parent=None: a free module applied to explicit params, not a child of this scope.
            layer = DecoderLayer(cfg, cfg.layer(start), self.dtype, self.attention, parent=None)

            def body(x, p, layer=layer):
                return layer.apply({"params": p}, x, segment_ids, positions)
            # nn.remat's policy (save nothing); prevent_cse is unneeded inside a scan.
            bodies.append(jax.checkpoint(body, prevent_cse=False) if self.remat else body)
        return scan_runs(x, stacked, bodies)


def mean_pool(hidden: Array, segment_ids: Array, segments_per_row: int) -> Array:
    """Mean of each segment's tokens, in float32.

    Args:
      hidden: [B, T, E]. segment_ids: int32 [B, T], segments numbered 1..S, 0 = padding.

    Returns:
      [B, S, E]; a segment with no tokens gives zeros. Uses `where`, not a
      multiply, so a non-finite padding row can never leak in.
    """
    slots = jnp.arange(1, segments_per_row + 1, dtype=segment_ids.dtype)
    member = (segment_ids[:, None, :] == slots[None, :, None]).astype(jnp.float32)  # [B, S, T]
    # Zero padding rows with `where` first: 0 * NaN would still be NaN.
    hidden32 = jnp.where((segment_ids > 0)[..., None], hidden.astype(jnp.float32), 0.0)
    if segments_per_row == 1:
        # A plain sum: the same reduction order as sentence-transformers' pooling.
        sums = jnp.sum(jnp.where(member[:, 0, :, None] > 0, hidden32, 0.0), axis=1)[:, None]
    else:  # packed rows: a one-hot contraction, never a [B, S, T, E] intermediate
        sums = jnp.einsum("bst,bte->bse", member, hidden32,
                          precision=jax.lax.Precision.HIGHEST)  # [B, S, E]
    counts = jnp.sum(member, axis=-1)[..., None]  # [B, S, 1]
    return sums / jnp.maximum(counts, 1e-9)


class EmbeddingModel(nn.Module):
    """Encoder + mean pooling + Dense stack + optional L2 normalisation.

    ``normalize=False`` skips the L2 normalisation (``config.normalize``) and returns the
    head's output: what chunked "mean" embedding averages before normalising
    (tarka_jax.inference.chunked).
    """

    config: ModelConfig
    dtype: Any = jnp.float32
    attention: str | None = None
    remat: bool = False
    scan_layers: bool = False
    normalize: bool = True

    def setup(self):
        self.encoder = Encoder(self.config, self.dtype, self.attention, self.remat,
                               self.scan_layers)
        # A list attribute named `dense` gives params dense_0, dense_1, ...
        self.dense = [
            nn.Dense(spec.out_features, use_bias=spec.bias, dtype=self.dtype,
                     param_dtype=jnp.float32, precision=matmul_precision(self.dtype))
            for spec in self.config.dense
        ]

    def token_embeddings(self, input_ids, segment_ids, positions):
        return self.encoder(input_ids, segment_ids, positions)

    def __call__(self, input_ids, segment_ids, positions, segments_per_row: int = 1):
        hidden = self.encoder(input_ids, segment_ids, positions)  # [B, T, E]
        x = mean_pool(hidden, segment_ids, segments_per_row)  # [B, S, E] float32
        for spec, layer in zip(self.config.dense, self.dense):
            x = layer(x.astype(self.dtype))
            if spec.activation == "tanh":
                x = jnp.tanh(x)
        x = x.astype(jnp.float32)
        if self.config.normalize and self.normalize:
            x = l2_normalize(x)
        return x  # [B, S, dim] float32


def embed(params, batch, config: ModelConfig, *, dtype="float32", attention=None,
          segments_per_row: int = 1, remat: bool = False, scan_layers: bool = False,
          normalize: bool = True) -> Array:
    """Pure, differentiable sentence embeddings.

    Args:
      params: the param tree (``{"encoder": ..., "dense_0": ...}``) as
        :func:`tarka_jax.load` returns it.
      batch: mapping with int32 ``input_ids``, ``segment_ids``, ``positions``,
        each ``[B, T]``.
      config: the model's :class:`ModelConfig` (static).
      dtype: compute dtype, "float32" or "bfloat16" (norms, softmax, pooling and
        normalisation stay float32).
      attention: attention implementation name or None (best for the platform).
      segments_per_row: S, how many packed texts a row may hold (1 = unpacked).
      remat: recompute each layer in the backward pass (saves activation memory).
      scan_layers: run the layers under ``lax.scan`` (static): one traced and
        compiled body per layer type instead of 24 layers; equal to the
        unrolled loop to float rounding. Off by default: on XLA:CPU it cuts
        tracing, not compiling, and each call pays for stacking the layer
        weights (measurements in docs/compile.md).
      normalize: apply the model's L2 normalisation (when ``config.normalize``); False
        returns the head's output before it (static).

    Returns:
      float32 ``[B, S, dim]``. Works under jit, grad and vmap.
    """
    model = EmbeddingModel(config, resolve_dtype(dtype), attention, remat, scan_layers,
                           normalize)
    return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                       batch["positions"], segments_per_row)


def token_embeddings(params, batch, config: ModelConfig, *, dtype="float32",
                     attention=None, scan_layers: bool = False) -> Array:
    """The backbone's last hidden state ``[B, T, E]`` (before pooling); options as :func:`embed`."""
    model = EmbeddingModel(config, resolve_dtype(dtype), attention, scan_layers=scan_layers)
    return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                       batch["positions"], method=EmbeddingModel.token_embeddings)


def init_params(config: ModelConfig, rng: Array, seq_len: int = 8):
    """Random parameters with the right tree and shapes (norm weights random too)."""
    model = EmbeddingModel(config)
    ids = jnp.zeros((1, seq_len), jnp.int32)
    seg = jnp.ones((1, seq_len), jnp.int32)
    pos = jnp.arange(seq_len, dtype=jnp.int32)[None]
    params = model.init(rng, ids, seg, pos)["params"]
    return params
