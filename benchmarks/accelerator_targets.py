"""The accelerators benchmarks/accelerator_compile.py compiles for: chips, slices, GPU hosts.

Each chip carries its vendor's published peak (bfloat16 dense matmul), HBM size and
bandwidth, with the source named. The devices come from
``jax.experimental.topologies.get_topology_desc``: compile-only devices, no hardware.

* TPU (needs ``libtpu``: ``pip install "jax[tpu]"``): the slice name is libtpu's
  ``"<version>:<chips>"``; ``chips_per_host_bounds`` says how many chips one host
  holds (v5e/v6e hosts hold 2x4 = 8; without it libtpu splits a 2x4 slice over two
  hosts of 2x2). v5p hosts hold 2x2x1 = 4 chips, so ``v5p:2x2x2`` is a two-host slice.
* GPU (needs the jax 0.10.2 CUDA plugin: ci/constraints-cuda-compile.txt): the
  topology is ``"<slices>x<hosts>x<gpus per host>"``; the device is described by a
  ``GpuTargetConfigProto`` in text form written from NVIDIA's datasheets
  (benchmarks/gpu_targets/).
"""

from __future__ import annotations

import dataclasses
import os

TARGETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_targets")


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float  # bfloat16 dense matmul, FLOP/s per chip
    hbm_bytes: float  # per chip
    hbm_bandwidth: float  # bytes/s per chip
    usable: float  # fraction of HBM a jax program may use by default
    source: str


GB = 1e9
GIB = 2**30
CHIPS = {
    # TPU HBM: what XLA:TPU itself says a program may use (its compile-time OOM message,
    # libtpu 0.0.50.1: "available HBM (15.75G)", in GiB), not the datasheet's "16 GB", which
    # read as 16e9 bytes undercounted v5e by 5.5% and flagged a step that compiles as 106%.
    "v5e": Chip("TPU v5e", 197e12, 15.75 * GIB, 819 * GB, 1.0,
                "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 819 GB/s; "
                "15.75 GiB HBM available to XLA"),
    "v6e": Chip("TPU v6e", 918e12, 31.24 * GIB, 1638 * GB, 1.0,
                "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 1638 GB/s; "
                "31.24 GiB HBM available to XLA"),
    "v5p": Chip("TPU v5p", 459e12, 95.73 * GIB, 2765 * GB, 1.0,
                "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 2765 GB/s; "
                "95.73 GiB HBM available to XLA"),
    # GPUs: XLA's allocator takes 75% of the memory by default
    # (XLA_PYTHON_CLIENT_MEM_FRACTION=.75), so that is the budget checked.
    "a100": Chip("A100-SXM4-80GB", 312e12, 80 * GB, 2039 * GB, 0.75,
                 "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense, 80 GB HBM2e, 2039 GB/s"),
    "h100": Chip("H100-SXM5-80GB", 989.4e12, 80 * GB, 3350 * GB, 0.75,
                 "NVIDIA H100 datasheet (SXM): 989.4 TFLOP/s bf16 dense, 80 GB HBM3, 3.35 TB/s"),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    key: str  # what --topology takes
    platform: str  # "tpu" | "gpu"
    chip: str  # key of CHIPS
    name: str  # libtpu slice name, or the CUDA "slices x hosts x gpus" string
    hosts: int
    chips_per_host_bounds: tuple[int, int, int] | None = None  # TPU only
    target_config: str | None = None  # GPU only: file in gpu_targets/

    @property
    def devices_per_host(self) -> int:
        return self.chips // self.hosts

    @property
    def chips(self) -> int:
        n = 1
        for part in self.name.split(":")[-1].split("x"):
            n *= int(part)
        return n


TOPOLOGIES = {t.key: t for t in [
    Topology("v5e-8", "tpu", "v5e", "v5e:2x4", 1, (2, 4, 1)),
    Topology("v6e-8", "tpu", "v6e", "v6e:2x4", 1, (2, 4, 1)),
    Topology("v5p-16", "tpu", "v5p", "v5p:2x2x2", 2),  # 8 chips (16 cores), 2 hosts of 4
    Topology("a100x8", "gpu", "a100", "1x1x8", 1, target_config="a100_sxm4_80gb.txtpb"),
    Topology("h100x8", "gpu", "h100", "1x1x8", 1, target_config="h100_sxm5_80gb.txtpb"),
    Topology("a100x16", "gpu", "a100", "1x2x8", 2, target_config="a100_sxm4_80gb.txtpb"),
    Topology("h100x16", "gpu", "h100", "1x2x8", 2, target_config="h100_sxm5_80gb.txtpb"),
]}

#: The attention implementations each platform can run (docs/attention.md).
IMPLEMENTATIONS = {"tpu": ("splash_tpu", "xla_blocked", "xla"),
                   "gpu": ("pallas_triton", "xla_blocked", "xla")}


def compile_only_devices(topology: Topology) -> list:
    """The topology's devices (compile-only: they lower and compile, never run)."""
    from jax.experimental import topologies

    if topology.platform == "tpu":
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server off a TPU VM
        # libtpu takes /tmp/libtpu_lockfile to guard a TPU; compile-only devices have none,
        # and two compiles (CI legs, people) on one machine must not lock each other out.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        kwargs = {}
        if topology.chips_per_host_bounds:
            kwargs["chips_per_host_bounds"] = list(topology.chips_per_host_bounds)
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.name,
                                            **kwargs)
    else:
        with open(os.path.join(TARGETS_DIR, topology.target_config)) as f:
            config = f.read()
        desc = topologies.get_topology_desc(platform="cuda", topology_name=topology.name,
                                            topology=topology.name, target_config=config)
    devices = list(desc.devices)
    hosts = len({d.process_index for d in devices})
    if len(devices) != topology.chips or hosts != topology.hosts:
        raise RuntimeError(f"{topology.key}: expected {topology.chips} devices on "
                           f"{topology.hosts} hosts, got {len(devices)} on {hosts}")
    return devices
