"""Layer-level parity with the transformers Gemma 3 modules, and the attention masks as literals.

Each test builds one HF module (``Gemma3RMSNorm``, ``Gemma3RotaryEmbedding``,
``Gemma3MLP``, ``Gemma3Attention``, ``Gemma3DecoderLayer``) with random weights,
copies the same weights into the one tarka-jax layer, and compares outputs on
the same inputs. So a RoPE, norm or mask bug shows up here, named, instead of
as "embeddings differ".

Tolerances: these outputs are unnormalised, so they are compared relative to
their own scale (``scale_relative_error``, docs/numerics.md); measured values
are noted at each bound.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tarka_jax.kernels import attention
from tarka_jax.nn.config import LayerSpec, ModelConfig
from tarka_jax.nn.encoder import MLP, Attention, DecoderLayer, RMSNorm, rotary
from tarka_jax.testing.reference import scale_relative_error

B, T = 2, 12
REAL = (12, 7)  # real tokens per row: row 1 is right-padded, and its tail queries see no key


# ---- literal masks (no torch) ---------------------------------------------------------------


def _who_sees_whom(segment_ids, window):
    """allowed[i, j] read back from the "xla" implementation: with q = k = 0 every allowed key
    gets the same weight, and v = identity makes output row i that weight on each key j."""
    t = len(segment_ids)
    q = jnp.zeros((1, t, 1, t), jnp.float32)
    v = jnp.eye(t, dtype=jnp.float32)[None, :, None, :]  # key j carries e_j
    seg = jnp.asarray([segment_ids], jnp.int32)
    out = np.asarray(attention(q, q, v, seg, window=window, implementation="xla"))[0, :, 0]
    return (out > 0).astype(int)


# name -> (segment_ids, window, allowed[i, j] written out by hand from the contract:
#          seg[i] == seg[j] != 0 and -left <= j - i <= right)
MASKS = {
    "full_two_segments_and_padding": ([1, 1, 2, 2, 2, 0], None, [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0]]),
    "window_1_1_cut_by_segments": ([1, 1, 1, 2, 2, 0], (1, 1), [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0]]),
    "window_2_0_left_only": ([1, 1, 1, 1, 0, 0], (2, 0), [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0]]),
    # HF's serialised sliding_window 4 -> |q - k| < 3 -> inclusive (2, 2) (docs/attention.md)
    "hf_window_4_is_2_2": ([1, 1, 1, 1, 1, 1], (2, 2), [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 1]]),
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_attention_mask_matches_the_literal_matrix(name):
    segment_ids, window, expected = MASKS[name]
    assert _who_sees_whom(segment_ids, window).tolist() == expected


def test_layer_spec_window_follows_the_hf_convention():
    from tarka_jax.nn.config import FULL, SLIDING

    cfg = ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=2,
                      num_heads=1, num_kv_heads=1, head_dim=8, query_pre_attn_scalar=8,
                      layer_types=(SLIDING, FULL), sliding_window=4)
    assert cfg.layer(0) == LayerSpec(SLIDING, (2, 2), cfg.rope_theta_sliding, 1.0)
    assert cfg.layer(1) == LayerSpec(FULL, None, cfg.rope_theta_full, 1.0)


# ---- parity with the HF modules (torch) -----------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    """(HF config, our ModelConfig from its config.json, inputs) for a 2-layer GQA model."""
    pytest.importorskip("torch")
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=32, hidden_size=40, intermediate_size=52, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, query_pre_attn_scalar=10,
        layer_types=["sliding_attention", "full_attention"], sliding_window=6,
        max_position_embeddings=64, use_bidirectional_attention=True,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "linear", "rope_theta": 1e6,
                                            "factor": 4.0}},
        attn_implementation="eager")
    ours = ModelConfig.from_hf(config.to_dict())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, config.hidden_size)).astype(np.float32)
    seg = np.zeros((B, T), np.int32)
    for r, n in enumerate(REAL):
        seg[r, :n] = 1
    pos = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
    return config, ours, x, seg, pos


def _randomise(module, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _linear(m):
    return {"kernel": m.weight.detach().numpy().T}


def _norm(m):
    return {"weight": m.weight.detach().numpy()}


def _attn_params(a):
    return {n: _linear(getattr(a, n)) for n in ("q_proj", "k_proj", "v_proj", "o_proj")} | {
        "q_norm": _norm(a.q_norm), "k_norm": _norm(a.k_norm)}


def _mlp_params(m):
    return {n: _linear(getattr(m, n)) for n in ("gate_proj", "up_proj", "down_proj")}


def _hf_mask_and_rope(config, x, seg, pos, layer_type):
    """HF's own mask (as Gemma3TextModel builds it) and rotary (cos, sin) for one layer type."""
    import torch
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    from transformers.models.gemma3.modeling_gemma3 import (
        Gemma3RotaryEmbedding,
        _bidirectional_window_overlay,
    )

    embeds = torch.tensor(x)
    kwargs = {"config": config, "inputs_embeds": embeds, "attention_mask": torch.tensor(seg),
              "cache": None, "position_ids": torch.tensor(pos[:1], dtype=torch.long)}
    if layer_type == "full_attention":
        mask = create_causal_mask(**kwargs, or_mask_function=lambda *a: torch.tensor(True))
    else:
        mask = create_sliding_window_causal_mask(
            **kwargs, or_mask_function=_bidirectional_window_overlay(config.sliding_window))
    rope = Gemma3RotaryEmbedding(config)(embeds, torch.tensor(pos, dtype=torch.long), layer_type)
    return mask, rope


@pytest.mark.torch
def test_rmsnorm_matches_gemma3_rmsnorm(hf):
    import torch
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    config, ours, x, _, _ = hf
    ref_mod = Gemma3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    _randomise(ref_mod, 1)  # non-zero offsets: a port without (1 + w) would fail
    with torch.no_grad():
        ref = ref_mod(torch.tensor(x)).numpy()
    out = RMSNorm(ours.rms_norm_eps).apply({"params": _norm(ref_mod)}, jnp.asarray(x))
    assert scale_relative_error(out, ref) <= 1e-6  # measured 1.6e-7


@pytest.mark.torch
@pytest.mark.parametrize("layer", [0, 1])  # default RoPE (theta 1e4), linear RoPE (1e6, factor 4)
def test_rotary_matches_gemma3_rotary_embedding(hf, layer):
    import torch
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    config, ours, _, _, pos = hf
    spec = ours.layer(layer)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((B, T, 3, config.head_dim)).astype(np.float32)  # [B, T, N, D]
    cos, sin = _hf_mask_and_rope(config, np.zeros((B, T, config.hidden_size), np.float32),
                                 np.ones((B, T), np.int32), pos, config.layer_types[layer])[1]
    qt = torch.tensor(q).transpose(1, 2)  # HF: [B, N, T, D]
    ref, _ = apply_rotary_pos_emb(qt, qt, cos, sin)
    out = rotary(jnp.asarray(q), jnp.asarray(pos), spec.rope_theta, spec.rope_factor)
    # Angles up to T * 1 rad: sin/cos of float32 arguments, ~1e-7 relative each.
    assert scale_relative_error(out, ref.transpose(1, 2).numpy()) <= 1e-5  # measured 8e-8


@pytest.mark.torch
def test_mlp_matches_gemma3_mlp(hf):
    import torch
    from transformers.models.gemma3.modeling_gemma3 import Gemma3MLP

    config, ours, x, _, _ = hf
    ref_mod = Gemma3MLP(config)
    _randomise(ref_mod, 3)
    with torch.no_grad():
        ref = ref_mod(torch.tensor(x)).numpy()
    out = MLP(ours).apply({"params": _mlp_params(ref_mod)}, jnp.asarray(x))
    assert scale_relative_error(out, ref) <= 1e-5  # measured 9e-8


def _real(a):
    """Real-token rows only: HF computes padding queries (garbage), we return zeros."""
    return np.concatenate([np.asarray(a)[r, :n] for r, n in enumerate(REAL)])


@pytest.mark.torch
# layer 0: sliding, window (3, 3), the padding tail sees no key; layer 1: full
@pytest.mark.parametrize("layer", [0, 1])
def test_attention_matches_gemma3_attention(hf, layer):
    import torch
    from transformers.models.gemma3.modeling_gemma3 import Gemma3Attention

    config, ours, x, seg, pos = hf
    ref_mod = Gemma3Attention(config, layer).eval()
    _randomise(ref_mod, 4 + layer)
    mask, rope = _hf_mask_and_rope(config, x, seg, pos, config.layer_types[layer])
    with torch.no_grad():
        ref = ref_mod(torch.tensor(x), position_embeddings=rope, attention_mask=mask)[0].numpy()
    module = Attention(ours, ours.layer(layer), attention="xla")  # built alone
    out = module.apply({"params": _attn_params(ref_mod)}, jnp.asarray(x), jnp.asarray(seg),
                       jnp.asarray(pos))
    assert scale_relative_error(_real(out), _real(ref)) <= 1e-5  # measured 2-3e-7


@pytest.mark.torch
@pytest.mark.parametrize("layer", [0, 1])
def test_decoder_layer_matches_gemma3_decoder_layer(hf, layer):
    import torch
    from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer

    config, ours, x, seg, pos = hf
    ref_mod = Gemma3DecoderLayer(config, layer).eval()
    _randomise(ref_mod, 6 + layer)
    mask, rope = _hf_mask_and_rope(config, x, seg, pos, config.layer_types[layer])
    with torch.no_grad():
        ref = ref_mod(torch.tensor(x), position_embeddings=rope, attention_mask=mask).numpy()
    params = {"self_attn": _attn_params(ref_mod.self_attn), "mlp": _mlp_params(ref_mod.mlp)}
    for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                 "post_feedforward_layernorm"):
        params[name] = _norm(getattr(ref_mod, name))
    module = DecoderLayer(ours, ours.layer(layer), attention="xla")
    out = module.apply({"params": params}, jnp.asarray(x), jnp.asarray(seg), jnp.asarray(pos))
    assert scale_relative_error(_real(out), _real(ref)) <= 1e-5  # measured 3-5e-7
