"""``tarka-jax embed`` and ``tarka-jax search``: the inference subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from tarka_jax.errors import TarkaError, UsageError
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
    p.add_argument("--force", action="store_true",
                   help="replace an existing --output file (never one of the model's files)")
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


class NonFiniteEmbeddingError(TarkaError):
    """An embedding holds NaN or inf: nothing is written (JSON cannot even hold NaN)."""


def _check_output_file(path: str, force: bool, model_folder: str | None) -> None:
    """Refuse an --output that exists (without --force), is a folder, or is the model's."""
    if os.path.isdir(path):
        raise UsageError(f"--output {path} is a folder; give a file name")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"--output {path}: the folder it names does not exist")
    if model_folder and os.path.isdir(model_folder):
        real, folder = os.path.realpath(path), os.path.realpath(model_folder)
        own = {os.path.realpath(os.path.join(d, f))  # hub snapshots link into blobs/
               for d, _, files in os.walk(model_folder) for f in files}
        if real.startswith(folder.rstrip(os.sep) + os.sep) or real in own:
            raise UsageError(f"--output {path} is in the model's own folder {model_folder}; "
                             "refusing to write there (even with --force)")
    if os.path.lexists(path) and not force:
        raise UsageError(f"--output {path} already exists; pass --force to replace it, or "
                         "choose a new name")


def _check_finite(emb, texts: list[str], from_stdin: bool) -> None:
    import numpy as np

    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if bad.size:
        i = int(bad[0])
        where = f"stdin line {i + 1}" if from_stdin else f"argument {i + 1}"
        raise NonFiniteEmbeddingError(
            f"the embedding of text {i} ({where}) holds NaN or inf ({bad.size} of {len(emb)} "
            "texts do); the model's weights or numerics produced it; nothing written")


def _write_output(path: str, emb, records: list[dict]) -> None:
    from tarka_jax.files.atomic import write_atomic
    from tarka_jax.files.marker import new_run_id

    if path.lower().endswith(".npy"):
        import numpy as np

        def fill(w):
            np.lib.format.write_array(w, np.ascontiguousarray(emb), allow_pickle=False)
    else:
        def fill(w):
            for record, row in zip(records, emb):
                w.write((json.dumps({**record, "embedding": row.tolist()},
                                    ensure_ascii=False, allow_nan=False) + "\n").encode())
    write_atomic(os.path.abspath(path), fill, new_run_id())


def _run_embed(args) -> int:
    from tarka_jax.inference.chunked import ChunksCutWarning, EncodeReport

    spec = chunking.from_arguments(args)
    if spec.mode == "chunks" and (args.output or "").lower().endswith(".npy"):
        raise UsageError("--chunking chunks writes JSON lines (each window's text and spans); "
                         "a .npy file would lose which text each row belongs to")
    if args.output:
        _check_output_file(args.output, args.force, args.model)
    texts = _read_texts(args.texts, args.errors)
    model = _load_embedder(args)
    if args.output:
        _check_output_file(args.output, args.force, model.source_folder)
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
    _check_finite(emb, texts, from_stdin=not args.texts or args.texts == ["-"])
    if args.output:
        _write_output(args.output, emb, records)
        return 0
    sys.stdout.writelines(json.dumps({**record, "embedding": row.tolist()},
                                     ensure_ascii=False, allow_nan=False) + "\n"
                          for record, row in zip(records, emb))
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
    chunking.add_arguments(p)


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
    elif text_input.special_kind(path):
        raise UsageError(f"--docs {path} is {text_input.special_kind(path)}, not a file or "
                         "folder (never opened)")
    else:
        raise FileNotFoundError(f"documents not found: {path}")
    if not texts:
        raise UsageError(f"no documents in {path}")
    return texts, labels


def _run_search(args) -> int:
    import numpy as np

    from tarka_jax.corpus.search import format_hit
    from tarka_jax.inference.chunked import ChunksCutWarning, EncodeReport

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if (args.docs is None) == (args.index is None):
        raise UsageError("give exactly one of --docs FILE|DIR and --index DIR")
    spec = chunking.from_arguments(args)
    if args.index:
        if spec.mode != "truncate":
            raise UsageError("--chunking is for --docs: an --index was chunked when it was "
                             "embedded (embed-corpus --chunking, in its manifest)")
        from tarka_jax.corpus.search import print_index_hits

        print_index_hits(_load_embedder(args), args.index, args.query, args.top_k,
                         args.batch_size, args.truncate_dim)
        return 0
    docs, labels = read_documents(args.docs, recursive=args.recursive, errors=args.errors)
    model = _load_embedder(args)
    kw = {"batch_size": args.batch_size, "truncate_dim": args.truncate_dim}
    said_docs, said_queries = EncodeReport(), EncodeReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChunksCutWarning)  # the report's line says it
        doc_emb = model.encode_document(docs, report=said_docs, **kw, **spec.encode_kwargs())
    query_emb = model.encode_query(args.query, report=said_queries, **kw)
    for what, said in (("documents", said_docs), ("queries", said_queries)):
        if said.summary():
            print(f"tarka-jax search: {what}: {said.summary()}", file=sys.stderr)
    if spec.mode == "chunks":  # a document scores as its best window
        window_scores = np.asarray(model.similarity(query_emb, doc_emb.embeddings))
        best = np.stack([_best_windows(row, doc_emb.text_index, len(docs))
                         for row in window_scores])  # [Q, docs]: window of each document
        scores = np.take_along_axis(window_scores, best, axis=1)
    else:
        scores = np.asarray(model.similarity(query_emb, doc_emb))
    k = min(args.top_k, len(docs))
    for q, (query, row) in enumerate(zip(args.query, scores)):
        print(f"query: {query}")
        for rank, i in enumerate(np.argsort(-row, kind="stable")[:k], 1):
            text, label = docs[i], labels[i]
            if spec.mode == "chunks":
                w = best[q, i]
                start, end = doc_emb.char_spans[w]
                text, label = text[start:end], f"{label}, chunk {doc_emb.chunk_index[w]}"
            print(format_hit(rank, float(row[i]), text, label))
    return 0


def _best_windows(scores, text_index, n_texts: int):
    """Per text, the index of its highest-scoring window (the first on a tie)."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    texts, first = np.unique(text_index[order], return_index=True)
    best = np.zeros(n_texts, np.int64)
    best[texts] = order[first]
    return best


EMBED = Command(
    "embed", "embed texts; write JSON lines or .npy", _embed_arguments, _run_embed,
    description="Embed texts (arguments, or stdin lines) with a model; write JSON lines "
                "({\"text\", \"embedding\"}) or a float32 .npy array.")
SEARCH = Command(
    "search", "rank documents for queries", _search_arguments, _run_search,
    description="Embed documents (encode_document) and queries (encode_query) and print "
                "the top-k documents per query with their cosine scores.")
