"""``implementation="splash_tpu"``: jax's maintained Pallas TPU splash attention, wrapped.

The kernel is ``jax.experimental.pallas.ops.tpu.splash_attention`` (shipped with
jax; the same API in 0.10.2 and 0.12): a flash-attention forward and backward
for TPU that skips every (query block, key block) tile its static mask leaves
empty. What this module adds is our contract (docs/attention.md):

* **The window** is a ``LocalMask((T, T), (left, right), 0)``: it allows
  ``q - left <= k <= q + right``, both ends inclusive, which is our convention
  as it stands ((256, 256) for HF's ``sliding_window`` 512). Full layers use a
  ``FullMask``. At T = 2048 with blocks of 128 a windowed layer runs 5 key
  blocks per query block of the 16 a full layer runs.
* **Segments** go in as splash's ``SegmentIds(q, kv)`` (query i sees key j only
  when their ids are equal). Splash has no notion of padding: segment 0 would
  see itself. So outputs at segment-0 positions are set to 0 here; their
  incoming gradient is then 0, which makes their dq and (since only padding
  sees padding) the dk, dv of padding keys exactly 0 as well. Every other query
  sees at least itself, so no softmax row is empty inside the kernel.
* **Scale**: splash computes plain ``q.k``; q is multiplied by ``scale`` first
  (the model's 256 ** -0.5 = 1/16 is exact in bfloat16).
* **Shapes**: TPU tiles are 128 lanes wide: the sequence is zero-padded to a
  multiple of the block (128) with segment 0, the head dim to a multiple of 128
  with zeros (changes neither q.k nor the kept columns); both are sliced off.
  The batch is a ``vmap`` of the per-example kernel; MQA (one KV head) uses
  ``make_splash_mqa`` (K/V ``[T, D]``), GQA/MHA ``make_splash_mha``.
* **Under a mesh** it runs per batch shard (kernels/sharded.py), as XLA has no
  partitioning rule for a ``pallas_call``.

Block sizes: 128 for every kernel (jax's default). Chosen by counting, not by
timing (no TPU here): with a (256, 256) window at T = 2048, 128-blocks run 640
keys per query against the 513 it needs; 256 / 512 blocks run 768 / 1,536
(BENCHMARKS.md, "TPU and GPU programs compiled without the hardware").

Interpret mode (``interpret=True``) runs the same kernel code on CPU; that is
what the tests use. On anything but a TPU without interpret mode it raises
NotImplementedError, so ``implementation=None`` moves on to the next choice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tarka_jax.kernels import sharded

BLOCK = 128  # query and key block of every splash kernel (forward, dq, dkv)
LANES = 128  # TPU lane width: the head dim is padded to a multiple of it
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _splash():
    """The splash module, or NotImplementedError naming this jax (the dispatcher's cue)."""
    try:
        from jax.experimental.pallas.ops.tpu import splash_attention
    except ImportError as err:  # pragma: no cover - every supported jax ships it
        raise NotImplementedError(
            f"splash_tpu needs jax.experimental.pallas.ops.tpu.splash_attention, which jax "
            f"{jax.__version__} does not provide ({err})") from err
    return splash_attention


def splash_kernel(t: int, q_heads: int, kv_heads: int, window: tuple[int, int] | None,
                  block: int, interpret: bool):
    """The splash kernel for one padded length, head layout and window.

    Built inside each trace on purpose: its block tables become constants of
    that trace (a kernel cached across traces would carry one trace's arrays,
    or, built eagerly, need a device of the mesh in context, which a program
    compiled for TPU from a CPU host does not have). The numpy work, turning
    the mask into block tables, is cached by jax (``_process_mask``), so a
    model's layers pay it once per (length, window).
    """
    sa = _splash()
    if window is None:
        one = sa.FullMask((t, t))
    else:
        one = sa.LocalMask((t, t), window, 0)
    mask = sa.MultiHeadMask([one] * q_heads)
    blocks = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                           block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                           block_q_dq=block, block_kv_dq=block)
    make = sa.make_splash_mqa if kv_heads == 1 else sa.make_splash_mha
    return make(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)


def attention_splash_tpu(q, k, v, segment_ids, *, window, scale, interpret, on_tpu: bool = True):
    """Splash attention with our contract (docs/attention.md).

    Args:
      q: [B, T, Hq, D]; k, v: [B, T, Hkv, D]; float32 or bfloat16, all one dtype.
      segment_ids: int32 [B, T]; 0 = padding.
      window: None or inclusive (left, right).
      scale: multiplier on q.k.
      interpret: Pallas interpret mode (CPU).
      on_tpu: whether the program is built for a TPU (kernels/dispatch.py says).

    Returns:
      [B, T, Hq, D] in q's dtype; exact zeros (and zero gradients) at padding.

    Raises:
      NotImplementedError: not a TPU and not interpret mode, or dtypes other than
        one of float32 / bfloat16.
    """
    if not interpret and not on_tpu:
        raise NotImplementedError("splash_tpu runs on a TPU (or with interpret=True)")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise NotImplementedError(
            f"splash_tpu serves float32 or bfloat16 q/k/v of one dtype; got "
            f"{q.dtype}, {k.dtype}, {v.dtype}")
    if segment_ids is None:
        segment_ids = jnp.ones(q.shape[:2], jnp.int32)
    local = functools.partial(_attention_local, window=window, scale=float(scale),
                              interpret=bool(interpret))
    return sharded.per_batch_shard(local, q, k, v, segment_ids)


def _attention_local(q, k, v, segment_ids, *, window, scale: float, interpret: bool):
    """attention_splash_tpu on one device's arrays (shapes as there)."""
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    if t == 0:
        return jnp.zeros_like(q)
    tp, dp = _round_up(t, BLOCK), _round_up(d, LANES)
    if window is not None and window[0] >= tp - 1 and window[1] >= tp - 1:
        window = None  # covers every pair: the full mask is the same and cheaper to build
    kernel = splash_kernel(tp, hq, hkv, window, BLOCK, interpret)

    def prepare(x):  # [B, T, H, D] -> [B, H, Tp, Dp], zero-padded
        x = jnp.pad(x, ((0, 0), (0, tp - t), (0, 0), (0, dp - d)))
        return x.transpose(0, 2, 1, 3)

    qs = prepare((q.astype(jnp.float32) * scale).astype(q.dtype))
    ks, vs = prepare(k), prepare(v)
    if hkv == 1:
        ks, vs = ks[:, 0], vs[:, 0]  # MQA: [B, Tp, Dp]
    seg = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, tp - t)))  # padding: segment 0
    sa = _splash()

    def one_example(q1, k1, v1, s1):
        return kernel(q1, k1, v1, segment_ids=sa.SegmentIds(q=s1, kv=s1))

    out = jax.vmap(one_example)(qs, ks, vs, seg)  # [B, Hq, Tp, Dp]
    out = out.transpose(0, 2, 1, 3)[:, :t, :, :d]  # [B, T, Hq, D]
    return jnp.where((segment_ids != 0)[:, :, None, None], out, 0).astype(q.dtype)
