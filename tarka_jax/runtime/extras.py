"""Optional packages (the extras): a missing one is one error naming its ``pip install`` line.

``tarka-jax embed`` needs none of them; ``tarka-jax mteb`` needs mteb, ``.parquet`` input
pyarrow, ``logging.tensorboard`` tensorboardX, ``cache-teacher --backend torch``
sentence-transformers. Each imports it through :func:`require` where it is first needed,
so the message says what to install instead of ``No module named 'mteb'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tarka_jax.errors import TarkaError

_TORCH_FIRST = " (after a CPU torch: see the README's install section)"
#: top-level module -> how to install it
INSTALL = {
    "mteb": "pip install 'tarka-jax[mteb]'" + _TORCH_FIRST,
    "pyarrow": "pip install pyarrow",
    "tensorboardX": "pip install tensorboardX",
    "sentence_transformers": "pip install 'tarka-jax[torch-teacher]'" + _TORCH_FIRST,
    "torch": "pip install torch (a CPU build: see the README's install section)",
}


class MissingExtraError(TarkaError, ImportError):
    """An optional package a feature needs is not installed (or fails to import)."""


def require(module: str, feature: str) -> ModuleType:
    """``import module``, or a MissingExtraError: ``FEATURE needs MODULE: pip install ...``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        raise MissingExtraError(f"{feature} needs the {root} package, which is not installed "
                                f"({e}): {INSTALL.get(root, 'pip install ' + root)}") from None


__all__ = ["INSTALL", "MissingExtraError", "require"]
