"""What a ``tarka-jax`` subcommand is: a name, a help line, arguments, and a run function.

Kept apart from :mod:`tarka_jax.cli` (the entry point, top of the layering) and
free of imports, so that a module at any layer can define its command without
importing the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """``add_arguments(parser)`` fills the subparser; ``run(args)`` returns the exit status."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None
