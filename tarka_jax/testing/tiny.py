"""Tiny random-weight teacher/student Flax folders for the example config and the tests.

No torch needed: params come from :func:`tarka_jax.nn.encoder.init_params` (with the
RMSNorm offsets randomised), tokenizers from :func:`tarka_jax.testing.wordpiece.train_tokenizer`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import numpy as np

from tarka_jax.convert.flax_folder import save_flax_folder
from tarka_jax.convert.st_folder import SentenceTransformerMeta
from tarka_jax.nn.config import DenseSpec, ModelConfig, layer_types_pattern
from tarka_jax.nn.encoder import init_params
from tarka_jax.testing.wordpiece import train_tokenizer, write_tokenizer_config


def tiny_config(vocab: int, hidden: int, layers: int, dense: tuple[int, ...]) -> ModelConfig:
    widths = (hidden, *dense)
    return ModelConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden + 8, num_layers=layers,
        num_heads=4, num_kv_heads=2, head_dim=12, query_pre_attn_scalar=12,
        layer_types=layer_types_pattern(layers, 3),
        sliding_window=16, max_position_embeddings=512,
        dense=tuple(DenseSpec(a, b) for a, b in zip(widths, widths[1:])), normalize=True)


def write_model(out_dir: str, config: ModelConfig, seed: int) -> None:
    # A private temporary folder (``OUT_tok`` beside OUT used to be emptied: a user's too).
    tok_dir = tempfile.mkdtemp(prefix=".tarka-tiny-tok-")
    try:
        _write_model(out_dir, config, seed, tok_dir)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)  # ours alone: made by mkdtemp above


def _write_model(out_dir: str, config: ModelConfig, seed: int, tok_dir: str) -> None:
    train_tokenizer(config.vocab_size, tok_dir)
    write_tokenizer_config(tok_dir, 64)
    params = jax.device_get(init_params(config, jax.random.key(seed)))
    # init_params leaves the RMSNorm offsets at 0: randomise them, as a trained model's are.
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
        if p[-1].key == "weight" else x, params)
    meta = SentenceTransformerMeta(prompts={}, default_prompt_name=None, max_seq_length=64)
    from tarka_jax.files.outputs import output_folder

    with output_folder(out_dir, force=True, kind="tiny-model") as tmp:  # replaces only ours
        save_flax_folder(tmp, config, params, meta, tok_dir)


def write_tiny_models(out: str) -> tuple[str, str]:
    """Write ``out/teacher`` and ``out/student``; returns their paths."""
    write_model(os.path.join(out, "teacher"), tiny_config(307, 64, 3, (40, 24)), seed=1)
    write_model(os.path.join(out, "student"), tiny_config(211, 48, 2, (24,)), seed=2)
    return os.path.join(out, "teacher"), os.path.join(out, "student")
