"""Argument handling shared by the two converter CLIs."""

from __future__ import annotations

import argparse
import os

from tarka_jax.convert.safetensors_io import STORAGE_DTYPES as DTYPES


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """SRC, OUT, --dtype, --force: what both converters take."""
    p.add_argument("src", help="source: a folder, a hub id or builtin:NAME")
    p.add_argument("out", help="output folder")
    p.add_argument("--dtype", choices=DTYPES, default="keep",
                   help="storage dtype of the written tensors (default: keep the source's)")
    p.add_argument("--force", action="store_true",
                   help="replace an output folder tarka-jax wrote earlier (never the source, "
                        "the current directory or a folder holding other files)")


def prepare_output(out: str, force: bool) -> None:
    """Empty ``out`` for writing in place, after
    :func:`~tarka_jax.files.outputs.check_output`: only files it proves tarka-jax wrote
    are removed.

    Prefer :func:`~tarka_jax.files.outputs.output_folder` (writes into a temporary sibling,
    swapped into place when complete).
    """
    from tarka_jax.files.marker import UnsafeOutputError
    from tarka_jax.files.outputs import check_output
    from tarka_jax.files.ownership import remove_owned

    found = check_output(out, force=force)
    if found is not None:
        kept = remove_owned(found)
        if kept:
            raise UnsafeOutputError(f"{out} changed while it was being cleared; kept "
                                    + ", ".join(kept[:3]))
    os.makedirs(out, exist_ok=True)
