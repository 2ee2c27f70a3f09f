"""Block-size tables fit shared memory, and the kernels lower to Triton for A100 and H100 on CPU.

Cross-lowering (``lower(lowering_platforms=("cuda",))``) runs the Pallas ->
Triton lowering that interpret mode skips; it does not compile to PTX, so
register or shared-memory overflow still needs a real GPU (gpu_check.sh).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import pytest

from tarka_jax.kernels import block_sizes
from tarka_jax.kernels.pallas_triton import attention_pallas_triton

# jax >= 0.11 warns that Pallas Triton is deprecated; it still ships and is what we test.
pytestmark = pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
GPUS = {  # table -> (device_kind, cores) of the abstract device to lower for
    "sm80": ("NVIDIA A100-SXM4-80GB", 108),
    "sm90": ("NVIDIA H100 80GB HBM3", 132),
}


@pytest.mark.parametrize("arch", sorted(block_sizes.TABLES))
def test_block_tables_fit_shared_memory(arch):
    budget = block_sizes.SHARED_MEMORY_BUDGET[arch]
    for (head_dim, itemsize), config in block_sizes.TABLES[arch].items():
        for kernel, used in block_sizes.shared_memory_bytes(config, head_dim, itemsize).items():
            assert used <= budget, f"{arch} D={head_dim} {itemsize}B {kernel}: {used} > {budget}"


@pytest.mark.parametrize("arch", sorted(block_sizes.TABLES))
def test_block_tables_are_triton_tiles(arch):
    for config in block_sizes.TABLES[arch].values():
        for blocks in (config.fwd, config.dkdv, config.dq):
            for size in (blocks.block_q, blocks.block_k):
                assert size >= 16 and size & (size - 1) == 0, blocks  # tl.dot needs >= 16
            assert blocks.num_warps in (1, 2, 4, 8, 16) and blocks.num_stages >= 1


def test_arch_of_compute_capability():
    assert block_sizes.arch_of_compute_capability("8.0") == "sm80"
    assert block_sizes.arch_of_compute_capability("8.6") == "sm86"
    assert block_sizes.arch_of_compute_capability("8.9") == "sm86"
    assert block_sizes.arch_of_compute_capability("9.0") == "sm90"
    assert block_sizes.arch_of_compute_capability("10.0") == "sm90"
    assert block_sizes.arch_of_compute_capability("7.5") is None


def _abstract_gpu(arch):
    """jax >= 0.11 needs an abstract GPU device to lower Pallas Triton without one."""
    sharding = jax.sharding
    if not hasattr(sharding, "AbstractDevice"):
        return contextlib.nullcontext()
    kind, cores = GPUS[arch]
    mesh = sharding.AbstractMesh(
        (1,), ("x",), (sharding.AxisType.Explicit,),
        abstract_device=sharding.AbstractDevice(device_kind=kind, num_cores=cores, platform="gpu"),
    )
    return sharding.use_abstract_mesh(mesh)


LOWER_CASES = [  # (dtype, head_dim, Hq, Hkv, window)
    ("bfloat16", 256, 3, 1, (256, 256)),
    ("float32", 256, 3, 1, None),
    ("bfloat16", 128, 4, 2, None),
]


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case", LOWER_CASES, ids=lambda c: f"{c[0]}-d{c[1]}-{c[2]}:{c[3]}")
@pytest.mark.parametrize("arch", sorted(GPUS))
def test_pallas_triton_lowers_for_cuda(arch, case, backward):
    dtype, d, hq, hkv, window = case
    b, t = 2, 300  # not a block multiple
    args = [jax.ShapeDtypeStruct((b, t, hq, d), dtype), jax.ShapeDtypeStruct((b, t, hkv, d), dtype),
            jax.ShapeDtypeStruct((b, t, hkv, d), dtype), jax.ShapeDtypeStruct((b, t), jnp.int32)]

    def attend(q, k, v, seg):
        return attention_pallas_triton(q, k, v, seg, window=window, scale=d**-0.5,
                                       interpret=False, arch=arch)

    def loss(q, k, v, seg):
        return jnp.sum(attend(q, k, v, seg).astype(jnp.float32))

    fn = jax.grad(loss, argnums=(0, 1, 2)) if backward else attend
    with _abstract_gpu(arch):
        text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    # forward: one Triton call; backward: forward (residuals) + dK/dV + dQ.
    assert text.count("__gpu$xla.gpu.triton") == (3 if backward else 1)
