"""``tarka-jax convert hf-to-flax|flax-to-hf SRC OUT ...``: the converters as a subcommand.

The same functions as ``python convert/hf_to_flax.py`` / ``python convert/flax_to_hf.py``
(and ``python -m tarka_jax.convert.hf_to_flax``), with the same arguments.
"""

from __future__ import annotations

import argparse

from tarka_jax.convert import flax_to_hf, hf_to_flax
from tarka_jax.runtime.command import Command

_DIRECTIONS = {
    "hf-to-flax": (hf_to_flax.COMMAND, "sentence-transformers / HF folder, hub id or "
                                       "builtin:NAME -> a tarka-jax Flax folder"),
    "flax-to-hf": (flax_to_hf.COMMAND, "any model source (Flax folder, run folder + --step, "
                                       "builtin:NAME, ST folder) -> a sentence-transformers folder"),
}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    for name, (command, help_line) in _DIRECTIONS.items():
        command.add_arguments(sub.add_parser(name, help=help_line, description=help_line))


def _run(args: argparse.Namespace) -> int:
    return _DIRECTIONS[args.direction][0].run(args)


COMMAND = Command("convert", "convert between HF / sentence-transformers and Flax folders",
                  _add_arguments, _run, description=__doc__.strip().splitlines()[0])
