"""Similarity functions with sentence-transformers' names and sign conventions (numpy).

"cosine" and "dot" are similarities; "euclidean" and "manhattan" are negative
distances, so larger is always more similar. Inputs are ``[n, dim]`` or ``[dim]``.
"""

from __future__ import annotations

import numpy as np

from tarka_jax.errors import UsageError
from tarka_jax.nn.numerics import l2_normalize

NAMES = ("cosine", "dot", "euclidean", "manhattan")


def as_matrices(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Both as ``[n, dim]`` float32 (``[dim]`` is one row); other ranks or widths are refused."""
    out = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x, np.float32)
        if x.ndim not in (1, 2):
            raise UsageError(f"{name} must be [n, dim] or [dim] embeddings, got shape {x.shape}")
        out.append(np.atleast_2d(x))
    if out[0].shape[-1] != out[1].shape[-1]:
        raise UsageError(f"cannot compare {out[0].shape[-1]}-d with {out[1].shape[-1]}-d "
                         "embeddings")
    return out[0], out[1]


def matrix(a, b, name: str) -> np.ndarray:
    """``[len(a), len(b)]``: every row of ``a`` against every row of ``b``."""
    a, b = as_matrices(a, b)
    if name == "cosine":
        return l2_normalize(a) @ l2_normalize(b).T
    if name == "dot":
        return a @ b.T
    if name == "euclidean":
        return -np.linalg.norm(a[:, None] - b[None], axis=-1)
    if name == "manhattan":
        return -np.abs(a[:, None] - b[None]).sum(-1)
    raise UsageError(f"unknown similarity function {name!r}; choose from {NAMES}")


def pairwise(a, b, name: str) -> np.ndarray:
    """``[n]``: row i of ``a`` against row i of ``b``."""
    a, b = as_matrices(a, b)
    if a.shape[0] != b.shape[0]:
        raise UsageError(f"similarity_pairwise needs as many rows in a ({a.shape[0]}) as in b "
                         f"({b.shape[0]})")
    if name == "cosine":
        return (l2_normalize(a) * l2_normalize(b)).sum(-1)
    if name == "dot":
        return (a * b).sum(-1)
    if name == "euclidean":
        return -np.linalg.norm(a - b, axis=-1)
    if name == "manhattan":
        return -np.abs(a - b).sum(-1)
    raise UsageError(f"unknown similarity function {name!r}; choose from {NAMES}")
