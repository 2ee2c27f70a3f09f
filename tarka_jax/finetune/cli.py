"""``tarka-jax finetune --config FILE.toml [--workdir DIR] [--max-steps N] [--resume]
[--allow-config-change]``.

A row of :data:`tarka_jax.cli.SUBCOMMANDS`; also runs stand-alone as
``python -m tarka_jax.finetune.cli``.
"""

from __future__ import annotations

import argparse

from tarka_jax.distill.cli import add_arguments as add_distill_arguments
from tarka_jax.distill.cli import run_training
from tarka_jax.runtime.command import Command

HELP = "fine-tune a model on (anchor, positive[, negative]) pairs (contrastive, sharded)"
DESCRIPTION = (
    "Fine-tune an embedding model with in-batch multiple-negatives ranking (optional hard "
    "negatives, Matryoshka dims, GradCache mini-batches) as the TOML config describes "
    "(schema: tarka_jax/finetune/config.py; example: examples/finetune_demo.toml). The run "
    "folder holds checkpoints, metrics.jsonl (with held-out retrieval MRR, nDCG@10, recall@k and STS Spearman) and what "
    "`python convert/flax_to_hf.py RUN_DIR OUT [--step N]` needs to export a step.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    # --config, --workdir, --max-steps, --resume, --allow-config-change, multi-process flags
    add_distill_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tarka_jax.finetune.config import load_config
    from tarka_jax.finetune.run import train

    return run_training(args, load_config, train, ("loss", "eval_mrr", "eval_ndcg@10",
                                                      "eval_recall@1", "eval_sts_spearman"))


COMMAND = Command("finetune", HELP, add_arguments, run, description=DESCRIPTION)
