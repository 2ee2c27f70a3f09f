"""Compile every block-table entry of the Pallas Triton kernels to PTX, without a GPU.

For each arch table (sm80, sm86, sm90), dtype, head_dim and kernel (fwd, dkdv,
dq): lower the attention (forward + gradient) for CUDA, capture each kernel's
Triton module, compile it with XLA's own Triton pipeline
(``jax._src.lib.triton.compile``) for that compute capability -> PTX and
shared memory, then ``ptxas -v`` -> registers and spills. This is what a GPU
would compile (except the driver's final SASS step, which ptxas stands in for).

Needs the jax 0.10.2 CUDA plugin wheels in a venv of their own (they make
every jax import probe for CUDA; see ci/kernel_legs.sh). From jax 0.11 the
plugin no longer exposes the Triton -> PTX step to Python::

    python -m venv .venv-cuda
    .venv-cuda/bin/pip install -c ci/constraints-cuda-compile.txt \
        jax jaxlib jax-cuda12-plugin jax-cuda12-pjrt nvidia-cuda-nvcc-cu12
    .venv-cuda/bin/pip install --no-deps -e .
    .venv-cuda/bin/python benchmarks/kernel_compile.py [--json] [--arch sm80] \
        [--dtype bfloat16] [--head-dim 256] [--check]

float32 has no table (pallas_triton refuses it on a GPU); its rows compile the
bfloat16 tiles (or ``--blocks``) in float32, to show why. ``--check`` exits 1 unless every bfloat16 entry has 0 spill bytes, fits its
shared-memory limit, and is pipelined (cp.async or TMA in the PTX). ``--blocks
fwd=64,32,4,2`` overrides one kernel's (block_q, block_k, warps, stages), for
tuning. Docs: docs/kernels.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # lower for CUDA; no GPU is needed

import jax
import jax.numpy as jnp

from tarka_jax.kernels import block_sizes, gpu_arch
from tarka_jax.kernels.pallas_triton import attention_pallas_triton

KERNELS = ("fwd", "dkdv", "dq")
KEYS = ("arch", "dtype", "head_dim", "kernel", "block_q", "block_k", "num_warps", "num_stages",
        "smem_bytes", "smem_limit", "registers", "spill_store_bytes", "spill_load_bytes",
        "spill_bytes", "pipelined", "wgmma_count", "mma_sync_count")
DTYPES = {"bfloat16": 2, "float32": 4}


def ptxas_path() -> str:
    """ptxas from the PyPI nvidia-cuda-nvcc-cu12 wheel (or PTXAS / the PATH)."""
    if os.environ.get("PTXAS"):
        return os.environ["PTXAS"]
    import nvidia

    for root in nvidia.__path__:
        found = glob.glob(os.path.join(root, "cuda_nvcc", "bin", "ptxas"))
        if found:
            return found[0]
    return "ptxas"


def capture_modules(arch: str, dtype: str, head_dim: int, config, t: int = 2048):
    """{kernel: triton bytecode} for the forward and both backward kernels at [1, t, 3:1, D]."""
    shape_q = jax.ShapeDtypeStruct((1, t, 3, head_dim), dtype)
    shape_kv = jax.ShapeDtypeStruct((1, t, 1, head_dim), dtype)
    seg = jax.ShapeDtypeStruct((1, t), jnp.int32)

    def loss(q, k, v, s):
        out = attention_pallas_triton(q, k, v, s, window=(256, 256), scale=head_dim**-0.5,
                                      interpret=False, arch=arch, config=config)
        return jnp.sum(out.astype(jnp.float32))

    modules: list = []
    jax.clear_caches()  # jax 0.10.2 would reuse a lowering made for another arch
    with gpu_arch.target_compute_capability(arch, modules):
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(shape_q, shape_kv, shape_kv, seg).lower(
            lowering_platforms=("cuda",))
    found = {}
    for module in modules:
        kernel = next(k for k in KERNELS if module.name.endswith(k))
        found[kernel] = module.bytecode
    assert set(found) == set(KERNELS), [m.name for m in modules]
    return found


def compile_ptx(bytecode: bytes, arch: str, blocks) -> tuple[str, int]:
    """(PTX, shared memory bytes) from XLA's Triton pipeline for ``arch``."""
    from jax._src.lib import triton

    if not hasattr(triton, "compile"):
        raise SystemExit(
            f"jax {jax.__version__} has no Triton compile entry point (from jax 0.11 XLA "
            f"compiles the Triton module inside its GPU compile); use the jax 0.10.2 wheels "
            f"pinned in ci/constraints-cuda-compile.txt")
    result = triton.compile("cuda", bytecode, gpu_arch.ARCHS[arch].capability,
                            num_warps=blocks.num_warps, num_ctas=1,
                            num_stages=blocks.num_stages)
    return result.asm.decode() if isinstance(result.asm, bytes) else result.asm, result.smem_bytes


def ptxas_report(ptx: str, arch: str) -> dict:
    """Registers and spill bytes from ``ptxas -v``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas_path(), "-v", "--gpu-name", gpu_arch.ARCHS[arch].ptxas_gpu,
                               path, "-o", os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True, check=True)
    text = proc.stdout + proc.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    stores, loads = (int(spill.group(1)), int(spill.group(2))) if spill else (0, 0)
    return {"registers": int(regs.group(1)) if regs else -1, "spill_store_bytes": stores,
            "spill_load_bytes": loads, "spill_bytes": stores + loads}


def table_config(arch: str, dtype: str, head_dim: int):
    """The table entry; for float32 (refused on a GPU, no table) the bfloat16 tiles."""
    if dtype == "float32":
        return block_sizes.TABLES[arch][(head_dim, 2)]
    return block_sizes.block_config(arch, head_dim, DTYPES[dtype])


def entry_rows(arch: str, dtype: str, head_dim: int, config=None, kernels=KERNELS) -> list[dict]:
    """One row (the KEYS) per kernel of one table entry."""
    config = config or table_config(arch, dtype, head_dim)
    rows = []
    for kernel, bytecode in capture_modules(arch, dtype, head_dim, config).items():
        if kernel not in kernels:
            continue
        blocks = getattr(config, kernel)
        ptx, smem = compile_ptx(bytecode, arch, blocks)
        row = {"arch": arch, "dtype": dtype, "head_dim": head_dim, "kernel": kernel,
               **dataclasses.asdict(blocks), "smem_bytes": smem,
               "smem_limit": gpu_arch.ARCHS[arch].smem_limit, **ptxas_report(ptx, arch),
               "pipelined": bool(re.search(r"\bcp\.async\b|cp\.async\.bulk", ptx)),
               "wgmma_count": len(re.findall(r"\bwgmma\.mma_async\b", ptx)),
               "mma_sync_count": len(re.findall(r"\bmma\.sync\b", ptx))}
        rows.append({k: row[k] for k in KEYS})
    return rows


def problems(row: dict) -> list[str]:
    """What --check refuses in a row (bfloat16 only: f32 is refused at run time, see docs)."""
    if row["dtype"] != "bfloat16":
        return []
    out = []
    if row["spill_bytes"]:
        out.append(f"{row['spill_bytes']} spill bytes")
    if row["smem_bytes"] > row["smem_limit"]:
        out.append(f"smem {row['smem_bytes']} > {row['smem_limit']}")
    if not row["pipelined"]:
        out.append("not pipelined (no cp.async / TMA)")
    return out


def _override(config, specs):
    for spec in specs:
        kernel, _, values = spec.partition("=")
        blocks = block_sizes.KernelBlocks(*(int(x) for x in values.split(",")))
        config = dataclasses.replace(config, **{kernel: blocks})
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--arch", action="append", choices=sorted(gpu_arch.ARCHS))
    parser.add_argument("--dtype", action="append", choices=sorted(DTYPES))
    parser.add_argument("--head-dim", action="append", type=int)
    parser.add_argument("--kernel", action="append", choices=KERNELS)
    parser.add_argument("--blocks", action="append", default=[],
                        help="KERNEL=block_q,block_k,warps,stages override (tuning)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every bf16 entry has 0 spills, fits and is pipelined")
    args = parser.parse_args(argv)
    heads = args.head_dim or sorted({d for table in block_sizes.TABLES.values() for d, _ in table})
    bad = []
    if not args.json:
        print(" ".join(f"{k[:10]:>10}" for k in KEYS))
    for arch in args.arch or sorted(gpu_arch.ARCHS):
        for dtype in args.dtype or sorted(DTYPES):
            for head_dim in heads:
                config = _override(table_config(arch, dtype, head_dim), args.blocks)
                for row in entry_rows(arch, dtype, head_dim, config, args.kernel or KERNELS):
                    if args.json:
                        print(json.dumps(row), flush=True)
                    else:
                        print(" ".join(f"{row[k]!s:>10}" for k in KEYS), flush=True)
                    bad += [f"{arch} {dtype} D{head_dim} {row['kernel']}: {p}"
                            for p in problems(row)]
    if args.check and bad:
        print("\n".join(["FAILED:", *bad]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
