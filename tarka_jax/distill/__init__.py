"""Sharded distillation: a teacher and a student of our architecture in one jitted step.

Modules: ``config`` (TOML schema), ``loss``, ``optim``, ``sharding`` (mesh and
the logical-axis rules table), ``step`` (state + jitted train step), ``data``
(resumable raw-text batches), ``checkpointing`` (orbax run folder), ``metrics``,
``export`` (:func:`load_run_step`), ``run`` (the loop), ``cli``.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
