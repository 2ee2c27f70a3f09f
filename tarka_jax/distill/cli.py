"""``tarka-jax distill --config FILE.toml [--workdir DIR] [--max-steps N] [--resume]``.

Listed in :data:`tarka_jax.cli.SUBCOMMANDS` as
``("distill", ..., "tarka_jax.distill.cli:COMMAND")``; also runs
stand-alone as ``python -m tarka_jax.distill.cli``.
"""

from __future__ import annotations

import argparse
import os

from tarka_jax.errors import UsageError
from tarka_jax.runtime import distributed
from tarka_jax.runtime.command import Command

HELP = "distil a student from a teacher (sharded, resumable)"
DESCRIPTION = (
    "Distil a student embedding model from a teacher on raw text, as the TOML config "
    "describes (schema: tarka_jax/distill/config.py; example: examples/distill_tiny.toml). "
    "The run folder holds checkpoints, metrics.jsonl and what "
    "`python convert/flax_to_hf.py RUN_DIR OUT --step N` needs to export any step.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the run's TOML file")
    p.add_argument("--workdir", default=None,
                   help="run folder (default: runs/<config file stem> next to the config)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop when the run reaches this step (absolute; the learning-rate "
                        "schedule still spans train.steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --workdir (state and data "
                        "position)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: accept a config that differs from the run's in what "
                        "changes training, recorded in config_changes.jsonl with its step")
    distributed.add_arguments(p)


def run_training(args: argparse.Namespace, load_config, train, shown: tuple[str, ...]) -> int:
    """What ``distill`` and ``finetune`` share: start the processes, read the TOML, pick the
    run folder, train (or resume), print the last metrics named in ``shown``."""
    distributed.initialize(args)  # multi-process: before anything touches a jax backend
    config = load_config(args.config)
    with open(args.config, encoding="utf-8") as f:
        text = f.read()
    workdir = args.workdir or os.path.join(
        os.path.dirname(os.path.abspath(args.config)), "runs",
        os.path.splitext(os.path.basename(args.config))[0])
    if args.max_steps is not None and args.max_steps <= 0:
        raise UsageError(f"--max-steps must be > 0, got {args.max_steps}")
    if args.allow_config_change and not args.resume:
        raise UsageError("--allow-config-change only applies with --resume")
    result = train(config, workdir, max_steps=args.max_steps, resume=args.resume,
                   config_text=text, allow_config_change=args.allow_config_change)
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.items()
                        if k in shown and v is not None)
    print(f"step {result['step']}: {metrics}; run folder {workdir}")
    return 0


def run(args: argparse.Namespace) -> int:
    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train

    return run_training(args, load_config, train, ("loss", "cosine", "kl", "eval_cosine",
                                                   "eval_mrr", "eval_ndcg@10",
                                                   "eval_sts_spearman"))


COMMAND = Command("distill", HELP, add_arguments, run, description=DESCRIPTION)
