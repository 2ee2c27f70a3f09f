"""``tarka-jax serve``: an OpenAI- and TEI-compatible embedding server (the ``serve`` extra).

* :mod:`~tarka_jax.serve.cli` -- the flags; loads the model and runs uvicorn;
* :mod:`~tarka_jax.serve.app` -- the ASGI app: errors, API key, metrics, start-up and drain;
* :mod:`~tarka_jax.serve.routes` -- the routes and their JSON bodies;
* :mod:`~tarka_jax.serve.schemas` -- request bodies, checked; :mod:`~tarka_jax.serve.apierrors`
  -- the error bodies (TEI's shape);
* :mod:`~tarka_jax.serve.service` -- admission, prompts, waiting, finishing a request;
* :mod:`~tarka_jax.serve.tokens` -- request texts -> token ids (TEI's truncation rules);
* :mod:`~tarka_jax.serve.engine` -- the batching loop over every waiting request;
* :mod:`~tarka_jax.serve.device` -- the Embedder's planner, placement and programs, warmed up;
* :mod:`~tarka_jax.serve.metrics` -- the Prometheus metrics.

Nothing here is imported by ``import tarka_jax``: the extra's libraries load only for
``tarka-jax serve`` (docs/serve.md).
"""
