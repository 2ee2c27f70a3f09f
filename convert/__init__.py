"""HF / sentence-transformers / Flax / run folders: every on-disk model format, in one package.

Installed as ``tarka_jax.convert`` (the repository folder is ``convert/``).

* :mod:`~tarka_jax.convert.mapping` — the one key table (Flax path <-> HF key, transposes);
* :mod:`~tarka_jax.convert.safetensors_io` — safetensors read (single, sharded) / write;
* :mod:`~tarka_jax.convert.st_folder` — sentence-transformers folders (modules, Pooling, Dense);
* :mod:`~tarka_jax.convert.flax_folder` — the tarka-jax Flax folder;
* :mod:`~tarka_jax.convert.run_folder` — reading a step out of a distillation run folder;
* :mod:`~tarka_jax.convert.sources` — :func:`open_model`: what a path or id is, loaded;
* ``hf_to_flax`` / ``flax_to_hf`` — the converters (``python convert/hf_to_flax.py``,
  ``python -m tarka_jax.convert.hf_to_flax``, ``tarka-jax convert hf-to-flax``).

Nothing here imports training code.
"""

from tarka_jax.convert.mapping import CheckpointMismatch
from tarka_jax.convert.sources import Checkpoint, open_model

__all__ = ["Checkpoint", "CheckpointMismatch", "open_model"]
