"""``tarka-jax distill --config FILE.toml [--workdir DIR] [--max-steps N] [--resume]
[--allow-config-change] [--grace-seconds S]``.

Listed in :data:`tarka_jax.cli.SUBCOMMANDS` as
``("distill", ..., "tarka_jax.distill.cli:COMMAND")``; also runs
stand-alone as ``python -m tarka_jax.distill.cli``.
"""

from __future__ import annotations

import argparse

from tarka_jax.runtime.command import Command
from tarka_jax.train.command import add_arguments, run_training

HELP = "distil a student from a teacher (sharded, resumable)"
DESCRIPTION = (
    "Distil a student embedding model from a teacher on raw text, as the TOML config "
    "describes (schema: tarka_jax/distill/config.py; example: examples/distill_tiny.toml). "
    "The run folder holds checkpoints, metrics.jsonl and what "
    "`python convert/flax_to_hf.py RUN_DIR OUT --step N` needs to export any step. "
    "SIGINT / SIGTERM save the step reached and print the command that resumes.")


def run(args: argparse.Namespace) -> int:
    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train

    return run_training("distill", args, load_config, train,
                        ("loss", "cosine", "kl", "eval_cosine", "eval_mrr", "eval_ndcg@10",
                         "eval_sts_spearman"))


# --config, --workdir, --max-steps, --resume, --allow-config-change, --grace-seconds and the
# multi-process flags: tarka_jax.train.command, shared with finetune.
COMMAND = Command("distill", HELP, add_arguments, run, description=DESCRIPTION)

if __name__ == "__main__":
    import sys

    from tarka_jax.runtime.command import main_for

    sys.exit(main_for(COMMAND))
