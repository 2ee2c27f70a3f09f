"""Moved: output folders now live in :mod:`tarka_jax.files.outputs` (one home for every writer).

Kept as names only, for code written against ``tarka_jax.convert.safe_write``; new code
imports from :mod:`tarka_jax.files.outputs` / :mod:`tarka_jax.files.ownership`.
"""

from tarka_jax.files.marker import MARKER, UnsafeOutputError
from tarka_jax.files.outputs import check_output, output_folder

__all__ = ["MARKER", "UnsafeOutputError", "check_output", "output_folder"]
