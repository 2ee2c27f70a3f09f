"""Convert a tarka-jax Flax folder (or a training run's step) into a sentence-transformers folder.

    python convert/flax_to_hf.py SRC OUT [--step N] [--dtype keep|float32|bfloat16] [--force]

``SentenceTransformer(OUT)`` then loads the model with the same embeddings.
SRC is a folder written by ``hf_to_flax`` or a distillation run folder
(``--workdir`` of ``tarka-jax distill``), in which case ``--step`` picks the
checkpoint (default: the latest).
"""

from __future__ import annotations

import sys

from tarka_jax.checkpoint import (is_flax_folder, load_flax_folder, save_sentence_transformers,
                                  SentenceTransformerMeta)
from tarka_jax.convert.common import parser, run_cli
from tarka_jax.convert.safe_write import output_folder


def _load_source(src: str, step: int | None):
    """(config, params, meta, tokenizer folder) of a Flax folder or a run folder's step."""
    if is_flax_folder(src):
        if step is not None:
            raise ValueError(f"--step applies to training run folders; {src} is a Flax folder")
        config, params = load_flax_folder(src)
        return config, params, SentenceTransformerMeta.from_folder(src), src
    from tarka_jax.distill.export import load_run_step  # training code only when needed

    return load_run_step(src, step)


def flax_to_hf(src: str, out: str, *, step: int | None = None, dtype: str = "keep",
               force: bool = False) -> str:
    """Write the sentence-transformers folder ``out`` for ``src``; returns ``out``."""
    with output_folder(out, sources=[src], force=force) as tmp:
        config, params, meta, tokenizer_folder = _load_source(src, step)
        save_sentence_transformers(tmp, config, params, meta, tokenizer_folder, dtype=dtype)
    return out


def main(argv=None) -> None:
    p = parser(__doc__.strip().splitlines()[0])
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a run folder")
    args = p.parse_args(argv)
    print(f"wrote {flax_to_hf(args.src, args.out, step=args.step, dtype=args.dtype, force=args.force)}")


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
