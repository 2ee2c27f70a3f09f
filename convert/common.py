"""Argument handling shared by the two converter CLIs."""

from __future__ import annotations

import argparse
import os
import shutil

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
    """Empty ``out`` for writing, after :func:`~tarka_jax.convert.safe_write.check_output`.

    Prefer :func:`~tarka_jax.convert.safe_write.output_folder` (writes into a temporary
    sibling, moved into place when complete).
    """
    from tarka_jax.convert.safe_write import check_output

    check_output(out, force=force)
    if os.path.isdir(out) and os.listdir(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
