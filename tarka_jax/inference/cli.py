"""``tarka-jax embed`` and ``tarka-jax search``: the inference subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from tarka_jax.errors import UsageError
from tarka_jax.files.jsonfiles import read_jsonl
from tarka_jax.runtime.command import Command
from tarka_jax.text import chunking

# ---- shared options --------------------------------------------------------------------------


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="model folder (sentence-transformers, HF or hf_to_flax) or hub id")
    p.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="truncate texts to this many tokens (default: the model's)")
    p.add_argument("--attention", default=None, help="attention implementation (default: best)")
    p.add_argument("--revision", default=None, help="hub revision")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="invalid UTF-8 in inputs: strict (default) refuses it naming file:line; "
                        "replace reads bad bytes as U+FFFD")


def _load_embedder(args):
    from tarka_jax.inference.embedder import Embedder

    return Embedder.from_pretrained(args.model, dtype=args.dtype, attention=args.attention,
                                    max_seq_length=args.max_seq_length, revision=args.revision)


# ---- embed -----------------------------------------------------------------------------------


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    _add_model_arguments(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--query", action="store_true", help="encode as queries (the query prompt)")
    which.add_argument("--document", action="store_true",
                       help="encode as documents (the document prompt)")
    which.add_argument("--prompt-name", default=None, help="use this named prompt")
    which.add_argument("--prompt", default=None, help="prepend this literal prompt")
    p.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka dimension")
    p.add_argument("--normalize", action="store_true", help="L2-normalise after truncation")
    chunking.add_arguments(p)
    p.add_argument("--output", "-o", default=None,
                   help="write here: .npy (float32 [n, dim]) when it ends so, JSON lines "
                        "otherwise (default: JSON lines on stdout)")
    p.add_argument("texts", nargs="*", metavar="TEXT",
                   help="texts to embed; none or '-' reads one text per line from stdin")


def _read_texts(texts: list[str], errors: str = "strict") -> list[str]:
    from tarka_jax.files import text_input

    if texts and texts != ["-"]:
        if "-" in texts:
            raise UsageError("'-' (stdin) cannot be mixed with texts on the command line")
        return texts
    return text_input.split_lines(text_input.read_stdin(
        errors, hint="tarka-jax embed: reading texts from stdin, one per line "
                     "(end with Ctrl-D; or pass them as arguments)"))


def _run_embed(args) -> int:
    from tarka_jax.inference.chunked import ChunksCutWarning, EncodeReport

    spec = chunking.from_arguments(args)
    if spec.mode == "chunks" and (args.output or "").lower().endswith(".npy"):
        raise UsageError("--chunking chunks writes JSON lines (each window's text and spans); "
                         "a .npy file would lose which text each row belongs to")
    texts = _read_texts(args.texts, args.errors)
    model = _load_embedder(args)
    report = EncodeReport()
    kw = {"batch_size": args.batch_size, "truncate_dim": args.truncate_dim,
          "normalize_embeddings": args.normalize, "report": report, **spec.encode_kwargs()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChunksCutWarning)  # the report's line says it
        if args.query:
            emb = model.encode_query(texts, **kw)
        elif args.document:
            emb = model.encode_document(texts, **kw)
        else:
            emb = model.encode(texts, prompt_name=args.prompt_name, prompt=args.prompt, **kw)
    if report.summary():
        print(f"tarka-jax embed: {report.summary()}", file=sys.stderr)
    records = [{"text": text} for text in texts]
    if spec.mode == "chunks":  # one row per window: its text, number and spans
        records, emb = _window_records(texts, emb), emb.embeddings
    if args.output and args.output.lower().endswith(".npy"):
        import numpy as np

        with open(args.output, "wb") as f:  # a file object: np.save adds no second suffix
            np.save(f, emb)
        return 0
    lines = (json.dumps({**record, "embedding": row.tolist()}, ensure_ascii=False) + "\n"
             for record, row in zip(records, emb))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(lines)
    else:
        sys.stdout.writelines(lines)
    return 0


def _window_records(texts: list[str], chunks) -> list[dict]:
    """JSON fields of each window of a ``chunking="chunks"`` result."""
    out = []
    for i, k, (a, b), (start, end) in zip(chunks.text_index.tolist(), chunks.chunk_index.tolist(),
                                         chunks.token_spans.tolist(), chunks.char_spans.tolist()):
        out.append({"text": texts[i][start:end], "text_index": i, "chunk_index": k,
                    "char_span": [start, end], "token_span": [a, b]})
    return out


# ---- search ----------------------------------------------------------------------------------


def _search_arguments(p: argparse.ArgumentParser) -> None:
    _add_model_arguments(p)
    p.add_argument("--docs", default=None,
                   help="documents: a .txt file (one per line), a .jsonl file (a \"text\" "
                        "field per line), or a directory of .txt/.md files (one per file)")
    p.add_argument("--index", default=None, metavar="DIR",
                   help="instead of --docs: an embed-corpus output folder (searched in chunks)")
    p.add_argument("--query", "-q", action="append", required=True,
                   help="a query (repeat for several)")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="with a --docs directory, also read its subfolders")
    p.add_argument("--top-k", "-k", type=int, default=5, help="hits per query (default 5)")
    p.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka dimension")


def read_documents(path: str, *, recursive: bool = False,
                   errors: str = "strict") -> tuple[list[str], list[str]]:
    """(texts, labels) from a .txt / .jsonl file or a directory of .txt / .md files."""
    from tarka_jax.files import text_input

    if os.path.isdir(path):
        read = text_input.read_directory(path, recursive=recursive, errors=errors)
        print(read.summary(), file=sys.stderr)
        texts, labels = [t.strip() for t in read.texts], read.names
    elif os.path.isfile(path):
        if path.lower().endswith((".jsonl", ".ndjson")):
            records = read_jsonl(path)
            texts = [record["text"] for _, record in records]
            labels = [str(record.get("id", f"line {n}")) for n, record in records]
        else:
            pairs = text_input.lines(text_input.read_file(path, errors))
            texts, labels = [t.strip() for _, t in pairs], [f"line {n}" for n, _ in pairs]
    else:
        raise FileNotFoundError(f"documents not found: {path}")
    if not texts:
        raise UsageError(f"no documents in {path}")
    return texts, labels


def _run_search(args) -> int:
    import numpy as np

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if (args.docs is None) == (args.index is None):
        raise UsageError("give exactly one of --docs FILE|DIR and --index DIR")
    if args.index:
        from tarka_jax.corpus.search import print_index_hits

        print_index_hits(_load_embedder(args), args.index, args.query, args.top_k,
                         args.batch_size, args.truncate_dim)
        return 0
    docs, labels = read_documents(args.docs, recursive=args.recursive, errors=args.errors)
    model = _load_embedder(args)
    kw = {"batch_size": args.batch_size, "truncate_dim": args.truncate_dim}
    doc_emb = model.encode_document(docs, **kw)
    query_emb = model.encode_query(args.query, **kw)
    scores = model.similarity(query_emb, doc_emb)
    k = min(args.top_k, len(docs))
    for query, row in zip(args.query, scores):
        print(f"query: {query}")
        for rank, i in enumerate(np.argsort(-row, kind="stable")[:k], 1):
            snippet = " ".join(docs[i].split())
            snippet = snippet if len(snippet) <= 100 else snippet[:97] + "..."
            print(f"  {rank:>2}. {row[i]:.4f}  {snippet}  [{labels[i]}]")
    return 0


EMBED = Command(
    "embed", "embed texts; write JSON lines or .npy", _embed_arguments, _run_embed,
    description="Embed texts (arguments, or stdin lines) with a model; write JSON lines "
                "({\"text\", \"embedding\"}) or a float32 .npy array.")
SEARCH = Command(
    "search", "rank documents for queries", _search_arguments, _run_search,
    description="Embed documents (encode_document) and queries (encode_query) and print "
                "the top-k documents per query with their cosine scores.")
