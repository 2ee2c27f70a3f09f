"""Older import path of the checkpoint readers and writers; they live in :mod:`tarka_jax.convert`.

New code imports from ``tarka_jax.convert`` (``open_model``) or its modules
(``st_folder``, ``flax_folder``, ``safetensors_io``, ``sources``).
"""

from tarka_jax.convert.flax_folder import (FLAX_CONFIG_FILE, FLAX_PARAMS_FILE, is_flax_folder,
                                           load_flax_folder, save_flax_folder)
from tarka_jax.convert.mapping import CheckpointMismatch
from tarka_jax.convert.safetensors_io import read_safetensors, read_safetensors_folder
from tarka_jax.convert.sources import (BUILTIN_DIR, BUILTIN_PREFIX, Checkpoint, builtin_folder,
                                       builtin_models, open_model, resolve_folder)
from tarka_jax.convert.st_folder import (TOKENIZER_FILES, SentenceTransformerMeta,
                                         copy_tokenizer_files, load_hf_folder,
                                         save_sentence_transformers)

load_checkpoint = open_model

__all__ = ["FLAX_CONFIG_FILE", "FLAX_PARAMS_FILE", "BUILTIN_DIR", "BUILTIN_PREFIX", "Checkpoint",
           "CheckpointMismatch", "SentenceTransformerMeta", "TOKENIZER_FILES", "builtin_folder",
           "builtin_models", "copy_tokenizer_files", "is_flax_folder", "load_checkpoint",
           "load_flax_folder", "load_hf_folder", "open_model", "read_safetensors",
           "read_safetensors_folder", "resolve_folder", "save_flax_folder",
           "save_sentence_transformers"]
