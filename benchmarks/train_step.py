"""CPU (or any device) train-step throughput: tarka-jax's jitted distillation step vs PyTorch.

The same step on both sides: teacher forward (no grad), student forward + backward,
the cosine + in-batch KL loss of ``tarka_jax.distill.loss``, global-norm clipping
and AdamW. PyTorch runs sentence-transformers modules loaded from folders written
from the very same random params. Prints tokens/s (student tokens) and the ratio
ours / PyTorch for each size:

* ``tiny``: the tiny teacher/student of ``tarka_jax.testing.tiny``;
* ``full``: the Tarka student (24 layers, 768 wide, vocab 64,400) and an
  EmbeddingGemma-shaped teacher (vocab ``--teacher-vocab``, default 262,144), at a
  dry size on CPU (``--full-batch`` x ``--full-seq``).

    python benchmarks/train_step.py [--sizes tiny,full] [--steps 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

LR, CLIP, WD = 1e-4, 1.0, 0.01


def configs(size: str, teacher_vocab: int):
    from tarka_jax.nn.config import DenseSpec, ModelConfig, layer_types_pattern
    from tarka_jax.testing.tiny import tiny_config

    if size == "tiny":
        return tiny_config(211, 48, 2, (24,)), tiny_config(307, 64, 3, (40, 24))

    def tarka(vocab):
        return ModelConfig(
            vocab_size=vocab, hidden_size=768, intermediate_size=1152, num_layers=24,
            num_heads=3, num_kv_heads=1, head_dim=256, query_pre_attn_scalar=256,
            layer_types=layer_types_pattern(24, 6),
            sliding_window=512, dense=(DenseSpec(768, 3072), DenseSpec(3072, 768)))

    return tarka(64_400), tarka(teacher_vocab)


def random_params(config, seed: int):
    import jax

    from tarka_jax.nn.encoder import init_params

    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape, dtype=np.float32) * 0.05),
                        shapes)


def synthetic_batch(config, b: int, t: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(3, config.vocab_size, (b, t)).astype(np.int32),
            "segment_ids": np.ones((b, t), np.int32),
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()}


def time_jax(student, teacher, s_params, t_params, batch, steps: int, dtype: str) -> dict:
    import jax

    from tarka_jax.distill.loss import LossConfig
    from tarka_jax.distill.step import StepConfig, make_train_step
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import create_state, shard_params

    mesh = shd.make_mesh(1, 1) if len(jax.devices()) > 1 else shd.make_mesh(-1, 1)
    tx, schedule = make_optimizer(OptimizerConfig(learning_rate=LR, warmup_steps=0,
                                                  clip_norm=CLIP, weight_decay=WD), 1000)
    state, state_sh = create_state(s_params, tx, mesh)
    teacher_params, teacher_sh = shard_params(t_params, mesh)
    cfg = StepConfig(student=student, teacher=teacher, loss=LossConfig(cosine=1.0, kl=1.0),
                     dtype=dtype)
    step = make_train_step(cfg, tx, schedule, mesh, state_sh, teacher_sh)
    dev = {"student": batch, "teacher": batch}
    start = time.perf_counter()
    state, m = step(state, teacher_params, dev)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        state, m = step(state, teacher_params, dev)
        jax.block_until_ready(m)
        best = min(best, time.perf_counter() - start)
    return {"step_s": best, "compile_and_first_s": compile_s, "loss": float(m["loss"])}


def _torch_loss(torch, s, t, temperature=0.05):
    F = torch.nn.functional
    s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    cos = (1 - (s * t).sum(-1)).mean()
    off = ~torch.eye(s.shape[0], dtype=torch.bool)
    ls = (s @ s.T / temperature).masked_fill(~off, float("-inf")).log_softmax(-1)
    lt = (t @ t.T / temperature).masked_fill(~off, float("-inf")).log_softmax(-1)
    kl = (lt.exp() * torch.where(off, lt - ls, torch.zeros_like(ls))).sum(-1).mean()
    return cos + kl


def write_st_folder(folder, config, params, tok_dir):
    from tarka_jax.convert.st_folder import SentenceTransformerMeta, save_sentence_transformers

    save_sentence_transformers(folder, config, params, SentenceTransformerMeta(), tok_dir)


def time_torch(s_folder, t_folder, batch, steps: int, dtype: str) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    student = SentenceTransformer(s_folder, device="cpu").to(torch_dtype).train()
    teacher = SentenceTransformer(t_folder, device="cpu").to(torch_dtype).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=WD)
    features = {"input_ids": torch.from_numpy(batch["input_ids"]).long(),
                "attention_mask": torch.from_numpy(batch["segment_ids"] > 0).long()}

    def one():
        with torch.no_grad():
            t = teacher(dict(features))["sentence_embedding"].float()
        s = student(dict(features))["sentence_embedding"].float()
        loss = _torch_loss(torch, s, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
        opt.step()
        return float(loss.detach())

    one()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        loss = one()
        best = min(best, time.perf_counter() - start)
    return {"step_s": best, "loss": loss, "threads": torch.get_num_threads()}


def run_size(size, args, tmp) -> dict:
    from tarka_jax.testing.reference import train_tokenizer

    student, teacher = configs(size, args.teacher_vocab)
    b, t = (8, 32) if size == "tiny" else (args.full_batch, args.full_seq)
    s_params, t_params = random_params(student, 1), random_params(teacher, 2)
    batch = synthetic_batch(student, b, t, 0)
    out = {"size": size, "batch": b, "seq": t, "tokens": b * t, "dtype": args.dtype}
    out["jax"] = time_jax(student, teacher, s_params, t_params, batch, args.steps, args.dtype)
    out["jax"]["tokens_per_s"] = b * t / out["jax"]["step_s"]
    if args.no_torch:
        return out
    try:
        tok_dir = os.path.join(tmp, "tok")
        if not os.path.exists(tok_dir):
            train_tokenizer(211, tok_dir)
        s_dir, t_dir = os.path.join(tmp, f"{size}_s"), os.path.join(tmp, f"{size}_t")
        write_st_folder(s_dir, student, s_params, tok_dir)
        write_st_folder(t_dir, teacher, t_params, tok_dir)
        del s_params, t_params
        out["torch"] = time_torch(s_dir, t_dir, batch, args.steps, args.dtype)
        out["torch"]["tokens_per_s"] = b * t / out["torch"]["step_s"]
        out["ratio"] = out["jax"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
    except ImportError as e:
        out["torch"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,full")
    p.add_argument("--steps", type=int, default=3, help="timed steps (best of) after one warm-up")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--full-batch", type=int, default=2)
    p.add_argument("--full-seq", type=int, default=64)
    p.add_argument("--teacher-vocab", type=int, default=262_144)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax

    results = {"machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "jax": jax.__version__, "device": str(jax.devices()[0]),
               "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            row = run_size(size, args, tmp)
            results["rows"].append(row)
            line = (f"{size:>5} B={row['batch']} T={row['seq']} {row['dtype']}: "
                    f"jax {row['jax']['tokens_per_s']:.1f} tok/s "
                    f"(step {row['jax']['step_s'] * 1e3:.1f} ms, compile+first "
                    f"{row['jax']['compile_and_first_s']:.1f} s)")
            if "ratio" in row:
                line += (f" | torch {row['torch']['tokens_per_s']:.1f} tok/s (step "
                         f"{row['torch']['step_s'] * 1e3:.1f} ms) | ratio jax/torch "
                         f"{row['ratio']:.2f}x")
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
