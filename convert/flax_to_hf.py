"""Write a sentence-transformers folder for any model source.

    python convert/flax_to_hf.py SRC OUT [--step N] [--dtype keep|float32|bfloat16] [--force]

SRC is anything :func:`tarka_jax.convert.open_model` reads: ``builtin:NAME``, a
Flax folder written by ``hf_to_flax``, a distillation run folder (``--step``
picks the checkpoint, default the latest), a sentence-transformers folder or a
hub id. ``SentenceTransformer(OUT)`` then loads the model with the same embeddings.
"""

from __future__ import annotations

import sys

from tarka_jax.convert.common import add_common_arguments
from tarka_jax.convert.sources import open_model
from tarka_jax.convert.st_folder import save_sentence_transformers
from tarka_jax.files.outputs import output_folder
from tarka_jax.runtime.command import Command, main_for


def flax_to_hf(src: str, out: str, *, step: int | None = None, dtype: str = "keep",
               force: bool = False) -> str:
    """Write the sentence-transformers folder ``out`` for ``src``; returns ``out``."""
    ck = open_model(src, step=step, float32=False)
    with output_folder(out, sources=[src, ck.folder], force=force) as tmp:
        save_sentence_transformers(tmp, ck.config, ck.params, ck.meta, ck.folder, dtype=dtype)
    return out


def add_arguments(p) -> None:
    add_common_arguments(p)
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a run folder")


def _run(args) -> int:
    out = flax_to_hf(args.src, args.out, step=args.step, dtype=args.dtype, force=args.force)
    print(f"wrote {out}")
    return 0


COMMAND = Command("flax-to-hf", __doc__.strip().splitlines()[0], add_arguments, _run)


def main(argv=None) -> int:
    """``python convert/flax_to_hf.py ...``: one-line errors, exit 2, as every command."""
    return main_for(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
