"""Argument handling shared by the two converter CLIs."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from tarka_jax.convert.safetensors_io import STORAGE_DTYPES as DTYPES


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_common_arguments(p)
    return p


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """SRC, OUT, --dtype, --force: what both converters take."""
    p.add_argument("src", help="source: a folder, a hub id or builtin:NAME")
    p.add_argument("out", help="output folder")
    p.add_argument("--dtype", choices=DTYPES, default="keep",
                   help="storage dtype of the written tensors (default: keep the source's)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")


def prepare_output(out: str, force: bool) -> None:
    """Refuse to write into a non-empty folder unless forced (then empty it first)."""
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise FileExistsError(f"output folder {out} is not empty (pass --force to overwrite)")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def run_cli(main_fn, argv) -> int:
    """Run a converter, turning expected failures into one line on stderr and exit code 2."""
    try:
        main_fn(argv)
    except (OSError, ValueError, TypeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
