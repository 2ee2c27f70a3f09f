"""Weight converters between HF / sentence-transformers folders and tarka-jax Flax folders.

Installed as ``tarka_jax.convert`` (the repository folder is ``convert/``).
``mapping`` holds the one key table; ``hf_to_flax`` and ``flax_to_hf`` are the
CLIs (``python convert/hf_to_flax.py ...`` or ``python -m tarka_jax.convert.hf_to_flax``).
"""
