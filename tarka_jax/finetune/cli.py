"""``tarka-jax finetune --config FILE.toml [--workdir DIR] [--max-steps N] [--resume]
[--allow-config-change]``.

Registered in :mod:`tarka_jax.cli` as
``register_lazy("finetune", HELP, "tarka_jax.finetune.cli:COMMAND")``; also runs
stand-alone as ``python -m tarka_jax.finetune.cli``.
"""

from __future__ import annotations

import argparse
import os
import sys

from tarka_jax.cli import Command
from tarka_jax.distill.cli import add_arguments as add_distill_arguments

HELP = "fine-tune a model on (anchor, positive[, negative]) pairs (contrastive, sharded)"
DESCRIPTION = (
    "Fine-tune an embedding model with in-batch multiple-negatives ranking (optional hard "
    "negatives, Matryoshka dims, GradCache mini-batches) as the TOML config describes "
    "(schema: tarka_jax/finetune/config.py; example: examples/finetune_demo.toml). The run "
    "folder holds checkpoints, metrics.jsonl (with held-out retrieval MRR) and what "
    "`python convert/flax_to_hf.py RUN_DIR OUT [--step N]` needs to export a step.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_distill_arguments(p)  # --config, --workdir, --max-steps, --resume
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue although the config differs from the run's "
                        "(the data position still has to match)")


def run(args: argparse.Namespace) -> int:
    from tarka_jax.distill.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host: before anything touches a jax backend
    from tarka_jax.finetune.config import load_config
    from tarka_jax.finetune.run import train

    config = load_config(args.config)
    with open(args.config, encoding="utf-8") as f:
        text = f.read()
    workdir = args.workdir or os.path.join(
        os.path.dirname(os.path.abspath(args.config)), "runs",
        os.path.splitext(os.path.basename(args.config))[0])
    if args.max_steps is not None and args.max_steps <= 0:
        raise ValueError(f"--max-steps must be > 0, got {args.max_steps}")
    if args.allow_config_change and not args.resume:
        raise ValueError("--allow-config-change only applies with --resume")
    result = train(config, workdir, max_steps=args.max_steps, resume=args.resume,
                   allow_config_change=args.allow_config_change, config_text=text)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items()
                      if k in ("loss", "eval_mrr", "eval_recall@1") and v is not None)
    print(f"step {result['step']}: {shown}; run folder {workdir}")
    return 0


COMMAND = Command("finetune", HELP, add_arguments, run, description=DESCRIPTION)


def main(argv=None) -> int:
    """Stand-alone entry point, the same as ``tarka-jax finetune``."""
    from tarka_jax import cli

    cli.register(COMMAND)
    return cli.main(["finetune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
