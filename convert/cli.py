"""``tarka-jax convert hf-to-flax|flax-to-hf SRC OUT ...``: the converters as a subcommand.

The same functions as ``python convert/hf_to_flax.py`` / ``python convert/flax_to_hf.py``
(and ``python -m tarka_jax.convert.hf_to_flax``), with the same arguments.
"""

from __future__ import annotations

import argparse

from tarka_jax.command import Command
from tarka_jax.convert import common, flax_to_hf, hf_to_flax

_DIRECTIONS = {
    "hf-to-flax": (hf_to_flax, "sentence-transformers / HF folder, hub id or builtin:NAME -> "
                               "a tarka-jax Flax folder"),
    "flax-to-hf": (flax_to_hf, "any model source (Flax folder, run folder + --step, "
                               "builtin:NAME, ST folder) -> a sentence-transformers folder"),
}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    for name, (module, help_line) in _DIRECTIONS.items():
        q = sub.add_parser(name, help=help_line, description=help_line)
        common.add_common_arguments(q)
        module.add_arguments(q)


def _run(args: argparse.Namespace) -> int:
    if args.direction == "hf-to-flax":
        out = hf_to_flax.hf_to_flax(args.src, args.out, revision=args.revision, dtype=args.dtype,
                                    force=args.force)
    else:
        out = flax_to_hf.flax_to_hf(args.src, args.out, step=args.step, dtype=args.dtype,
                                    force=args.force)
    print(f"wrote {out}")
    return 0


COMMAND = Command("convert", "convert between HF / sentence-transformers and Flax folders",
                  _add_arguments, _run, description=__doc__.strip().splitlines()[0])
