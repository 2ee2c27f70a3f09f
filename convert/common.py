"""Argument handling shared by the two converter CLIs."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

DTYPES = ("keep", "float32", "bfloat16")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("src", help="source folder (or hub id for hf_to_flax)")
    p.add_argument("out", help="output folder")
    p.add_argument("--dtype", choices=DTYPES, default="keep",
                   help="storage dtype of the written tensors (default: keep the source's)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    return p


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
