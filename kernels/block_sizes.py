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
model of the allocation, not Triton's exact number. What a GPU compile
really uses -- shared memory, registers, spills, whether the loop is
pipelined -- comes from benchmarks/kernel_compile.py, which compiles every
entry to PTX without a GPU; the entries below are the ones it showed to have
no spills (docs/kernels.md has the table).

bfloat16 only: float32 is refused on a GPU (see :func:`block_config`). Head
dims 64, 128 and 256: smaller ones are zero-padded to 64 on a GPU.
"""

from __future__ import annotations

import dataclasses

from tarka_jax.kernels.gpu_arch import ARCHS

#: Shared memory per thread block (opt-in maximum), bytes.
SHARED_MEMORY_BUDGET = {name: arch.smem_limit for name, arch in ARCHS.items()}


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
# (head_dim, bytes per input element). Chosen by compiling to PTX
# (benchmarks/kernel_compile.py: 0 spills, within shared memory, sm80 backward
# pipelined); speed is to be tuned on hardware (gpu_check.sh's sweep).
TABLES: dict[str, dict[tuple[int, int], BlockConfig]] = {
    "sm80": {
        (64, 2): _cfg((128, 64, 4, 2), (64, 32, 4, 2), (64, 64, 4, 2)),
        (128, 2): _cfg((128, 32, 8, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (256, 2): _cfg((64, 32, 8, 2), (32, 32, 8, 2), (64, 16, 8, 2)),
    },
    "sm86": {
        (64, 2): _cfg((64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 2)),
        (128, 2): _cfg((64, 32, 4, 2), (32, 32, 4, 2), (64, 32, 4, 2)),
        (256, 2): _cfg((32, 32, 4, 2), (32, 16, 4, 2), (32, 16, 4, 2)),
    },
    "sm90": {
        (64, 2): _cfg((128, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 2)),
        (128, 2): _cfg((128, 64, 8, 2), (64, 64, 8, 2), (64, 64, 8, 2)),
        (256, 2): _cfg((128, 32, 8, 3), (64, 32, 8, 2), (64, 32, 8, 2)),
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


def block_config(arch: str, head_dim: int, itemsize: int) -> BlockConfig:
    """The frozen tiles for ``arch``; raises NotImplementedError for shapes without an entry."""
    if itemsize == 4:
        raise NotImplementedError(
            "pallas_triton on a GPU serves bfloat16 only: float32 dots run as IEEE FMA "
            "without tensor cores and every compiled float32 tile spilled registers "
            "(benchmarks/kernel_compile.py, docs/kernels.md). Use implementation='xla' for "
            "float32 (implementation=None does), or interpret=True."
        )
    try:
        return TABLES[arch][(head_dim, itemsize)]
    except KeyError:
        raise NotImplementedError(
            f"pallas_triton has no block sizes for arch={arch!r}, head_dim={head_dim}, "
            f"itemsize={itemsize}"
        ) from None
