"""What ``tarka-jax distill`` and ``tarka-jax finetune`` share on the command line.

The arguments (:func:`add_arguments`), and :func:`run_training`: start the processes, read
the TOML, pick the run folder, train or resume, print the last metrics -- or, when a signal
stopped the run (:mod:`tarka_jax.train.stop`), print one line with the command that resumes
it and return ``128 + the signal number``. Every other failure is the subcommand
protocol's: one line, exit 2 (:func:`tarka_jax.runtime.command.execute`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from tarka_jax.errors import UsageError
from tarka_jax.runtime import distributed
from tarka_jax.train.stop import DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS, Stopped


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the run's TOML file")
    p.add_argument("--workdir", default=None,
                   help="run folder (default: runs/<config file stem> next to the config)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop when the run reaches this step (absolute; the learning-rate "
                        "schedule still spans train.steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest readable checkpoint in --workdir (state and "
                        "data position)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: accept a config or input files that differ from the "
                        "run's in what changes training, recorded in config_changes.jsonl")
    p.add_argument("--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS,
                   help="on SIGINT / SIGTERM the run saves the step it reaches and exits; if "
                        "that takes longer than this, it exits without that checkpoint "
                        f"(default {DEFAULT_GRACE_SECONDS:g})")
    distributed.add_arguments(p)


def default_workdir(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), "runs",
                        os.path.splitext(os.path.basename(config_path))[0])


def resume_command(name: str, args: argparse.Namespace, workdir: str) -> str:
    """The command line that continues a stopped run."""
    parts = ["tarka-jax", name, "--config", args.config, "--workdir", workdir, "--resume"]
    if args.max_steps is not None:
        parts += ["--max-steps", str(args.max_steps)]
    return shlex.join(parts)


def run_training(name: str, args: argparse.Namespace, load_config, train,
                 shown: tuple[str, ...]) -> int:
    """Start the processes, read the TOML, train (or resume) in the run folder, print the last
    metrics named in ``shown``; a stop on a signal prints how to resume."""
    if args.max_steps is not None and args.max_steps <= 0:
        raise UsageError(f"--max-steps must be > 0, got {args.max_steps}")
    if args.allow_config_change and not args.resume:
        raise UsageError("--allow-config-change only applies with --resume")
    if not 0 < args.grace_seconds <= MAX_GRACE_SECONDS:
        raise UsageError(f"--grace-seconds must be in (0, {MAX_GRACE_SECONDS:g}], got "
                         f"{args.grace_seconds}")
    distributed.initialize(args)  # multi-process: before anything touches a jax backend
    config = load_config(args.config)
    with open(args.config, encoding="utf-8") as f:
        text = f.read()
    workdir = os.path.abspath(args.workdir or default_workdir(args.config))
    try:
        result = train(config, workdir, max_steps=args.max_steps, resume=args.resume,
                       config_text=text, allow_config_change=args.allow_config_change,
                       grace_seconds=args.grace_seconds)
    except Stopped as e:
        if e.saved:
            print(f"tarka-jax {name}: {e}; checkpoint saved in {workdir}; resume with: "
                  f"{resume_command(name, args, workdir)}", file=sys.stderr)
        else:
            print(f"tarka-jax {name}: {e}; nothing saved yet; start again with the same "
                  "command", file=sys.stderr)
        return e.exit_status
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.items()
                        if k in shown and v is not None)
    print(f"step {result['step']}: {metrics}; run folder {workdir}")
    return 0
