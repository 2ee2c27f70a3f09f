"""Embedding quantisation with sentence-transformers' ``quantize_embeddings`` semantics.

Same rules as ``sentence_transformers.util.quantization.quantize_embeddings`` (6.2), so
``encode(..., precision=...)`` returns the same arrays:

* ``int8`` / ``uint8``: per-dimension ranges (``[2, dim]``: min row, max row) from
  ``ranges``, else from ``calibration_embeddings``, else from the embeddings
  themselves (refused for a single embedding: there is nothing to calibrate on);
  255 equal steps from the minimum, ``floor``, clipped to 0..255; ``int8``
  subtracts 128. A zero-width dimension uses step 1.
* ``binary`` / ``ubinary``: one bit per dimension (``> 0``), packed 8 per byte
  (``ceil(dim / 8)`` bytes, big-endian bit order); ``binary`` subtracts 128 as int8.
* A list of 2-D arrays (token embeddings: one ``[tokens, dim]`` matrix per text)
  is quantised with ranges shared by all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tarka_jax.errors import InputTypeError, UsageError

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantization_ranges(embeddings: np.ndarray, precision: str = "int8") -> np.ndarray:
    """``[2, dim]`` float32: the per-dimension minimum and maximum of ``embeddings`` ``[n, dim]``.

    Raises:
      ValueError: a single embedding (no spread to calibrate on).
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim == 1 or embeddings.shape[0] == 1:
        raise UsageError(
            f"cannot compute {precision} quantization ranges from a single embedding; pass "
            "ranges= or calibration_embeddings= from a representative set of embeddings")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))


def quantize_embeddings(embeddings, precision: str, ranges: np.ndarray | None = None,
                        calibration_embeddings: np.ndarray | None = None):
    """Quantise float embeddings ``[n, dim]`` (or ``[dim]``, or a list of ``[t, dim]``).

    Returns int8 / uint8 arrays: ``[n, dim]`` for int8/uint8, ``[n, ceil(dim / 8)]``
    for binary/ubinary; float32 for ``"float32"``; a list for a list of matrices.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(embeddings, Sequence) and not isinstance(embeddings, np.ndarray):
        if not embeddings:
            return []
        matrices = [np.asarray(e) for e in embeddings]
        if matrices[0].ndim == 2:  # one [tokens, dim] matrix per text: shared ranges
            if precision.endswith("int8") and ranges is None:
                data = (np.concatenate(matrices) if calibration_embeddings is None
                        else calibration_embeddings)
                if len(data):
                    ranges = _ranges(data, precision, calibration_embeddings)
            return [quantize_embeddings(m, precision, ranges, calibration_embeddings)
                    for m in matrices]
        embeddings = np.array(matrices)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.int8, np.uint8):
        raise InputTypeError("embeddings to quantize must be float, not int8 or uint8")
    if embeddings.ndim == 2 and embeddings.shape[0] == 0:
        dim = embeddings.shape[1]
        width = (dim + 7) // 8 if precision.endswith("binary") else dim
        dtype = np.float32 if precision == "float32" else (
            np.int8 if precision in ("int8", "binary") else np.uint8)
        return np.zeros((0, width), dtype)
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            ranges = _ranges(embeddings, precision, calibration_embeddings)
        ranges = np.asarray(ranges).astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1)
    return bits if precision == "ubinary" else (bits - 128).astype(np.int8)


def _ranges(embeddings, precision, calibration_embeddings):
    if calibration_embeddings is not None:
        calibration_embeddings = np.asarray(calibration_embeddings)
        return np.vstack((calibration_embeddings.min(axis=0), calibration_embeddings.max(axis=0)))
    return quantization_ranges(embeddings, precision)


__all__ = ["PRECISIONS", "quantization_ranges", "quantize_embeddings"]
