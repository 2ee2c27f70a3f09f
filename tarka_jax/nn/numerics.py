"""Numeric policy shared by the model, the embedder and training: one place for each rule.

* compute dtypes: float32 (the parity mode) or bfloat16; float16 is refused
  because Gemma 3 activations reach ~8e5, past float16's 65,504 (docs/numerics.md);
* matmul precision: HIGHEST in float32 (GPU/TPU default passes would be TF32 or
  bf16), DEFAULT in bfloat16;
* L2 normalisation with torch's ``F.normalize`` epsilon (1e-12), so a zero
  vector stays zero instead of becoming NaN.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tarka_jax.errors import TarkaError

COMPUTE_DTYPES = ("float32", "bfloat16")
_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16"}
NORM_EPS = 1e-12


def resolve_dtype(dtype: Any) -> jnp.dtype:
    """Map a user dtype ("float32", "bfloat16", a jnp/np dtype) to a compute dtype.

    Raises:
      TarkaError: float16 (it overflows on Gemma 3) or any other unsupported dtype.
    """
    name = dtype.lower() if isinstance(dtype, str) else jnp.dtype(dtype).name
    name = _ALIASES.get(name, name)
    if name in ("float16", "fp16", "half"):
        raise TarkaError(
            "float16 is not supported: Gemma 3 activations reach ~8e5 and overflow float16 "
            "(max 65,504). Use dtype='bfloat16' or 'float32'."
        )
    if name not in COMPUTE_DTYPES:
        raise TarkaError(f"unsupported dtype {dtype!r}; use 'float32' or 'bfloat16'")
    return jnp.dtype(name)


def matmul_precision(dtype) -> jax.lax.Precision:
    """HIGHEST for float32 (parity), DEFAULT for bfloat16."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else \
        jax.lax.Precision.DEFAULT


def l2_normalize(x, axis: int = -1, eps: float = NORM_EPS):
    """``x / max(||x||, eps)`` along ``axis``; numpy in gives numpy out, jax in gives jax out.

    The jax form has finite gradients at an all-zero vector (an empty packed slot, a fully
    padded row): ``max(sqrt(s), eps)`` would send its zero cotangent through ``sqrt``'s
    infinite slope at 0 (0 * inf = NaN into every parameter), so the square root only ever
    sees sums above ``eps**2`` (the "double where"); the forward values are unchanged.
    """
    if not isinstance(x, jax.Array):
        return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)
    sumsq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    big = sumsq > eps * eps
    norm = jnp.where(big, jnp.sqrt(jnp.where(big, sumsq, 1.0)), eps)
    return x / norm
