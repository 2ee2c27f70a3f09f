"""What only tests, notebooks, examples and tools use; runtime code never imports it.

* :mod:`~tarka_jax.testing.reference` -- random-weight reference checkpoints built with the real
  PyTorch stack (transformers + sentence-transformers);
* :mod:`~tarka_jax.testing.wordpiece` -- small deterministic word-piece tokenizers;
* :mod:`~tarka_jax.testing.tiny` -- tiny random models of our architecture;
* :mod:`~tarka_jax.testing.demo` -- the offline docstring corpus and the demo student;
* :mod:`~tarka_jax.testing.notebook` -- what the notebooks call.
"""
