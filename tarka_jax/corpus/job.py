"""``tarka-jax embed-corpus``: embed a corpus shard by shard, resumable, on one or many processes.

Memory stays bounded: records stream from the inputs (:mod:`tarka_jax.corpus.reader`),
``Embedder.encode`` runs on chunks of at most :data:`ENCODE_TEXTS` texts and each shard's
``[S, dim]`` buffer is written (atomically, :mod:`tarka_jax.corpus.store`) before the next starts;
peak memory is O(shard size + chunk), not O(corpus).

Several processes: process p of P owns the shards k with k % P == p, reads every input
(skimming, without decoding, the records other processes own) and embeds only its own
shards on its own devices; no collective runs during the job, only a broadcast at the start
(process 0 holds the folder: the run id, or why not) and three barriers. Process 0 writes the
manifest at the start (``complete: false``) and completes it at the end.

Resume: a shard counts when its final file exists with the right header, so after a
SIGKILL ``--resume`` redoes only the shards that were in flight (one per process at
most). The resume refuses, naming the setting, when the model (weights, config and
tokenizer hash), prompt, dtype, lengths, normalisation, shard size, batch size, ``errors``
or inputs (sizes, sha256, record counts; a fixed input whose records are not embedded yet
is accepted) differ from the manifest. The process count may change.

The folder: process 0 holds its job lock (:mod:`tarka_jax.files.joblock`) for the whole
job and decides what may be touched (:mod:`tarka_jax.corpus.folder`); every file is written
under a temporary carrying the run id and claimed in a receipt before its rename. SIGINT /
SIGTERM stop the job at the next record or batch (:mod:`tarka_jax.runtime.interrupt`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np

from tarka_jax.corpus import folder
from tarka_jax.corpus import store as out
from tarka_jax.corpus.reader import describe_inputs, expand_inputs, iter_records
from tarka_jax.corpus.store import CorpusOutputError
from tarka_jax.errors import UsageError
from tarka_jax.files.outputs import report as say
from tarka_jax.inference.chunked import ChunkedEmbeddings, ChunksCutWarning, EncodeReport
from tarka_jax.runtime import distributed, interrupt, job_folder
from tarka_jax.runtime.interrupt import Interrupted, stop_on_signals
from tarka_jax.text.chunking import DEFAULT_MAX_CHUNKS, ChunkingSpec
from tarka_jax.text.prompts import st_prompt_name

ENCODE_TEXTS = 4096  # texts per Embedder.encode call: enough to pack well, small in memory
DEFAULT_SHARD_SIZE = 10_000


def model_sha256(model) -> str:
    """Hash of what decides the embeddings: config, tokenizer and every weight."""
    import jax

    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    digest.update(model.tokenizer.backend.to_str().encode())
    digest.update(str(model.max_seq_length).encode())
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(model.params)[0],
                             key=lambda item: jax.tree_util.keystr(item[0])):
        leaf = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}{leaf.dtype}{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def resolve_prompt(model, kind: str | None = None, prompt_name: str | None = None,
                   prompt: str | None = None) -> str | None:
    """The prompt string ``encode_query`` / ``encode_document`` / ``encode`` would prepend.

    The job passes this one string to every ``encode`` call and records it in the
    manifest, so what was computed and what is recorded cannot differ.
    """
    if prompt is None and prompt_name is None:
        prompt_name = st_prompt_name(model.prompts, kind)
    if prompt is None and prompt_name is not None and prompt_name not in model.prompts:
        valid = ", ".join(repr(p) for p in model.prompts) or "none: the model has no prompts"
        raise UsageError(f"unknown prompt name {prompt_name!r}; valid names: {valid}")
    if prompt is not None:
        return prompt
    if prompt_name is not None:
        return model.prompts[prompt_name]
    return model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None


class _Progress:
    """records/s and ETA over this process's own records (tqdm when enabled, else quiet)."""

    def __init__(self, total: int, enabled: bool, label: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="rec", unit_scale=True, desc=label,
                            dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def embed_corpus(model, inputs, output: str, *, model_name: str = "", text_field: str = "text",
                 id_field: str | None = None, kind: str | None = None,
                 prompt_name: str | None = None, prompt: str | None = None,
                 batch_size: int = 32, shard_size: int = DEFAULT_SHARD_SIZE,
                 truncate_dim: int | None = None, normalize: bool = False,
                 resume: bool = False, force: bool = False, progress: bool = True,
                 errors: str = "strict", chunking: ChunkingSpec | None = None,
                 report: EncodeReport | None = None) -> dict:
    """Embed every record of ``inputs`` into ``output``; returns the manifest.

    ``model`` is an :class:`~tarka_jax.Embedder`; ``kind`` "query" / "document" picks the
    prompt as ``encode_query`` / ``encode_document`` do. Under ``jax.distributed`` this
    process embeds the shards ``k % process_count() == process_index()``. SIGINT / SIGTERM
    raise :class:`~tarka_jax.runtime.interrupt.Interrupted` (its ``message`` says what was
    kept); ``errors="replace"`` reads invalid UTF-8 and lone surrogates as U+FFFD.

    ``chunking`` (default truncation): ``"mean"`` gives one row per record, ``"chunks"``
    one row per window (``rows-*.npy`` says which record, window and spans); recorded
    in the manifest and compared by a resume. ``report`` (when given) receives this
    process's counts over the records it embedded in this run (``truncated`` holds
    record numbers).
    """

    if not isinstance(shard_size, int) or shard_size < 1:
        raise UsageError(f"--shard-size must be a positive int, got {shard_size!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size must be a positive int, got {batch_size!r}")
    chunking = ChunkingSpec() if chunking is None else chunking
    if truncate_dim is not None and not 0 < truncate_dim <= model.embedding_dim:
        raise UsageError(f"--truncate-dim must be in 1..{model.embedding_dim}, got "
                         f"{truncate_dim}")
    output = os.path.abspath(output)
    with stop_on_signals():  # from the counting pass on: a signal is one line, not a trace
        try:
            manifest, paths = _plan(model, inputs, output, text_field, id_field, errors, model_name,
                             resolve_prompt(model, kind, prompt_name, prompt), batch_size,
                             shard_size, truncate_dim, normalize, chunking)
        except Interrupted as e:
            e.message = f"interrupted by {e.name} while reading the inputs: nothing written"
            raise
        folder.precheck(output, manifest, resume, force)  # every process: the same refusals
        distributed.barrier("embed-corpus: folder checked")  # before process 0 changes it
        lock, run = _hold_folder(output, manifest, resume, force)
        try:
            return _run_job(model, paths, output, manifest, batch_size, progress, run,
                            report)
        except Interrupted as e:
            e.message = _kept(output, manifest, e.name)
            raise
        finally:
            lock.release()


def _plan(model, inputs, output, text_field, id_field, errors, model_name, prompt,
          batch_size, shard_size, truncate_dim, normalize,
          chunking) -> tuple[dict, list[str]]:
    """The manifest this run would write (every input read once and validated); the paths."""
    import jax

    notes: list[str] = []
    paths = expand_inputs(inputs, notes)
    for note in notes if jax.process_index() == 0 else []:
        say(note)
    files = describe_inputs(paths, text_field, id_field, errors)  # validates every record
    records = sum(f.records for f in files)
    return {
        "format": out.FORMAT, "version": out.VERSION, "model": model_name,
        "model_sha256": model_sha256(model), "prompt": prompt, "dtype": model.dtype,
        "max_seq_length": model.max_seq_length, "truncate_dim": truncate_dim,
        "normalize": bool(normalize), "shard_size": shard_size,
        "dim": truncate_dim or model.embedding_dim, "text_field": text_field,
        "id_field": id_field, "inputs": [f.to_dict() for f in files], "records": records,
        "shards": out.num_shards(records, shard_size), "shards_done": 0, "complete": False,
        "num_processes": jax.process_count(), "batch_size": batch_size, "errors": errors,
        "chunking": chunking.as_dict() if chunking.windows else {"mode": "truncate"},
    }, paths


def _hold_folder(output: str, manifest: dict, resume: bool, force: bool):
    """Process 0 takes the folder's lock and prepares it; everyone learns the run id."""

    def prepare(run: str) -> None:
        folder.take(output, manifest, run, resume, force)
        manifest["shards_done"] = len(out.done_shards(output, manifest))
        _write_manifest(output, manifest, run)

    return job_folder.hold(output, "embed-corpus", prepare)


def _write_manifest(output: str, manifest: dict, run: str) -> None:
    receipts = folder.Receipts(output, run, 0)
    try:
        out.write_json_atomic(os.path.join(output, out.MANIFEST), manifest, run, receipts)
    finally:
        receipts.close()


def _kept(output: str, manifest: dict, signame: str) -> str:
    try:
        done = len(out.done_shards(output, manifest))
    except (OSError, ValueError):
        done = "?"
    return (f"interrupted by {signame}: {done} of {manifest['shards']} shards are complete "
            f"and kept in {output}")


def _run_job(model, paths, output, manifest, batch_size, progress, run, report) -> dict:
    import jax

    p, n_proc = jax.process_index(), jax.process_count()
    done = set(out.done_shards(output, manifest))
    todo = [k for k in range(manifest["shards"]) if k % n_proc == p and k not in done]
    bar = _Progress(sum(out.shard_rows(manifest, k) for k in todo), progress,
                    f"embed-corpus {p}/{n_proc}" if n_proc > 1 else "embed-corpus")
    receipts = folder.Receipts(output, run, p)
    try:
        _embed_shards(model, paths, output, manifest, todo, batch_size, bar, run, receipts,
                      report)
    finally:
        bar.close()
        receipts.close()
    interrupt.check()
    distributed.barrier("embed-corpus: shards written")
    if p == 0:
        manifest["shards_done"] = len(out.done_shards(output, manifest))
        manifest["complete"] = manifest["shards_done"] == manifest["shards"]
        if manifest["complete"]:  # rows: records, or windows with --chunking chunks
            manifest["rows"] = sum(out.shard_row_count(output, k)
                                   for k in range(manifest["shards"]))
        if not manifest["complete"]:
            raise CorpusOutputError(f"{manifest['shards'] - manifest['shards_done']} shards "
                                    f"are missing in {output} after every process finished")
        _write_manifest(output, manifest, run)
        folder.finish(output)
    distributed.barrier("embed-corpus: manifest completed")
    return manifest


def _embed_shards(model, paths, output, manifest, todo, batch_size, bar, run, receipts,
                  report) -> None:
    """Stream the inputs once; fill, embed and write the shards in ``todo`` (ascending).

    A shard's records go to ``encode`` in the same groups (of at most ``ENCODE_TEXTS``,
    from the shard's first record) on every run, so a redone shard is bit-identical.
    """
    if not todo:
        return
    size, wanted = manifest["shard_size"], set(todo)
    spec = ChunkingSpec.parse(**_spec_args(manifest.get("chunking")))
    kw = {"prompt": manifest["prompt"], "batch_size": batch_size, "show_progress_bar": False,
          "truncate_dim": manifest["truncate_dim"],
          "normalize_embeddings": manifest["normalize"], **spec.encode_kwargs()}
    k, ids, texts, numbers, sources = None, [], [], [], []
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # (embeddings, rows table) per encode

    def flush_texts():
        if not texts:
            return
        said = EncodeReport()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChunksCutWarning)  # counted in the report
            emb = model.encode(texts, report=said, **kw)
        interrupt.check()
        parts.append(_rows_of(emb, numbers, texts, sources))
        _add_report(report, said, numbers)
        bar.update(len(texts))
        for held in (texts, numbers, sources):
            held.clear()

    for item in iter_records(paths, manifest["text_field"], manifest["id_field"],
                             wanted=lambda i: i // size in wanted, errors=manifest["errors"],
                             sources=True):
        interrupt.check()  # a signal whose raise was swallowed stops us here
        if item is None:
            continue
        number, text, rid, source = item
        if k is None:  # a new shard of ours starts
            k, seen = number // size, 0
        texts.append(text)
        numbers.append(number)
        sources.append(source)
        ids.append(rid)
        seen += 1
        if len(texts) == ENCODE_TEXTS:
            flush_texts()
        if seen == out.shard_rows(manifest, k):
            flush_texts()
            emb = np.concatenate([e for e, _ in parts]).astype(np.float32, copy=False)
            rows = np.concatenate([r for _, r in parts])
            if manifest["id_field"]:
                out.write_json_atomic(os.path.join(output, out.ids_name(k)), ids, run,
                                      receipts)
            out.write_shard_atomic(os.path.join(output, out.rows_name(k)), rows, run,
                                   receipts, dtype=np.int64)
            out.write_shard_atomic(os.path.join(output, out.shard_name(k)), emb, run, receipts)
            wanted.discard(k)
            k, ids, parts = None, [], []
            if not wanted:
                return  # nothing of ours further on: stop reading


def _spec_args(chunking: dict | None) -> dict:
    chunking = chunking or {"mode": "truncate"}
    return {"mode": chunking.get("mode"), "overlap": chunking.get("overlap", 0),
            "max_chunks": chunking.get("max_chunks", DEFAULT_MAX_CHUNKS)}


def _rows_of(emb, numbers, texts, sources) -> tuple[np.ndarray, np.ndarray]:
    """(float32 embeddings, int64 rows table [rows, 10]) of one ``encode`` call's output."""
    if isinstance(emb, ChunkedEmbeddings):
        at = emb.text_index
        window = np.concatenate([emb.chunk_index[:, None], emb.token_spans, emb.char_spans],
                                axis=1)
        emb = emb.embeddings
    else:
        at = np.arange(len(texts))
        window = np.full((len(texts), 5), -1, np.int64)
    per_text = np.array([(n, s.input, s.offset, s.length, out.text_checksum(t))
                         for n, t, s in zip(numbers, texts, sources)], np.int64)
    return np.asarray(emb, np.float32), np.concatenate([per_text[at], window], axis=1)


def _add_report(total: EncodeReport | None, said: EncodeReport, numbers: list[int]) -> None:
    """Add one call's counts to the job's report (truncated: record numbers)."""
    if total is None:
        return
    total.texts += said.texts
    total.inputs += said.inputs
    total.tokens += said.tokens
    total.truncated += [numbers[i] for i in said.truncated]
    total.chunking, total.max_seq_length = said.chunking, said.max_seq_length
    total.max_chunks = said.max_chunks
