"""benchmarks/accelerator_compile.py without a TPU or GPU: its counts, its HBM check, its programs.

The compiles themselves need libtpu / the CUDA plugin (the tpu-compile and
gpu-compile legs of ci/kernel_legs.sh). Here: the FLOP counts against brute force
and against the kernels' own block rules, the HBM check failing where a reduced
model would overflow at full depth, and the program builders compiled for 8 CPU
devices (a 2-layer model), so none of it rots unseen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import accelerator_flops as flops  # noqa: E402
from accelerator_report import hbm_estimate, with_roofline  # noqa: E402
from accelerator_targets import CHIPS, TOPOLOGIES  # noqa: E402


@pytest.mark.parametrize("t,window", [(37, (4, 9)), (300, (256, 256)), (16, None), (5, (9, 9))])
def test_allowed_pairs_is_the_mask(t, window):
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    mask = np.ones((t, t), bool) if window is None else (j - i >= -window[0]) & (j - i <= window[1])
    assert flops.allowed_pairs(t, window) == mask.sum()


def test_executed_pairs_follow_the_kernels_blocks():
    w = (256, 256)
    # xla_blocked at T 2048: 16 query blocks of 128, each against 5 key blocks (640 keys).
    assert flops.blocked_pairs(2048, w) == 16 * 128 * 640
    # splash: 128-tiles; interior query blocks touch 5 key blocks, the two at each end fewer.
    assert flops.tiled_pairs(2048, w, 128, 128) == (12 * 5 + 2 * 4 + 2 * 3) * 128 * 128
    # A window wider than the row: every tile, like a full layer.
    assert flops.tiled_pairs(300, (500, 500), 128, 128) == flops.tiled_pairs(300, None, 128, 128)
    for impl in ("xla", "xla_blocked", "splash_tpu", "pallas_triton"):
        for window in (w, None):
            assert flops.executed_pairs(impl, 2048, window, 3) >= flops.allowed_pairs(2048, window)


def _row(layers, argument, temp, full_args=None, output=0, alias=0):
    row = {"compiled": True, "layers": layers, "chips": 8, "argument_bytes": argument,
           "temp_bytes": temp, "output_bytes": output, "alias_bytes": alias,
           "executed_flops": 8e12, "useful_flops": 6e12, "xla_flops": -1.0,
           "xla_bytes_accessed": -1.0, "tokens": 8 * 4096}
    if full_args is not None:
        row["arguments_bytes_full_depth"] = full_args
    return row


def test_hbm_check_scales_a_reduced_model_to_full_depth():
    from accelerator_compile import problems

    gib = 2**30
    chip = CHIPS["v5e"]  # 15.75 GiB available to XLA
    # 2 layers: 1 GiB of temps fits; scaled to 24 layers (12 GiB) + 5 GiB of arguments does not.
    reduced = with_roofline(_row(2, 1 * gib, 1 * gib, full_args=5 * gib), chip)
    assert hbm_estimate(reduced) == 5 * gib + 12 * gib
    assert reduced["hbm_fraction"] > 1 and problems(reduced)
    # The same bytes measured at full depth fit: nothing is scaled.
    full = with_roofline(_row(24, 5 * gib, 1 * gib), chip)
    assert hbm_estimate(full) == 6 * gib and full["hbm_fraction"] < 1 and not problems(full)
    # Donated state is counted once (output aliased to the arguments).
    aliased = _row(24, 5 * gib, 0, output=5 * gib, alias=5 * gib)
    assert hbm_estimate(aliased) == 5 * gib
    # GPUs: XLA's allocator's default 75% is the budget.
    assert with_roofline(full, CHIPS["a100"])["hbm_usable_bytes"] == int(0.75 * 80e9)
    assert problems({"compiled": False, "error": "XlaRuntimeError: boom\nmore"}) == [
        "XlaRuntimeError: boom"]


def test_roofline_numbers():
    chip = CHIPS["v6e"]
    row = with_roofline(_row(24, 2**30, 0), chip)
    assert row["bound"] == "compute"
    assert row["roofline_s"] == pytest.approx(1e12 / chip.peak_flops)
    assert row["mfu_ceiling"] == pytest.approx(0.75)  # useful / executed when compute-bound
    assert row["tokens_per_s_per_chip"] == pytest.approx(4096 / row["roofline_s"])


def test_topologies_name_their_hosts():
    assert {t.key: (t.chips, t.hosts) for t in TOPOLOGIES.values()} == {
        "v5e-8": (8, 1), "v6e-8": (8, 1), "v5p-16": (8, 2), "a100x8": (8, 1),
        "h100x8": (8, 1), "a100x16": (16, 2), "h100x16": (16, 2)}


def _programs_worker(out: str) -> None:
    """The builders, compiled for 8 CPU devices: a 2-layer model at small shapes."""
    import accelerator_programs as programs
    import jax
    from accelerator_compile import abstract_bytes

    devices = jax.devices()
    student, teacher = programs.models(2)
    assert [student.window_for(i) for i in range(2)] == [(256, 256), None]
    shapes = programs.planner_shapes(student, 8, max_length=256, batch_size=32, texts=200)
    built = [programs.forward(devices, student, "xla_blocked", *shapes["typical"]),
             programs.distill(devices, student, teacher, "xla_blocked", 16, 32, 4),
             programs.finetune(devices, student, "xla", 16, (16, 32), 8, 8)]
    result = {"shapes": shapes, "programs": []}
    for program in built:
        with jax.set_mesh(program.mesh):
            compiled = program.fn.trace(*program.args).lower().compile()
        result["programs"].append({
            "name": program.name, "argument_bytes": compiled.memory_analysis().argument_size_in_bytes,
            "abstract_bytes": abstract_bytes(program.args), "flops": program.flops})
    with open(out, "w") as f:
        json.dump(result, f)


@pytest.mark.slow  # ~40 s of CPU compiles in a subprocess with 8 host devices
def test_programs_compile_for_eight_cpu_devices(tmp_path):
    out = tmp_path / "out.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["shapes"]["largest"] == [32, 256, 32]
    rows, width, segments = result["shapes"]["typical"]
    assert rows % 8 == 0 and width <= 256 and segments >= 1
    for program in result["programs"]:
        # What the shapes say one device holds is what XLA allocated for the arguments.
        assert program["abstract_bytes"] == program["argument_bytes"], program["name"]
        assert program["flops"]["executed"] >= program["flops"]["useful"] > 0


if __name__ == "__main__":
    _programs_worker(sys.argv[1])
