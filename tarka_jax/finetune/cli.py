"""``tarka-jax finetune --config FILE.toml [--workdir DIR] [--max-steps N] [--resume]
[--allow-config-change] [--grace-seconds S]``.

A row of :data:`tarka_jax.cli.SUBCOMMANDS`; also runs stand-alone as
``python -m tarka_jax.finetune.cli``.
"""

from __future__ import annotations

import argparse

from tarka_jax.runtime.command import Command
from tarka_jax.train.command import add_arguments, run_training

HELP = "fine-tune a model on (anchor, positive[, negative]) pairs (contrastive, sharded)"
DESCRIPTION = (
    "Fine-tune an embedding model with in-batch multiple-negatives ranking (optional hard "
    "negatives, Matryoshka dims, GradCache mini-batches) as the TOML config describes "
    "(schema: tarka_jax/finetune/config.py; example: examples/finetune_demo.toml). The run "
    "folder holds checkpoints, metrics.jsonl (with held-out retrieval MRR, nDCG@10, "
    "recall@k and STS Spearman) and what "
    "`python convert/flax_to_hf.py RUN_DIR OUT [--step N]` needs to export a step. "
    "SIGINT / SIGTERM save the step reached and print the command that resumes.")


def run(args: argparse.Namespace) -> int:
    from tarka_jax.finetune.config import load_config
    from tarka_jax.finetune.run import train

    return run_training("finetune", args, load_config, train,
                        ("loss", "eval_mrr", "eval_ndcg@10", "eval_recall@1",
                         "eval_sts_spearman"))


# The arguments: tarka_jax.train.command, shared with distill.
COMMAND = Command("finetune", HELP, add_arguments, run, description=DESCRIPTION)

if __name__ == "__main__":
    import sys

    from tarka_jax.runtime.command import main_for

    sys.exit(main_for(COMMAND))
