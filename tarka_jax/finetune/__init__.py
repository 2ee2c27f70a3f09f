"""Contrastive fine-tuning on (anchor, positive[, negative...]) pairs, in the sharded loop.

Modules: ``loss`` (MNRL, Matryoshka, GradCache), ``data`` (pair files -> batches
without duplicate texts, resumable), ``config`` (TOML schema), ``step`` (the
jitted step on the distillation loop's state), ``run`` (the loop), ``cli``.
Built on :mod:`tarka_jax.distill` (mesh and sharding rules, optimizer, state,
checkpoints, metrics); distillation never imports this package.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
