"""The training core that distillation and fine-tuning are both clients of.

``loop`` (``run(client, workdir)``: the prologue, the loop, checkpoints, the stop on a
signal), ``config`` (the TOML tables both loops share), ``state`` / ``step`` / ``optim`` /
``sharding`` (the sharded state, the update after a loss, AdamW, meshes), ``run_files`` /
``checkpointing`` / ``resume_check`` / ``fingerprint`` (the run folder, what a run owns,
an honest resume), ``stop`` (SIGINT / SIGTERM), ``command`` (the shared command line),
``metrics``, ``data`` (the one reader of training data files) and ``heldout`` (evaluation
hooks). Nothing here imports :mod:`tarka_jax.distill` or :mod:`tarka_jax.finetune`.
Importing this package imports nothing heavy; pull in the submodule you need.
"""
