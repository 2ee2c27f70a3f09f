"""How tarka-jax runs as a process: the subcommand protocol, several processes, programs kept on disk.

* :mod:`~tarka_jax.runtime.command` -- what a ``tarka-jax`` subcommand is (:class:`Command`) and how
  one runs (one-line errors, exit 2);
* :mod:`~tarka_jax.runtime.distributed` -- ``jax.distributed`` start-up from flags or the environment;
* :mod:`~tarka_jax.runtime.compile_cache` -- JAX's persistent compilation cache under the user's cache;
* :mod:`~tarka_jax.runtime.program_cache` -- traced forward programs kept with ``jax.export``;
* :mod:`~tarka_jax.runtime.extras` -- optional packages: a missing one names its ``pip install``.

Knows nothing of the model: every layer above may use it (docs/layout.md).
"""
