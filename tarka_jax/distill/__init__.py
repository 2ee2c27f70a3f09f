"""Sharded distillation: a teacher and a student of our architecture in one jitted step.

Modules: ``config`` (TOML schema), ``loss``, ``optim``, ``sharding`` (mesh and
the logical-axis rules table), ``step`` (state + jitted train step), ``data``
(resumable raw-text batches), ``checkpointing`` (orbax run folder), ``metrics``
(logging and teacher agreement), ``teacher_cache`` (reading a cache), ``surgery``
(output width, fresh layers), ``export`` (:func:`load_run_step`), ``run`` (the
loop), ``tiny`` (random tiny models), ``cli``. Nothing here imports
:mod:`tarka_jax.recipe`.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
