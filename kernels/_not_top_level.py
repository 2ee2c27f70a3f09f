"""What ``import kernels`` gets when this folder is seen as a top-level package.

The repository keeps ``kernels/`` at its root (it installs as ``tarka_jax.kernels``). Python puts
the current directory on ``sys.path`` for ``python -m ...`` and ``python -c ...`` (and pytest-xdist
workers keep it there), so from the repository root ``import kernels`` would find this folder --
while transformers 5.25+ imports Hugging Face's ``kernels`` package
(``transformers.integrations.hub_kernels``). Instead of shadowing it, this folder steps aside:

* when another ``kernels`` is on ``sys.path`` (Hugging Face's, installed), :func:`hand_over`
  loads that one in its place, so ``import kernels`` gets it;
* when there is none, the module stays empty: no attributes, no ``__version__`` (transformers'
  availability check then reads "not installed"), and any attribute access says what happened.

Standard library only: it runs before anything of tarka-jax is importable.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_REPOSITORY = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _elsewhere(entry: str) -> bool:
    return os.path.realpath(entry or os.getcwd()) != _REPOSITORY


def hand_over(name: str = "kernels") -> bool:
    """Replace ``sys.modules[name]`` (this folder) by the package of that name found elsewhere.

    Returns False, changing nothing, when ``sys.path`` holds no other package of that name.
    """
    sys.modules.pop(f"{name}._not_top_level", None)  # this helper, loaded under the wrong name
    path = [entry for entry in sys.path if isinstance(entry, str) and _elsewhere(entry)]
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
        return False
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the import statement returns what sys.modules holds
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return True


def missing(attribute: str):
    """Module ``__getattr__`` of the empty stand-in (AttributeError: ``getattr(m, x, d)`` works)."""
    raise AttributeError(
        f"module 'kernels' has no attribute {attribute!r}: this 'kernels' is tarka-jax's "
        "kernels/ folder, seen from the repository root (it installs as tarka_jax.kernels); "
        "Hugging Face's kernels package is not installed")
