"""Config parsing: transformers 5.x semantics for rope, layer types and the window."""

from __future__ import annotations

import pytest

from tarka_jax.nn.config import (
    FULL,
    SLIDING,
    ConfigError,
    ModelConfig,
    backbone_from_hf,
    embeddinggemma_300m,
    tarka_150m,
)

BASE = {
    "model_type": "gemma3_text", "vocab_size": 100, "hidden_size": 48, "intermediate_size": 56,
    "num_hidden_layers": 7, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
    "query_pre_attn_scalar": 10, "sliding_window": 512, "use_bidirectional_attention": True,
}


def _config(**extra) -> ModelConfig:
    return ModelConfig(**backbone_from_hf({**BASE, **extra}))


def test_legacy_rope_keys():
    cfg = _config(rope_theta=123.0, rope_local_base_freq=45.0)
    assert (cfg.rope_theta_full, cfg.rope_theta_sliding) == (123.0, 45.0)


def test_nested_rope_parameters():
    cfg = _config(rope_parameters={FULL: {"rope_type": "linear", "rope_theta": 7.0, "factor": 8.0},
                                   SLIDING: {"rope_type": "default", "rope_theta": 3.0}})
    assert (cfg.rope_theta_full, cfg.rope_scaling_full) == (7.0, 8.0)
    assert (cfg.rope_theta_sliding, cfg.rope_scaling_sliding) == (3.0, 1.0)


def test_unknown_rope_type_is_refused():
    with pytest.raises(ConfigError, match="yarn"):
        _config(rope_parameters={FULL: {"rope_type": "yarn", "rope_theta": 1.0},
                                 SLIDING: {"rope_type": "default", "rope_theta": 1.0}})


def test_layer_types_from_pattern():
    cfg = _config(sliding_window_pattern=3)
    assert cfg.layer_types == (SLIDING, SLIDING, FULL, SLIDING, SLIDING, FULL, SLIDING)
    assert _config().layer_types[5] == FULL  # default pattern 6


def test_window_convention_serialised_value_kept():
    cfg = _config()
    assert cfg.sliding_window == 512
    sliding = cfg.layer_types.index(SLIDING)
    assert cfg.window_for(sliding) == (256, 256)
    assert cfg.window_for(cfg.layer_types.index(FULL)) is None
    assert cfg.to_hf()["sliding_window"] == 512


@pytest.mark.torch
@pytest.mark.parametrize("sw", [7, 8, 512])
def test_window_matches_transformers(sw):
    """transformers attends where |q-k| < its post-init window; ours is that minus one, inclusive."""
    from transformers import Gemma3TextConfig

    hf = Gemma3TextConfig(**{**BASE, "sliding_window": sw})
    cfg = _config(sliding_window=sw)
    assert cfg.window_for(0) == (hf.sliding_window - 1, hf.sliding_window - 1)


@pytest.mark.torch
def test_to_hf_round_trips_through_transformers():
    from transformers import Gemma3TextConfig

    cfg = tarka_150m()
    hf = Gemma3TextConfig(**cfg.to_hf())
    again = ModelConfig(**backbone_from_hf(hf.to_dict()), dense=cfg.dense, normalize=cfg.normalize)
    assert again == cfg


def test_presets_have_the_published_parameter_counts():
    import jax
    import numpy as np

    from tarka_jax.nn.encoder import init_params

    for preset, total in ((tarka_150m, 155_714_304),
                          (embeddinggemma_300m, 307_581_696)):
        shapes = jax.eval_shape(lambda: init_params(preset(), jax.random.key(0)))
        count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
        assert count == total


@pytest.mark.parametrize("edit, message", [
    ({"use_bidirectional_attention": False}, "causal"),
    ({"final_logit_softcapping": 30.0}, "soft-capping"),
    ({"num_key_value_heads": 3}, "multiple"),
    ({"hidden_size": "big"}, "malformed"),
])
def test_bad_configs(edit, message):
    with pytest.raises(ConfigError, match=message):
        _config(**edit)


def test_missing_required_key_is_named():
    broken = dict(BASE)
    del broken["hidden_size"]
    with pytest.raises(ConfigError, match="hidden_size"):
        backbone_from_hf(broken)


def test_config_dict_round_trip():
    cfg = tarka_150m()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "surprise": 1})


@pytest.mark.torch
def test_all_full_attention_config_loads_in_transformers():
    from transformers import Gemma3TextConfig

    cfg = tarka_150m().replace(layer_types=(FULL,) * 24, sliding_window=None)
    hf = Gemma3TextConfig(**cfg.to_hf())  # transformers halves sliding_window: never null
    assert ModelConfig(**backbone_from_hf(hf.to_dict())).layer_types == (FULL,) * 24


@pytest.mark.parametrize("make", [lambda: _config(), tarka_150m,
                                  lambda: _config(layer_types=["full_attention"] * 7)])
def test_expected_shapes_equal_the_full_init(make):
    """The one-layer shortcut of ``expected_shapes`` gives exactly the whole model's tree."""
    import jax

    from tarka_jax.convert.mapping import expected_shapes
    from tarka_jax.nn.encoder import init_params

    cfg = make()
    tree = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    full = {tuple(k.key for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    assert expected_shapes(cfg) == full
