"""MFU of the distillation train step: Tarka student + online EmbeddingGemma-shaped teacher.

    python benchmarks/gpu_train_mfu.py RESULTS_DIR [--dry-run] [--batch 32] [--seq 512]
                                       [--remat] [--attention IMPL] [--budget-s 60]

bf16 compute (params float32), full rows of ``--seq`` tokens, one jitted step
(teacher forward, student forward + backward, cosine + KL loss, AdamW). The same
script measures the dense bf16 matmul rate of this device (8192^3 ``jnp.dot``),
and reports

    MFU = model FLOPs per step / (step time x measured matmul rate)

    model FLOPs per step = tokens x (6 N_student + 2 N_teacher)        non-embedding
                         + 6 Ns_dense B + 2 Nt_dense B                   Dense heads, per text
                         + (3 x student + 1 x teacher) attention FLOPs   4 Hq D per allowed pair

N = non-embedding, non-Dense parameters (the per-token matmuls). Allowed pairs
follow the model's masks: full layers T^2 per row, sliding layers only |i - j| <=
256. Embedding gathers, norms and softmax are not counted (standard MFU).
Writes RESULTS_DIR/train_mfu.json. ``--dry-run``: CPU, tiny models, seq 32, for CI.
Stops timing once ``--budget-s`` is spent (gpu_check.sh caps the whole step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def attention_flops(config, b: int, t: int) -> float:
    """Forward attention FLOPs of one model over B full rows of T tokens (QK^T and PV)."""
    i = np.arange(t)
    total = 0.0
    for layer in range(config.num_layers):
        window = config.window_for(layer)
        if window is None:
            pairs = t * t
        else:
            lo, hi = np.maximum(i - window[0], 0), np.minimum(i + window[1] + 1, t)
            pairs = int((hi - lo).sum())
        total += 4.0 * config.num_heads * config.head_dim * pairs * b
    return total


def param_counts(params) -> tuple[int, int]:
    """(per-token non-embedding params, Dense-head params) of a param tree."""
    import jax

    token, dense = 0, 0
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if "embed_tokens" in name:
            continue
        if name.startswith("dense_"):
            dense += int(np.prod(x.shape))
        else:
            token += int(np.prod(x.shape))
    return token, dense


def step_flops(student, teacher, s_shapes, t_shapes, b: int, t: int) -> dict:
    ns, nsd = param_counts(s_shapes)
    nt, ntd = param_counts(t_shapes)
    out = {"n_student": ns, "n_student_dense": nsd, "n_teacher": nt, "n_teacher_dense": ntd,
           "params_flops": b * t * (6.0 * ns + 2.0 * nt) + b * (6.0 * nsd + 2.0 * ntd),
           "attention_flops": 3.0 * attention_flops(student, b, t)
           + attention_flops(teacher, b, t)}
    out["total"] = out["params_flops"] + out["attention_flops"]
    return out


def matmul_rate(dry: bool) -> float:
    """Dense matmul FLOP/s of this device in bf16 (float32 on the CPU dry run)."""
    import jax
    import jax.numpy as jnp

    n = 256 if dry else 8192
    dtype = jnp.float32 if dry else jnp.bfloat16
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    iters = 3 if dry else 20
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iters):
            out = f(a, b)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / iters)
    return 2.0 * n ** 3 / best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--batch", type=int, default=None, help="rows (default 32; dry 4)")
    p.add_argument("--seq", type=int, default=None, help="tokens per row (default 512; dry 32)")
    p.add_argument("--remat", action="store_true")
    p.add_argument("--attention", default=None, help="attention implementation (None = best)")
    p.add_argument("--budget-s", type=float, default=float(os.environ.get("BUDGET_S", "60")))
    args = p.parse_args(argv)
    dry = args.dry_run or os.environ.get("DRY_RUN") == "1"
    b = args.batch or (4 if dry else 32)
    t = args.seq or (32 if dry else 512)
    t0 = time.perf_counter()

    import jax
    from train_step import configs, random_params, synthetic_batch

    from tarka_jax.distill.loss import LossConfig
    from tarka_jax.distill.step import StepConfig, make_train_step
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import create_state, shard_params

    student, teacher = configs("tiny" if dry else "full", 262_144)
    result = {"device": str(jax.devices()[0]), "jax": jax.__version__, "dry_run": dry,
              "batch": b, "seq": t, "dtype": "bfloat16", "remat": args.remat,
              "attention": args.attention}
    try:
        result["matmul_flops_per_s"] = matmul_rate(dry)
        s_params, t_params = random_params(student, 1), random_params(teacher, 2)
        result["flops"] = step_flops(student, teacher, s_params, t_params, b, t)
        mesh = shd.make_mesh(-1, 1)
        tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-4, warmup_steps=0), 1000)
        state, state_sh = create_state(s_params, tx, mesh)
        teacher_params, teacher_sh = shard_params(t_params, mesh)
        del s_params, t_params
        cfg = StepConfig(student=student, teacher=teacher, loss=LossConfig(cosine=1.0, kl=1.0),
                         dtype="bfloat16", attention=args.attention, remat=args.remat)
        step = make_train_step(cfg, tx, schedule, mesh, state_sh, teacher_sh)
        batch = {"student": synthetic_batch(student, b, t, 0),
                 "teacher": synthetic_batch(teacher, b, t, 1)}
        start = time.perf_counter()
        state, m = step(state, teacher_params, batch)
        jax.block_until_ready(m)
        result["compile_and_first_s"] = time.perf_counter() - start
        times = []
        while len(times) < 10 and (time.perf_counter() - t0 < args.budget_s or len(times) < 2):
            start = time.perf_counter()
            state, m = step(state, teacher_params, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - start)
        result["step_s"] = float(np.median(times))
        result["steps_timed"] = len(times)
        result["loss"] = float(m["loss"])
        result["tokens_per_s"] = b * t / result["step_s"]
        result["mfu"] = result["flops"]["total"] / (result["step_s"]
                                                    * result["matmul_flops_per_s"])
    except Exception as e:  # noqa: BLE001  (recorded; gpu_check.sh goes on)
        result["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, "train_mfu.json"), "w") as f:
        json.dump(result, f, indent=1)
    if "error" in result:
        print(f"train_mfu: error {result['error']}")
        return 1
    print(f"train_mfu{' (dry run)' if dry else ''}: B={b} T={t} bf16 step "
          f"{result['step_s'] * 1e3:.1f} ms, {result['tokens_per_s']:.0f} student tok/s, "
          f"{result['flops']['total'] / result['step_s'] / 1e12:.2f} model TFLOP/s vs matmul "
          f"{result['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s -> MFU {100 * result['mfu']:.1f}% "
          f"(goal >= 35% on H100); compile+first {result['compile_and_first_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
