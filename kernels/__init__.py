"""Attention kernels for tarka-jax: one public function, several implementations.

The package directory is ``kernels/`` in the repository and installs as
``tarka_jax.kernels`` (see pyproject.toml). It imports nothing from the model.
"""

from tarka_jax.kernels.dispatch import (
    IMPLEMENTATIONS,
    attention,
    available_implementations,
    check_implementation_name,
    preferred_implementations,
)

__all__ = [
    "IMPLEMENTATIONS",
    "attention",
    "available_implementations",
    "check_implementation_name",
    "preferred_implementations",
]
