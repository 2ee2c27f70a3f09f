"""Contrastive fine-tuning on (anchor, positive[, negative...]) pairs, a client of
:mod:`tarka_jax.train`.

Modules: ``loss`` (MNRL, Matryoshka, GradCache), ``data`` (pair files -> batches
without duplicate texts, resumable), ``config`` (its TOML tables), ``step`` (the jitted
step's loss), ``run`` (``prepare`` and the core's client), ``cli``. The loop, the run folder,
checkpoints, optimizer and metrics are the training core's; nothing here imports
:mod:`tarka_jax.distill`.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
