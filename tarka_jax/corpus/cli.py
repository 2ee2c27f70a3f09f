"""``tarka-jax embed-corpus``: the command line of :func:`tarka_jax.corpus.job.embed_corpus`."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from tarka_jax.corpus.job import DEFAULT_SHARD_SIZE, embed_corpus
from tarka_jax.runtime import distributed
from tarka_jax.runtime.command import Command
from tarka_jax.runtime.interrupt import Interrupted
from tarka_jax.text import chunking


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="model folder (sentence-transformers, HF or hf_to_flax), hub id or "
                        "builtin:NAME")
    p.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                   help=".txt (one record per line), .jsonl or .parquet files; globs are "
                        "expanded in sorted order; records are numbered across inputs")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--text-field", default="text", help=".jsonl field / .parquet column")
    p.add_argument("--id-field", default=None,
                   help=".jsonl field / .parquet column of record ids (default: record number)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--query", action="store_true", help="the query prompt")
    which.add_argument("--document", action="store_true", help="the document prompt")
    which.add_argument("--prompt-name", default=None, help="this named prompt")
    which.add_argument("--prompt", default=None, help="this literal prompt")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"records per shard file (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    p.add_argument("--max-seq-length", type=int, default=None, help="truncation length")
    p.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka dimension")
    p.add_argument("--normalize", action="store_true", help="L2-normalise after truncation")
    p.add_argument("--attention", default=None, help="attention implementation (default: best)")
    p.add_argument("--revision", default=None, help="hub revision")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted run in DIR (settings must match)")
    again.add_argument("--force", action="store_true",
                       help="delete DIR's outputs and start over (only when every file in DIR "
                            "is provably one tarka-jax wrote)")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="invalid UTF-8 / lone surrogates in the inputs: strict (default) "
                        "refuses them as file:line before any compute; replace reads them "
                        "as U+FFFD (recorded: a resume must use the same)")
    chunking.add_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    distributed.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    distributed.initialize(args)  # before any backend exists
    import jax

    from tarka_jax.inference.chunked import EncodeReport
    from tarka_jax.inference.embedder import Embedder

    spec = chunking.from_arguments(args)
    said = EncodeReport()
    t0 = time.perf_counter()
    # One process embeds its own shards on its own devices (rows split over them): no
    # cross-process arrays, so processes never wait on each other between barriers.
    model = Embedder.from_pretrained(args.model, dtype=args.dtype, attention=args.attention,
                                     max_seq_length=args.max_seq_length, revision=args.revision,
                                     devices=jax.local_devices())
    kind = "query" if args.query else "document" if args.document else None
    try:
        manifest = embed_corpus(
            model, args.input, args.output, model_name=args.model, text_field=args.text_field,
            id_field=args.id_field, kind=kind, prompt_name=args.prompt_name, prompt=args.prompt,
            batch_size=args.batch_size, shard_size=args.shard_size,
            truncate_dim=args.truncate_dim, normalize=args.normalize, resume=args.resume,
            force=args.force, progress=not args.no_progress, errors=args.errors,
            chunking=spec, report=said)
    except Interrupted as e:
        print(f"tarka-jax embed-corpus: {e.message or 'interrupted by ' + e.name}; resume "
              f"with: {resume_command()}", file=sys.stderr)
        return e.exit_status
    if said.summary():  # this process's records of this run
        who = f" (process {jax.process_index()})" if jax.process_count() > 1 else ""
        print(f"tarka-jax embed-corpus{who}: {said.summary().replace(' texts', ' records', 1)}",
              file=sys.stderr)
    if jax.process_index() == 0:
        rows = manifest.get("rows", manifest["records"])
        windows = f" ({rows} window rows)" if rows != manifest["records"] else ""
        print(f"{manifest['records']} records{windows}, {manifest['shards']} shards of "
              f"[<= {manifest['shard_size']}, {manifest['dim']}] in {args.output} "
              f"({time.perf_counter() - t0:.1f} s)")
    return 0


def resume_command(argv=None) -> str:
    """This command line with ``--force`` dropped and ``--resume`` added."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "embed-corpus" not in argv:
        return "the same command with --resume"
    argv = argv[argv.index("embed-corpus"):]
    argv = [a for a in argv if a != "--force"] + ([] if "--resume" in argv else ["--resume"])
    return shlex.join(["tarka-jax", *argv])


COMMAND = Command("embed-corpus", "embed a corpus into resumable .npy shards (multi-process)",
                  add_arguments, run,
                  description="Embed .txt / .jsonl / .parquet records shard by shard into "
                              "resumable .npy files and a manifest.json, on one or many "
                              "processes (docs/corpus.md).")
