"""Which NVIDIA GPUs the Pallas Triton kernels serve, and how to target one without it.

The kernels have block tables for three architectures (docs/kernels.md):

====== ====================== ================================= =================
table  compute capability     parts                             smem per block
====== ====================== ================================= =================
sm80   8.0                    A100, A30                         163 KiB
sm86   8.6, 8.7, 8.9          A10, A40, RTX 30xx/40xx, L4, L40  99 KiB
sm90   9.0                    H100, H200, GH200                 227 KiB
====== ====================== ================================= =================

Everything else is refused up front with NotImplementedError, which the
attention dispatcher treats as "try the next implementation": Blackwell
(10.x, 12.x) has different tensor-core instructions and, on 12.x, 99 KiB per
block, so an sm90 tile would fail inside XLA's Triton compile, an error the
dispatcher could not catch; parts below 8.0 have no bf16 tensor cores.

:func:`abstract_gpu` and :func:`target_compute_capability` let tests and
``benchmarks/kernel_compile.py`` lower the kernels for a chosen GPU on a
machine without one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools


@dataclasses.dataclass(frozen=True)
class Arch:
    """One block table's target: what Triton compiles for and what it may use."""

    name: str
    capability: str  # what triton.compile takes: "8.0"
    ptxas_gpu: str  # ptxas --gpu-name
    smem_limit: int  # opt-in shared memory per block, bytes
    device_kind: str  # an abstract device of this kind, for cross-lowering
    cores: int


ARCHS = {
    "sm80": Arch("sm80", "8.0", "sm_80", 163 * 1024, "NVIDIA A100-SXM4-80GB", 108),
    "sm86": Arch("sm86", "8.6", "sm_86", 99 * 1024, "NVIDIA A10", 72),
    "sm90": Arch("sm90", "9.0", "sm_90a", 227 * 1024, "NVIDIA H100 80GB HBM3", 132),
}

#: jax versions whose Pallas Triton backend these kernels were tested on (docs/kernels.md).
TESTED_JAX = ("0.10.2", "0.11.2", "0.12.0.1")


def arch_of_compute_capability(capability) -> str | None:
    """Table name for a CUDA compute capability like "8.0" or "9.0"; None if unsupported."""
    if not capability:
        return None
    major, _, minor = str(capability).partition(".")
    try:
        major, minor = int(major), int(minor or 0)
    except ValueError:  # e.g. a ROCm "gfx90a"
        return None
    if major == 9 and minor == 0:
        return "sm90"
    if major == 8:
        return "sm80" if minor == 0 else "sm86"
    return None


def require_arch(capability, device_kind: str = "") -> str:
    """The table for ``capability``, or NotImplementedError saying why there is none."""
    arch = arch_of_compute_capability(capability)
    if arch is None:
        raise NotImplementedError(
            f"pallas_triton has block tables for compute capability 8.0 (A100), 8.6/8.9 "
            f"(A10, L4, RTX 30xx/40xx) and 9.0 (H100/H200); this GPU {device_kind!r} is "
            f"{capability}. Use implementation='xla' (or None, which falls back to it)."
        )
    return arch


def device_arch(device=None) -> str:
    """Table name for a JAX GPU device; NotImplementedError otherwise.

    Default device: the first of the mesh in context (``jax.set_mesh``; a program
    compiled for GPU devices from a CPU host has them only there), else jax's first.
    """
    import jax

    if device is None:
        device = _mesh_device() or jax.devices()[0]
    if device.platform != "gpu":
        raise NotImplementedError(
            f"pallas_triton needs an NVIDIA GPU (or interpret=True); the device is "
            f"{device.platform}"
        )
    return require_arch(getattr(device, "compute_capability", None),
                        getattr(device, "device_kind", ""))


def _mesh_device():
    """The first device of the concrete mesh ``jax.set_mesh`` put in context, or None.

    ``jax.sharding.get_mesh()`` refuses to answer under ``jax.jit``, where the kernel
    is traced; jax's own context variable (private, hence the guard) holds the same mesh.
    """
    try:
        from jax._src.mesh import get_concrete_mesh
        mesh = get_concrete_mesh()
    except (ImportError, AttributeError):  # a jax that moved it: use jax.devices()
        return None
    return None if mesh is None or mesh.empty else mesh.devices.flat[0]


@functools.cache
def check_triton_backend() -> None:
    """NotImplementedError naming the jax version if Pallas' Triton backend is gone.

    It is deprecated since jax 0.11 and still ships in 0.12; a jax that drops
    it should fail here, clearly, not with an ImportError deep inside Pallas.
    """
    import importlib

    import jax

    try:
        plgpu = importlib.import_module("jax.experimental.pallas.triton")
        plgpu.CompilerParams  # noqa: B018 - the attribute the kernels need
    except (ImportError, AttributeError) as err:
        raise NotImplementedError(
            f"pallas_triton needs jax's Pallas Triton backend, which jax {jax.__version__} "
            f"does not provide ({err}); tested with jax {', '.join(TESTED_JAX)}. "
            f"Use implementation='xla'."
        ) from None


def abstract_gpu(arch: str):
    """Context in which jax >= 0.11 lowers Pallas Triton for ``arch`` without a GPU.

    Pallas Triton on jax 0.10.2 ignores it: without a GPU it lowers for compute
    capability 9.0 whatever the target; :func:`target_compute_capability` fixes that.
    """
    import jax

    sharding = jax.sharding
    if not hasattr(sharding, "AbstractDevice"):
        return contextlib.nullcontext()
    spec = ARCHS[arch]
    mesh = sharding.AbstractMesh(
        (1,), ("x",), (sharding.AxisType.Explicit,),
        abstract_device=sharding.AbstractDevice(
            device_kind=spec.device_kind, num_cores=spec.cores, platform="gpu"),
    )
    return sharding.use_abstract_mesh(mesh)


@dataclasses.dataclass(frozen=True)
class TritonModule:
    """One kernel's Triton module, captured while lowering."""

    name: str
    capability: int  # what it was lowered for: 80
    jax_capability: int | None  # what jax itself would have used
    bytecode: bytes


@contextlib.contextmanager
def target_compute_capability(arch: str, modules: list | None = None):
    """Lowers every Pallas Triton kernel for ``arch``'s compute capability.

    Wraps jax's ``lower_jaxpr_to_triton_module`` (private API, checked on jax
    0.10.2-0.12.0.1): the compute capability argument is set to the target's
    (on jax 0.10.2 without a GPU it would be 9.0), and, if ``modules`` is a
    list, a :class:`TritonModule` per kernel is appended to it. Inside,
    ``abstract_gpu(arch)`` is active too.
    """
    import io

    from jax._src.pallas.triton import lowering

    original = lowering.lower_jaxpr_to_triton_module
    capability = int(ARCHS[arch].capability.replace(".", ""))

    @functools.wraps(original)
    def lower(jaxpr, grid_mapping, platform, compute_capability, *args, **kwargs):
        result = original(jaxpr, grid_mapping, platform, capability, *args, **kwargs)
        if modules is not None:
            buf = io.BytesIO()
            result.module.operation.write_bytecode(buf)
            modules.append(TritonModule(jaxpr.debug_info.func_name, capability,
                                        compute_capability, buf.getvalue()))
        return result

    lowering.lower_jaxpr_to_triton_module = lower
    try:
        with abstract_gpu(arch):
            yield modules
    finally:
        lowering.lower_jaxpr_to_triton_module = original
