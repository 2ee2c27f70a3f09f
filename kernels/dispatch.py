"""The single attention entry point and the choice between implementations.

The model calls :func:`attention` and nothing else; which kernel runs is data
(``implementation=``), never a branch inside model code.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tarka_jax.kernels.xla import attention_xla
from tarka_jax.kernels.xla_blocked import attention_xla_blocked


def _pallas_triton(q, k, v, segment_ids, *, window, scale, interpret):
    # Imported lazily: Pallas imports are slow and only GPU/interpret users pay them.
    from tarka_jax.kernels.pallas_triton import attention_pallas_triton

    return attention_pallas_triton(
        q, k, v, segment_ids, window=window, scale=scale, interpret=interpret
    )


def _splash_tpu(q, k, v, segment_ids, *, window, scale, interpret):
    # Imported lazily, like pallas_triton.
    from tarka_jax.kernels.splash_tpu import attention_splash_tpu

    return attention_splash_tpu(q, k, v, segment_ids, window=window, scale=scale,
                                interpret=interpret, on_tpu=target_platform() == "tpu")


def _xla(q, k, v, segment_ids, *, window, scale, interpret):
    del interpret  # not a Pallas kernel
    return attention_xla(q, k, v, segment_ids, window=window, scale=scale)


def _xla_blocked(q, k, v, segment_ids, *, window, scale, interpret):
    del interpret  # not a Pallas kernel
    return attention_xla_blocked(q, k, v, segment_ids, window=window, scale=scale)


#: name -> callable(q, k, v, segment_ids, *, window, scale, interpret)
IMPLEMENTATIONS: dict[str, Callable] = {
    "xla": _xla, "xla_blocked": _xla_blocked, "pallas_triton": _pallas_triton,
    "splash_tpu": _splash_tpu,
}

#: Preference order per platform (:func:`target_platform`) for
#: ``implementation=None``: the first that can serve the input wins; one that
#: raises NotImplementedError (e.g. pallas_triton on an unsupported GPU) passes
#: to the next. Chosen from the evidence recorded in BENCHMARKS.md:
#: CPU: xla_blocked (one query block at a time; window layers skip most of the
#: scores): 1.2-9x faster than xla on every shape measured (T 64-2048, window
#: and full, float32 and bfloat16).
#: GPU: xla until benchmarks/gpu_check.sh has timed xla_blocked and pallas_triton
#: on hardware (pallas_triton is tested in interpret mode and compiled for
#: A100/H100 without a GPU only).
#: TPU: "best measured" means compiled and counted here, until a TPU times them:
#: splash_tpu passes its interpret-mode parity tests and, compiled without a TPU
#: for v5e-8, v6e-8 and v5p-16 (benchmarks/accelerator_compile.py, BENCHMARKS.md),
#: the Embedder's 32 x 2048 pass needs fewer executed FLOPs (2.17 TFLOP per chip;
#: xla_blocked 2.19, xla 2.90) and less memory (temp 73-130 MiB; xla_blocked 74-132,
#: xla 297-434) than the others on all three; at the typical 32 x 384 pass all
#: three execute the same FLOPs (the window covers the row) and splash's temp is
#: below xla's on v5e and v6e, 0.1 MiB above it on v5p, below xla_blocked's on all.
#: Then xla_blocked, then xla.
_PREFERRED: dict[str, tuple[str, ...]] = {
    "cpu": ("xla_blocked", "xla"),
    "gpu": ("xla",),
    "tpu": ("splash_tpu", "xla_blocked", "xla"),
}
_DEFAULT_ORDER = ("xla",)  # any other platform

#: Rows shorter than this are not given to an implementation by ``implementation=None``
#: (an explicit request still runs it): splash_tpu pads a row to its 128-position
#: blocks, so a 16-token row would cost 64x its attention (+36% of the whole forward's
#: FLOPs at T 16, +7% at T 64; benchmarks/accelerator_flops.py), where xla_blocked
#: scores just the row.
_SHORTEST_ROW: dict[str, int] = {"splash_tpu": 128}


def target_platform() -> str:
    """The platform the program being traced is built for.

    The devices of the mesh in context (``jax.set_mesh``) when there is one: a
    program compiled ahead of time for TPU or GPU devices from a CPU host
    (benchmarks/accelerator_compile.py) must pick, and lower, that platform's
    kernels. Otherwise jax's default backend. ``"cuda"`` / ``"rocm"`` read as ``"gpu"``.
    """
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    platform = getattr(device, "platform", None) or jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def available_implementations() -> tuple[str, ...]:
    return tuple(IMPLEMENTATIONS)


def preferred_implementations(platform: str | None = None) -> tuple[str, ...]:
    """The order ``implementation=None`` tries on ``platform`` (default: :func:`target_platform`)."""
    return _PREFERRED.get(platform or target_platform(), _DEFAULT_ORDER)


def check_implementation_name(name: str | None) -> str | None:
    """Validate an ``implementation=`` / ``attention=`` value before any work; returns it.

    None (best for the platform) and the names in :data:`IMPLEMENTATIONS` pass;
    anything else raises ValueError naming the valid choices.
    """
    if name is not None and (not isinstance(name, str) or name not in IMPLEMENTATIONS):
        raise ValueError(
            f"unknown attention implementation {name!r}; "
            f"choose from {sorted(IMPLEMENTATIONS)} or None"
        )
    return name


def _check_inputs(q, k, v, segment_ids, window):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention expects q, k, v of rank 4 [B, T, H, D]; got {q.shape}, {k.shape}, {v.shape}"
        )
    b, t, hq, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[1] != t or k.shape[3] != d:
        raise ValueError(
            f"k and v must be [B, T, Hkv, D] matching q {q.shape}; got {k.shape}, {v.shape}"
        )
    if hq % k.shape[2]:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({k.shape[2]})")
    if segment_ids is not None and segment_ids.shape != (b, t):
        raise ValueError(f"segment_ids must be [B, T] = {(b, t)}; got {segment_ids.shape}")
    if window is not None:
        if len(window) != 2 or min(window) < 0:
            raise ValueError(f"window must be None or (left, right) with both >= 0; got {window}")
    if q.dtype == jnp.float16:
        raise ValueError(
            "float16 is not supported: Gemma 3 activations overflow it; use bfloat16 or float32"
        )


def attention(q, k, v, segment_ids=None, *, window=None, scale=None, implementation=None,
              interpret=None):
    """Bidirectional attention with segments and an optional window.

    Args:
      q: [B, T, Hq, D]; k, v: [B, T, Hkv, D] with Hq % Hkv == 0 (MQA/GQA: query
        head h reads K/V head h // (Hq // Hkv)).
      segment_ids: int32 [B, T] or None (one segment, no padding). Token i sees
        token j iff seg[i] == seg[j] != 0 and the window allows it. Segments are
        contiguous runs; 0 marks padding.
      window: None (full) or (left, right), inclusive: -left <= j - i <= right.
        Example: HF's serialised sliding_window 512 is (256, 256) here.
      scale: multiplier on q.k; None means D ** -0.5.
      implementation: "xla" (dense reference), "xla_blocked" (query blocks
        against the keys they reach, plain XLA), "pallas_triton" (GPU), "splash_tpu"
        (TPU: jax's Pallas splash kernel) or None: the first of
        :func:`preferred_implementations` that can serve the input. An explicit
        request that cannot run raises; there is no silent fallback.
      interpret: Pallas interpret mode; None means True exactly on CPU (the
        platform is :func:`target_platform`: a mesh of TPU devices in context
        compiles for TPU even from a CPU host).

    Returns:
      [B, T, Hq, D] in q's dtype. Queries that see no key give exact zeros.
    """
    _check_inputs(q, k, v, segment_ids, window)
    if segment_ids is None:
        segment_ids = jnp.ones(q.shape[:2], jnp.int32)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    window = None if window is None else (int(window[0]), int(window[1]))
    platform = target_platform()
    if interpret is None:
        interpret = platform == "cpu"
    kwargs = dict(window=window, scale=float(scale), interpret=interpret)
    if implementation is not None:
        check_implementation_name(implementation)
        return IMPLEMENTATIONS[implementation](q, k, v, segment_ids, **kwargs)
    reasons = []
    for name in preferred_implementations(platform):
        if q.shape[1] < _SHORTEST_ROW.get(name, 0):
            reasons.append(f"{name}: rows shorter than {_SHORTEST_ROW[name]} go to the next")
            continue
        try:
            return IMPLEMENTATIONS[name](q, k, v, segment_ids, **kwargs)
        except NotImplementedError as err:
            reasons.append(f"{name}: {err}")
    raise NotImplementedError(
        f"no attention implementation can serve this input on {platform} "
        f"(q {q.shape} {q.dtype}, window {window}): " + "; ".join(reasons)
    )
