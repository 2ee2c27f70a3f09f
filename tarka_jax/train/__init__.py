"""The training core that distillation and fine-tuning are both clients of.

Mesh and shardings (``sharding``), optimizer (``optim``), orbax checkpoints of a run folder
(``checkpointing``), the resume check (``resume_check``), per-step metrics (``metrics``) and the
held-out evaluation hooks (``heldout``). Nothing here imports :mod:`tarka_jax.distill` or
:mod:`tarka_jax.finetune`.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
