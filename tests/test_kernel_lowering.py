"""Block-size tables fit shared memory, and the kernels lower to Triton for A100 and H100 on CPU.

Cross-lowering (``lower(lowering_platforms=("cuda",))``) runs the Pallas ->
Triton lowering that interpret mode skips, for the compute capability of the
target (kernels/gpu_arch.py). It does not compile to PTX: registers, spills
and real shared memory come from benchmarks/kernel_compile.py (ci/kernel_legs.sh).
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import pytest

from tarka_jax.kernels import attention, block_sizes, gpu_arch
from tarka_jax.kernels.pallas_triton import attention_pallas_triton

# jax >= 0.11 warns that Pallas Triton is deprecated; it still ships and is what we test.
pytestmark = pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
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
    assert gpu_arch.arch_of_compute_capability("8.0") == "sm80"
    assert gpu_arch.arch_of_compute_capability("8.6") == "sm86"
    assert gpu_arch.arch_of_compute_capability("8.9") == "sm86"
    assert gpu_arch.arch_of_compute_capability("9.0") == "sm90"
    for unsupported in ("7.5", "10.0", "10.3", "12.0", "12.1", "gfx90a", None):
        assert gpu_arch.arch_of_compute_capability(unsupported) is None, unsupported


class _FakeGpu:
    platform = "gpu"

    def __init__(self, capability, kind):
        self.compute_capability, self.device_kind = capability, kind


@pytest.mark.parametrize("capability,kind", [("12.0", "NVIDIA RTX PRO 6000"),
                                             ("10.0", "NVIDIA B200"), ("7.5", "Tesla T4")])
def test_unsupported_gpu_is_refused_up_front(monkeypatch, capability, kind):
    with pytest.raises(NotImplementedError, match="compute capability 8.0"):
        gpu_arch.device_arch(_FakeGpu(capability, kind))
    monkeypatch.setattr(gpu_arch, "device_arch",
                        lambda device=None: gpu_arch.require_arch(capability, kind))
    q = jnp.ones((1, 8, 3, 64), jnp.bfloat16)
    kv = jnp.ones((1, 8, 1, 64), jnp.bfloat16)
    with pytest.raises(NotImplementedError, match=f"{kind}.*{capability}.*implementation='xla'"):
        attention(q, kv, kv, implementation="pallas_triton", interpret=False)
    # A NotImplementedError is what the dispatcher treats as "fall back" for
    # implementation=None; an explicit request gets it as is.


def test_cpu_device_is_refused_without_interpret():
    with pytest.raises(NotImplementedError, match="needs an NVIDIA GPU"):
        gpu_arch.device_arch(jax.devices("cpu")[0])


def test_missing_triton_backend_is_a_clear_error(monkeypatch):
    import sys

    gpu_arch.check_triton_backend.cache_clear()
    monkeypatch.setitem(sys.modules, "jax.experimental.pallas.triton", None)
    try:
        with pytest.raises(NotImplementedError, match=f"jax {jax.__version__}.*tested with"):
            gpu_arch.check_triton_backend()
    finally:
        gpu_arch.check_triton_backend.cache_clear()


# jax >= 0.11 reads the target GPU from the abstract device (jax._src.pallas.triton.gpu_info).
JAX_READS_ABSTRACT_GPU = importlib.util.find_spec("jax._src.pallas.triton.gpu_info") is not None
LOWER_CASES = [  # (dtype, head_dim, Hq, Hkv, window)
    ("bfloat16", 256, 3, 1, (256, 256)),
    ("bfloat16", 64, 3, 1, None),
    ("bfloat16", 128, 4, 2, None),
]


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case", LOWER_CASES, ids=lambda c: f"{c[0]}-d{c[1]}-{c[2]}:{c[3]}")
@pytest.mark.parametrize("arch", sorted(gpu_arch.ARCHS))
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
    modules = []
    jax.clear_caches()  # a lowering cached for another arch would skip the capture
    with gpu_arch.target_compute_capability(arch, modules):
        text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    # forward: one Triton call; backward: forward (residuals) + dK/dV + dQ.
    assert text.count("__gpu$xla.gpu.triton") == (3 if backward else 1)
    names = sorted(m.name.rsplit("_", 1)[-1] for m in modules)
    assert names == (["dkdv", "dq", "fwd"] if backward else ["fwd"]), names
    # Every kernel was lowered for the target's compute capability. jax >= 0.11 gets
    # it from the abstract device; jax 0.10.2 without a GPU would pick 9.0 itself.
    want = int(gpu_arch.ARCHS[arch].capability.replace(".", ""))
    assert {m.capability for m in modules} == {want}
    jax_pick = want if JAX_READS_ABSTRACT_GPU else 90
    assert {m.jax_capability for m in modules} == {jax_pick}


def test_abstract_gpu_names_the_target_on_newer_jax():
    if not JAX_READS_ABSTRACT_GPU:
        pytest.skip("Pallas Triton on jax 0.10.2 ignores abstract devices (see target_compute_capability)")
    from jax._src.pallas.triton import gpu_info

    for arch, spec in gpu_arch.ARCHS.items():
        with gpu_arch.abstract_gpu(arch):
            assert gpu_info.get_gpu_info().arch_name == spec.capability, arch
