"""The ``tarka-jax`` command line: one table of subcommands.

A subcommand is a :class:`~tarka_jax.runtime.command.Command` constant (name, one-line help,
``add_arguments(parser)``, ``run(args) -> exit code``) in the ``cli`` module of the package
that does the work (``tarka_jax.corpus.cli:COMMAND``, ``tarka_jax.recipe.cli:EVALUATE``).
Adding one is that constant plus one line in :data:`SUBCOMMANDS` below::

    ("embed-corpus", "embed a corpus into resumable .npy shards (multi-process)",
     "tarka_jax.corpus.cli:COMMAND"),

The module is imported only when that subcommand runs (or prints its ``--help``),
so ``tarka-jax embed`` never pays for, or breaks on, the training stack. Every
subcommand also runs as ``python -m tarka_jax NAME ...``. (Tests and plugins may call
:func:`register` with a Command object at run time.)

Errors a user can cause (bad paths, bad options, bad inputs) print one line,
``tarka-jax <command>: error: ...``, and exit with status 2; set
``TARKA_JAX_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tarka_jax.runtime.command import Command, execute

#: (name, one-line help, "module:attribute" of its Command). Sorted by name in --help.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("embed", "embed texts; write JSON lines or .npy", "tarka_jax.inference.cli:EMBED"),
    ("search", "rank documents for queries", "tarka_jax.inference.cli:SEARCH"),
    ("serve", "serve embeddings over HTTP (OpenAI- and TEI-compatible; needs the serve extra)",
     "tarka_jax.serve.cli:COMMAND"),
    ("embed-corpus", "embed a corpus into resumable .npy shards (multi-process)",
     "tarka_jax.corpus.cli:COMMAND"),
    ("mteb", "run MTEB tasks on a model (needs the mteb extra)", "tarka_jax.mteb.cli:COMMAND"),
    ("convert", "convert between HF / sentence-transformers and Flax folders",
     "tarka_jax.convert.cli:COMMAND"),
    ("distill", "distil a student from a teacher (sharded, resumable)",
     "tarka_jax.distill.cli:COMMAND"),
    ("finetune", "fine-tune on (anchor, positive[, negative]) pairs (contrastive, sharded)",
     "tarka_jax.finetune.cli:COMMAND"),
    ("train-tokenizer", "train a byte-level BPE vocabulary for a student (tokenizers' trainer)",
     "tarka_jax.recipe.cli:TRAIN_TOKENIZER"),
    ("init-student", "a student from a teacher + a new tokenizer (embedding transplant)",
     "tarka_jax.recipe.cli:INIT_STUDENT"),
    ("cache-teacher", "compute teacher embeddings once for a corpus",
     "tarka_jax.recipe.cli:CACHE_TEACHER"),
    ("evaluate", "a model on held-out pairs (retrieval, STS) and/or against its teacher",
     "tarka_jax.recipe.cli:EVALUATE"),
)

__all__ = ["SUBCOMMANDS", "Command", "build_parser", "main", "register", "register_lazy"]

_COMMANDS: dict[str, Command] = {}
_LAZY: dict[str, tuple[str, str]] = {}  # name -> (help, "module:attribute")


def register(command: Command) -> Command:
    """Add a subcommand object at run time (replacing one of the same name)."""
    _COMMANDS[command.name] = command
    _LAZY.pop(command.name, None)
    return command


def register_lazy(name: str, help: str, target: str) -> None:
    """Add a subcommand whose Command lives at ``"module:attribute"`` (what the table does)."""
    if name not in _COMMANDS:
        _LAZY[name] = (help, target)


def _command(name: str) -> Command:
    if name not in _COMMANDS:
        module, _, attribute = _LAZY[name][1].partition(":")
        _COMMANDS[name] = getattr(importlib.import_module(module), attribute)
    return _COMMANDS[name]


def _names() -> list[str]:
    return sorted(set(_COMMANDS) | set(_LAZY))


def _help(name: str) -> str:
    return _COMMANDS[name].help if name in _COMMANDS else _LAZY[name][0]


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``selected``'s arguments are built (lazy imports)."""
    from tarka_jax import __version__

    parser = argparse.ArgumentParser(
        prog="tarka-jax", description="Tarka-Embedding / EmbeddingGemma in JAX.")
    parser.add_argument("--version", action="version", version=f"tarka-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _names():
        if name == selected:
            command = _command(name)
            p = sub.add_parser(name, help=command.help,
                               description=command.description or command.help)
            command.add_arguments(p)
        else:
            sub.add_parser(name, help=_help(name), add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tarka-jax`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in _names():
        selected = None
    try:
        parser = build_parser(selected)
    except ImportError as e:  # a lazily registered command whose dependencies are missing
        print(f"tarka-jax {selected}: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # Before the first compilation: a second run loads compiled programs from disk
    # (TARKA_JAX_COMPILATION_CACHE=0 turns it off, a path moves it; tarka_jax.runtime.compile_cache).
    from tarka_jax.runtime.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    return execute(_command(args.command), args)


for _name, _help_line, _target in SUBCOMMANDS:
    register_lazy(_name, _help_line, _target)
