"""Convert a sentence-transformers / HF folder (or hub id, or built-in model) into a Flax folder.

    python convert/hf_to_flax.py SRC OUT [--revision R] [--dtype keep|float32|bfloat16] [--force]

The output holds ``flax_params.safetensors`` (keys are Flax paths, mmap-able,
no tensorstore), ``tarka_jax_config.json``, the tokenizer files and the
sentence-transformers metadata (prompts, max_seq_length); pooling and the Dense
head are part of the config. Strict: every source tensor is used and every
shape checked.
"""

from __future__ import annotations

import sys

from tarka_jax.convert.common import add_common_arguments
from tarka_jax.convert.flax_folder import is_flax_folder, save_flax_folder
from tarka_jax.convert.sources import resolve_folder
from tarka_jax.convert.st_folder import SentenceTransformerMeta, load_hf_folder
from tarka_jax.errors import UsageError
from tarka_jax.files.outputs import output_folder
from tarka_jax.runtime.command import Command, main_for


def hf_to_flax(src: str, out: str, *, revision: str | None = None, dtype: str = "keep",
               force: bool = False, cache_dir: str | None = None, token=None) -> str:
    """Convert ``src`` (folder or hub id) and write the Flax folder ``out``; returns ``out``."""
    folder = resolve_folder(src, revision=revision, cache_dir=cache_dir, token=token)
    if is_flax_folder(folder):
        raise UsageError(f"{folder} is already a tarka-jax Flax folder")
    with output_folder(out, sources=[src, folder], force=force) as tmp:
        config, params = load_hf_folder(folder)
        meta = SentenceTransformerMeta.from_folder(folder)
        save_flax_folder(tmp, config, params, meta, folder, dtype=dtype)
    return out


def add_arguments(p) -> None:
    add_common_arguments(p)
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def _run(args) -> int:
    out = hf_to_flax(args.src, args.out, revision=args.revision, dtype=args.dtype,
                     force=args.force)
    print(f"wrote {out}")
    return 0


COMMAND = Command("hf-to-flax", __doc__.strip().splitlines()[0], add_arguments, _run)


def main(argv=None) -> int:
    """``python convert/hf_to_flax.py ...``: one-line errors, exit 2, as every command."""
    return main_for(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
