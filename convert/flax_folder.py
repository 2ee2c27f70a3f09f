"""tarka-jax Flax folders (what ``convert/hf_to_flax.py`` writes).

    flax_params.safetensors   keys are Flax paths (``encoder/layers_0/mlp/up_proj/kernel``),
                              mmap-able, no tensorstore needed
    tarka_jax_config.json     {"format": "tarka-jax", "version": 1, "model": ModelConfig.to_dict()}
    tokenizer files, config_sentence_transformers.json, sentence_bert_config.json

Loading checks every parameter's path and shape against the config directly
(:func:`tarka_jax.convert.mapping.check_params`); nothing goes through the HF key table.
"""

from __future__ import annotations

import os

from tarka_jax.convert.mapping import check_params
from tarka_jax.convert.safetensors_io import (
    cast,
    flatten_params,
    read_safetensors,
    unflatten_params,
    write_safetensors,
)
from tarka_jax.convert.st_folder import SentenceTransformerMeta, copy_tokenizer_files
from tarka_jax.files.jsonfiles import read_json, write_json
from tarka_jax.nn.config import ConfigError, ModelConfig

FLAX_PARAMS_FILE = "flax_params.safetensors"
FLAX_CONFIG_FILE = "tarka_jax_config.json"
FLAX_FORMAT = "tarka-jax"
FLAX_FORMAT_VERSION = 1


def is_flax_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, FLAX_CONFIG_FILE))


def load_flax_folder(folder: str) -> tuple[ModelConfig, dict]:
    """Config and params (stored dtype) of a Flax folder; strict on names and shapes."""
    meta = read_json(os.path.join(folder, FLAX_CONFIG_FILE), FLAX_CONFIG_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FLAX_FORMAT or "model" not in meta:
        raise ConfigError(f"{FLAX_CONFIG_FILE} in {folder} is not a tarka-jax config")
    config = ModelConfig.from_dict(meta["model"])
    params = unflatten_params(read_safetensors(os.path.join(folder, FLAX_PARAMS_FILE)))
    check_params(params, config, source=f"Flax folder {folder}")
    return config, params


def save_flax_folder(out_dir: str, config: ModelConfig, params, meta: SentenceTransformerMeta,
                     tokenizer_folder: str | None, *, dtype: str = "keep") -> None:
    """Write a tarka-jax Flax folder (checked against the config before anything is written)."""
    check_params(params, config)
    os.makedirs(out_dir, exist_ok=True)
    flat = {k: cast(v, dtype) for k, v in flatten_params(params).items()}
    write_safetensors(flat, os.path.join(out_dir, FLAX_PARAMS_FILE))
    write_json(os.path.join(out_dir, FLAX_CONFIG_FILE),
               {"format": FLAX_FORMAT, "version": FLAX_FORMAT_VERSION, "model": config.to_dict()})
    meta.write(out_dir)
    copy_tokenizer_files(tokenizer_folder, out_dir)
