"""Frozen block sizes for the Pallas Triton attention kernels, per GPU architecture.

A tile configuration that compiles on an H100 (227 KB of shared memory per
block) can overflow an A100 (163 KB), so each architecture has its own table,
and :func:`shared_memory_bytes` estimates what a configuration asks for; a test
checks every entry against its budget.

The estimate counts what Triton keeps in shared memory for these kernels:
the operand tiles the loop streams (K/V in the forward and dQ kernels, Q/dO in
the dK/dV kernel), once per pipeline stage, plus the tiles loaded once per
program (Q in the forward; K, V in dK/dV; Q, dO in dQ) and the probability /
dS tile converted to a dot operand (transposed in dK/dV). It is an upper-ish
model of the allocation, not Triton's exact number: only a real compile proves
a configuration fits (see benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import dataclasses

#: Shared memory per thread block (opt-in maximum), bytes.
SHARED_MEMORY_BUDGET = {
    "sm80": 163 * 1024,  # A100 (and A30)
    "sm86": 99 * 1024,  # A10, RTX 30xx/40xx, L4 (sm86/sm89)
    "sm90": 227 * 1024,  # H100, H200 (and Blackwell, which has as much)
}


@dataclasses.dataclass(frozen=True)
class KernelBlocks:
    """Tiles of one kernel: ``block_q`` query rows (heads folded in) by ``block_k`` keys."""

    block_q: int
    block_k: int
    num_warps: int
    num_stages: int


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Tiles of the three kernels: forward, dK/dV (loops over query rows), dQ (loops over keys)."""

    fwd: KernelBlocks
    dkdv: KernelBlocks
    dq: KernelBlocks

    @property
    def row_multiple(self) -> int:
        """Folded query rows are padded to a multiple of this (block sizes are powers of two)."""
        return max(self.fwd.block_q, self.dkdv.block_q, self.dq.block_q)

    @property
    def key_multiple(self) -> int:
        return max(self.fwd.block_k, self.dkdv.block_k, self.dq.block_k)


def _cfg(fwd, dkdv, dq) -> BlockConfig:
    return BlockConfig(KernelBlocks(*fwd), KernelBlocks(*dkdv), KernelBlocks(*dq))


# (block_q, block_k, num_warps, num_stages) for fwd, dkdv, dq; keyed by
# (head_dim, bytes per input element). Starting points from KERNELS.md; the
# sm90 rows are to be re-tuned with `benchmarks/gpu_check.sh --sweep`.
TABLES: dict[str, dict[tuple[int, int], BlockConfig]] = {
    "sm80": {
        (16, 2): _cfg((128, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 2)),
        (32, 2): _cfg((128, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 2)),
        (64, 2): _cfg((128, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 2)),
        (128, 2): _cfg((128, 32, 8, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (256, 2): _cfg((64, 32, 8, 2), (64, 32, 8, 1), (64, 32, 8, 1)),
        (16, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (32, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (64, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (128, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 1), (32, 32, 4, 1)),
        (256, 4): _cfg((32, 32, 4, 1), (32, 16, 4, 1), (32, 16, 4, 1)),
    },
    "sm86": {
        (16, 2): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (32, 2): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (64, 2): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (128, 2): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (256, 2): _cfg((32, 32, 4, 2), (32, 16, 4, 1), (32, 16, 4, 1)),
        (16, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (32, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (64, 4): _cfg((32, 32, 4, 2), (32, 32, 4, 1), (32, 32, 4, 1)),
        (128, 4): _cfg((32, 32, 4, 1), (16, 16, 4, 1), (16, 16, 4, 1)),
        (256, 4): _cfg((16, 16, 4, 1), (16, 16, 4, 1), (16, 16, 4, 1)),
    },
    "sm90": {
        (16, 2): _cfg((128, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 2)),
        (32, 2): _cfg((128, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 2)),
        (64, 2): _cfg((128, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 2)),
        (128, 2): _cfg((128, 64, 8, 2), (64, 64, 8, 2), (64, 64, 8, 2)),
        (256, 2): _cfg((128, 64, 8, 2), (64, 32, 8, 2), (64, 32, 8, 2)),
        (16, 4): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (32, 4): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (64, 4): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (128, 4): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (32, 32, 4, 2)),
        (256, 4): _cfg((64, 32, 8, 1), (32, 32, 8, 1), (32, 32, 8, 1)),
    },
}

#: Small tiles for CPU interpret mode: speed there does not depend on tiles,
#: and small ones make short test sequences span several blocks.
INTERPRET_CONFIG = _cfg((32, 16, 4, 1), (16, 32, 4, 1), (32, 16, 4, 1))


def shared_memory_bytes(config: BlockConfig, head_dim: int, itemsize: int) -> dict[str, int]:
    """Estimated shared memory per program of each kernel, in bytes (see module docstring)."""
    d, b = head_dim, itemsize
    f, kv, dq = config.fwd, config.dkdv, config.dq
    return {
        # q once; k and v streamed; p converted to a dot operand.
        "fwd": f.block_q * d * b + f.num_stages * 2 * f.block_k * d * b + f.block_q * f.block_k * b,
        # k, v once; q and dO streamed (+ lse, delta); p^T and dS^T converted.
        "dkdv": 2 * kv.block_k * d * b
        + kv.num_stages * (2 * kv.block_q * d * b + 2 * kv.block_q * 4)
        + 2 * kv.block_q * kv.block_k * b,
        # q, dO once; k and v streamed; dS converted.
        "dq": 2 * dq.block_q * d * b + dq.num_stages * 2 * dq.block_k * d * b
        + dq.block_q * dq.block_k * b,
    }


def arch_of_compute_capability(capability: str | None) -> str | None:
    """Table name for a CUDA compute capability string like "8.0"; None if unsupported."""
    if not capability:
        return None
    major, _, minor = str(capability).partition(".")
    major, minor = int(major), int(minor or 0)
    if major >= 9:
        return "sm90"
    if major == 8:
        return "sm80" if minor == 0 else "sm86"
    return None


def device_arch(device=None) -> str | None:
    """Table name for a JAX GPU device (default: the first device), None if not a known GPU."""
    import jax

    if device is None:
        device = jax.devices()[0]
    if device.platform != "gpu":
        return None
    return arch_of_compute_capability(getattr(device, "compute_capability", None))


def block_config(arch: str, head_dim: int, itemsize: int) -> BlockConfig:
    """The frozen tiles for ``arch``; raises NotImplementedError for shapes without an entry."""
    try:
        return TABLES[arch][(head_dim, itemsize)]
    except KeyError:
        raise NotImplementedError(
            f"pallas_triton has no block sizes for arch={arch!r}, head_dim={head_dim}, "
            f"itemsize={itemsize}"
        ) from None
