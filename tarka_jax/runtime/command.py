"""What a ``tarka-jax`` subcommand is: a name, a help line, arguments, and a run function.

Kept apart from :mod:`tarka_jax.cli` (the entry point, top of the layering) and
free of imports, so that a module at any layer can define its command without
importing the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """``add_arguments(parser)`` fills the subparser; ``run(args)`` returns the exit status."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


def execute(command: Command, args: argparse.Namespace) -> int:
    """Run ``command`` on parsed ``args``: its exit status, or 2 with a one-line message on
    stderr for any error (``TARKA_JAX_DEBUG=1`` re-raises it with the traceback)."""
    try:
        return int(command.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("TARKA_JAX_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # whole message, one line
        print(f"tarka-jax {command.name}: error: {message}", file=sys.stderr)
        return 2


def main_for(command: Command, argv=None) -> int:
    """A stand-alone entry point (``python -m MODULE ...``) equal to ``tarka-jax NAME ...``."""
    p = argparse.ArgumentParser(prog=f"tarka-jax {command.name}",
                                description=command.description or command.help)
    command.add_arguments(p)
    return execute(command, p.parse_args(argv))
