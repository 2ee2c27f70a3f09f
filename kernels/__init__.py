"""Attention kernels for tarka-jax: one public function, several implementations.

The package directory is ``kernels/`` in the repository and installs as
``tarka_jax.kernels`` (see pyproject.toml). It imports nothing from the model.
Imported as a top-level ``kernels`` (the repository root on ``sys.path``), it steps aside for
the ``kernels`` package installed elsewhere (Hugging Face's): see ``_not_top_level.py``.
"""

if __name__ == "kernels":  # pragma: no cover - exercised by tests/test_kernels_name.py
    from kernels._not_top_level import hand_over, missing

    if not hand_over():
        __getattr__ = missing
else:
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
