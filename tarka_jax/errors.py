"""The one base class of the errors tarka-jax raises on bad input.

Every error a user can cause (a bad config, a mis-shaped checkpoint, a corrupt
file, a wrong option) is a :class:`TarkaError`. It subclasses ``ValueError`` so
code written against the older, base-less errors keeps catching them.
"""

from __future__ import annotations


class TarkaError(ValueError):
    """Bad input to tarka-jax: the message names the file, key or option at fault."""


class ConfigError(TarkaError):
    """A config (``config.json``, a module config, a tarka-jax config) we cannot parse or serve."""


class UsageError(TarkaError):
    """An argument or option out of range, unsupported, or combined with one it excludes."""


class InputTypeError(TarkaError, TypeError):
    """An argument of the wrong type (still a ``TypeError`` for code that catches that)."""
