"""Sharded distillation: a student pulled towards a teacher, a client of :mod:`tarka_jax.train`.

Modules: ``config`` (its TOML tables), ``loss``, ``step`` (the loss and gradient
accumulation of the jitted step), ``data`` (paired student/teacher batches), ``run``
(``prepare`` and the core's client), ``teacher_cache`` (reading a cache), ``surgery``
(output width, fresh layers), ``export`` (:func:`load_run_step`), ``cli``. The loop, the
run folder, checkpoints, optimizer and metrics are the training core's. Nothing here
imports :mod:`tarka_jax.finetune` or :mod:`tarka_jax.recipe`.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
