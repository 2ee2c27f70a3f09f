"""``tarka-jax embed-corpus``: embed a corpus shard by shard, resumable, on one or many processes.

Memory stays bounded: records stream from the inputs (:mod:`tarka_jax.corpus.reader`),
``Embedder.encode`` runs on chunks of at most :data:`ENCODE_TEXTS` texts and each shard's
``[S, dim]`` buffer is written (atomically, :mod:`tarka_jax.corpus.store`) before the next starts;
peak memory is O(shard size + chunk), not O(corpus).

Several processes: process p of P owns the shards k with k % P == p, reads every input
(skimming, without decoding, the records other processes own) and embeds only its own
shards on its own devices; no collective runs during the job, only three barriers. Process
0 writes the manifest at the start (``complete: false``) and completes it at the end.

Resume: a shard counts when its final file exists with the right header, so after a
SIGKILL ``--resume`` redoes only the shards that were in flight (one per process at
most). The resume refuses, naming the setting, when the model (weights, config and
tokenizer hash), prompt, dtype, lengths, normalisation, shard size or inputs (sizes,
sha256, record counts) differ from the manifest. The process count may change.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np

from tarka_jax.corpus import store as out
from tarka_jax.corpus.reader import describe_inputs, expand_inputs, iter_records
from tarka_jax.corpus.store import CorpusOutputError
from tarka_jax.errors import UsageError
from tarka_jax.runtime import distributed
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


def _our_files(folder: str) -> list[str]:
    names = [out.MANIFEST, "shard-*.npy", "ids-*.json", ".*.tmp*"]
    return [p for name in names for p in glob.glob(os.path.join(folder, name))]


def _check_folder(folder: str, new: dict, resume: bool, force: bool) -> dict | None:
    """The old manifest when resuming; raises on every state the flags do not allow."""
    if resume and force:
        raise UsageError("--resume and --force exclude each other")
    exists = os.path.isdir(folder) and bool(os.listdir(folder))
    if not resume:
        if exists and not force:
            raise FileExistsError(f"--output {folder} exists and is not empty; pass --resume "
                                  "to continue it or --force to start over")
        return None
    old = out.read_manifest(folder)  # raises when there is nothing to resume
    changes = out.describe_changes(old, new)
    if changes:
        raise CorpusOutputError(f"--resume refused, the settings differ from {folder}'s manifest: "
                         + "; ".join(changes))
    return old


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
                 resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Embed every record of ``inputs`` into ``output``; returns the manifest.

    ``model`` is an :class:`~tarka_jax.Embedder`; ``kind`` "query" / "document" picks the
    prompt as ``encode_query`` / ``encode_document`` do. Under ``jax.distributed`` this
    process embeds the shards ``k % process_count() == process_index()``.
    """
    import jax

    if not isinstance(shard_size, int) or shard_size < 1:
        raise UsageError(f"--shard-size must be a positive int, got {shard_size!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size must be a positive int, got {batch_size!r}")
    if truncate_dim is not None and not 0 < truncate_dim <= model.embedding_dim:
        raise UsageError(f"--truncate-dim must be in 1..{model.embedding_dim}, got "
                         f"{truncate_dim}")
    output = os.path.abspath(output)
    p, n_proc = jax.process_index(), jax.process_count()
    paths = expand_inputs(inputs)
    files = describe_inputs(paths, text_field, id_field)
    records = sum(f.records for f in files)
    manifest = {
        "format": out.FORMAT, "version": out.VERSION, "model": model_name,
        "model_sha256": model_sha256(model),
        "prompt": resolve_prompt(model, kind, prompt_name, prompt), "dtype": model.dtype,
        "max_seq_length": model.max_seq_length, "truncate_dim": truncate_dim,
        "normalize": bool(normalize), "shard_size": shard_size,
        "dim": truncate_dim or model.embedding_dim, "text_field": text_field,
        "id_field": id_field, "inputs": [f.to_dict() for f in files], "records": records,
        "shards": out.num_shards(records, shard_size), "shards_done": 0, "complete": False,
        "num_processes": n_proc, "batch_size": batch_size,
    }
    _check_folder(output, manifest, resume, force)
    distributed.barrier("embed-corpus: folder checked")  # before anyone changes it
    if p == 0:
        os.makedirs(output, exist_ok=True)
        for path in _our_files(output):
            if force or os.path.basename(path).startswith("."):  # stale temporaries
                os.remove(path)
        manifest["shards_done"] = len(out.done_shards(output, manifest))
        out.write_json_atomic(os.path.join(output, out.MANIFEST), manifest)
    distributed.barrier("embed-corpus: manifest written")

    done = set(out.done_shards(output, manifest))
    todo = [k for k in range(manifest["shards"]) if k % n_proc == p and k not in done]
    bar = _Progress(sum(out.shard_rows(manifest, k) for k in todo), progress,
                    f"embed-corpus {p}/{n_proc}" if n_proc > 1 else "embed-corpus")
    try:
        _embed_shards(model, paths, output, manifest, todo, batch_size, bar)
    finally:
        bar.close()
    distributed.barrier("embed-corpus: shards written")
    if p == 0:
        manifest["shards_done"] = len(out.done_shards(output, manifest))
        manifest["complete"] = manifest["shards_done"] == manifest["shards"]
        if not manifest["complete"]:
            raise RuntimeError(f"{manifest['shards'] - manifest['shards_done']} shards are "
                               f"missing in {output} after every process finished")
        out.write_json_atomic(os.path.join(output, out.MANIFEST), manifest)
    distributed.barrier("embed-corpus: manifest completed")
    return manifest


def _embed_shards(model, paths, output, manifest, todo, batch_size, bar) -> None:
    """Stream the inputs once; fill, embed and write the shards in ``todo`` (ascending)."""
    if not todo:
        return
    size, wanted = manifest["shard_size"], set(todo)
    kw = {"prompt": manifest["prompt"], "batch_size": batch_size, "show_progress_bar": False,
          "truncate_dim": manifest["truncate_dim"],
          "normalize_embeddings": manifest["normalize"]}
    k, buf, ids, texts = None, None, [], []  # buf: [rows of shard k, dim] float32
    filled = 0

    def flush_texts():
        nonlocal filled
        if texts:
            buf[filled:filled + len(texts)] = model.encode(texts, **kw)
            filled += len(texts)
            bar.update(len(texts))
            texts.clear()

    for item in iter_records(paths, manifest["text_field"], manifest["id_field"],
                             wanted=lambda i: i // size in wanted):
        if item is None:
            continue
        number, text, rid = item
        if k is None:  # a new shard of ours starts
            k, filled = number // size, 0
            buf = np.empty((out.shard_rows(manifest, k), manifest["dim"]), np.float32)
        texts.append(text)
        ids.append(rid)
        if len(texts) == ENCODE_TEXTS:
            flush_texts()
        if filled + len(texts) == len(buf):
            flush_texts()
            if manifest["id_field"]:
                out.write_json_atomic(os.path.join(output, out.ids_name(k)), ids)
            out.write_shard_atomic(os.path.join(output, out.shard_name(k)), buf)
            wanted.discard(k)
            k, buf, ids = None, None, []
            if not wanted:
                return  # nothing of ours further on: stop reading
