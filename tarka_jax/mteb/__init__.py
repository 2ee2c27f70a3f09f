"""MTEB (``pip install mteb``, 2.x) for tarka-jax models.

* :mod:`~tarka_jax.mteb.encoder` -- :class:`TarkaEncoder`, mteb's encoder protocol over an Embedder;
* :mod:`~tarka_jax.mteb.cli` -- ``tarka-jax mteb``.

``from tarka_jax.mteb import TarkaEncoder`` imports mteb then, not before: ``tarka-jax mteb
--help`` and this package's import work without the extra, and a missing extra is one error
naming the ``pip install`` line.
"""

__all__ = ["TarkaEncoder"]


def __getattr__(name: str):
    if name == "TarkaEncoder":
        from tarka_jax.mteb.encoder import TarkaEncoder

        return TarkaEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
