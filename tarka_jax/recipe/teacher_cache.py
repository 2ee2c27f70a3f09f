"""Teacher embeddings computed once, read by the distillation loop instead of a teacher model.

A cache is a folder::

    manifest.json        format, teacher id, backend, dim, prompt mix + seed + strings,
                         max_seq_length, and per split: files, text count, corpus sha256
    train.npy            float32 [N, dim]: embedding of corpus text i (with its prompt)
    train_prompts.npy    int32 [N]: index into manifest "prompt_names" of text i's prompt
    eval.npy, eval_prompts.npy   the same for the held-out texts (optional)

Corpus order is :func:`tarka_jax.train.data.read_corpus`'s (files in order,
empty texts dropped), so a run whose ``data.train`` lists the same files finds
text ``i`` at row ``i``; the sha256 of the texts and the prompt draw are checked
before any step. The ``.npy`` files are memory-mapped, so a corpus larger than RAM
works.

Two backends compute it: ``jax`` (our :class:`~tarka_jax.Embedder`, a teacher of
our architecture) and ``torch`` (any sentence-transformers model through
PyTorch: ``pip install tarka-jax[torch-teacher]``; how a teacher of another
architecture is used). Texts are truncated by the teacher's own tokenizer; the
student, which sees its own truncation, should use a similar max length.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from tarka_jax.distill.teacher_cache import (
    FORMAT,
    MANIFEST,
    SPLITS,
    VERSION,
    CacheError,
    TeacherCache,
    corpus_sha256,
)
from tarka_jax.errors import UsageError
from tarka_jax.files.jsonfiles import write_json
from tarka_jax.runtime.extras import require
from tarka_jax.text.prompts import assign_prompts, check_mix, prompt_strings, prompt_table

__all__ = ["CacheError", "TeacherCache", "build_cache", "corpus_sha256"]


# ---- computing ------------------------------------------------------------------------------


class _JaxTeacher:
    def __init__(self, model: str, dtype: str, max_seq_length: int | None):
        from tarka_jax.inference.embedder import Embedder

        self.model = Embedder.from_pretrained(model, dtype=dtype, max_seq_length=max_seq_length)
        self.prompts = self.model.prompts
        self.dim = self.model.embedding_dim
        self.max_seq_length = self.model.max_seq_length

    def encode(self, texts, prompt, batch_size):
        return self.model.encode(texts, prompt=prompt, batch_size=batch_size)


class _TorchTeacher:
    def __init__(self, model: str, dtype: str, max_seq_length: int | None, device: str | None):
        st = require("sentence_transformers", "--backend torch")  # (it imports torch)
        torch = require("torch", "--backend torch")
        self.model = st.SentenceTransformer(model, device=device or "cpu")
        if dtype == "bfloat16":
            self.model = self.model.to(torch.bfloat16)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.prompts = dict(self.model.prompts or {})
        dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.max_seq_length = self.model.max_seq_length

    def encode(self, texts, prompt, batch_size):
        out = self.model.encode(list(texts), prompt=prompt, batch_size=batch_size,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, np.float32)


def _is_our_checkpoint(model: str) -> bool:
    from tarka_jax.convert.flax_folder import is_flax_folder
    from tarka_jax.convert.sources import resolve_folder
    from tarka_jax.convert.st_folder import load_hf_folder

    folder = resolve_folder(model)  # hub / path errors are the user's to see
    if is_flax_folder(folder):
        return True
    try:
        load_hf_folder(folder)
        return True
    except (OSError, ValueError, KeyError):  # another architecture (ConfigError, mismatch)
        return False


def _embed_split(teacher, texts, names, choice, prompts, batch_size) -> np.ndarray:
    strings = prompt_strings(names, choice, prompts)
    out = np.zeros((len(texts), teacher.dim), np.float32)
    for p in sorted(set(strings)):
        rows = [i for i, s in enumerate(strings) if s == p]
        out[rows] = teacher.encode([texts[i] for i in rows], p, batch_size)
    return out


def build_cache(out_dir: str, model: str, train_files: Sequence[str],
                eval_files: Sequence[str] = (), *, text_field: str = "text",
                prompt_mix: Mapping[str, float] | None = None, seed: int = 0,
                backend: str = "auto", dtype: str = "float32",
                max_seq_length: int | None = None, batch_size: int = 32,
                device: str | None = None, force: bool = False) -> dict:
    """Compute and write a cache; returns its manifest.

    ``out_dir`` gets the same protection as every model writer (docs/safety.md): an
    existing non-empty folder is refused unless ``force`` and tarka-jax wrote it; the
    files appear only when complete (written into a temporary sibling, then renamed).
    """
    from tarka_jax.files.outputs import check_output, output_folder
    from tarka_jax.train.data import read_corpus

    sources = [model, *train_files, *eval_files]
    check_output(out_dir, sources=sources, force=force, what="cache folder")  # before any work

    if backend not in ("auto", "jax", "torch"):
        raise UsageError(f"backend must be auto, jax or torch, got {backend!r}")
    mix = dict(prompt_mix or {})
    splits = {"train": read_corpus(train_files, text_field, "--train")}
    if eval_files:
        splits["eval"] = read_corpus(eval_files, text_field, "--eval")
    if backend == "auto":
        backend = "jax" if _is_our_checkpoint(model) else "torch"
    teacher = (_JaxTeacher(model, dtype, max_seq_length) if backend == "jax"
               else _TorchTeacher(model, dtype, max_seq_length, device))
    prompts = prompt_table(teacher.prompts)
    check_mix(mix, prompts)
    manifest = {"format": FORMAT, "version": VERSION, "teacher": str(model),
                "backend": backend, "dtype": dtype, "dim": teacher.dim,
                "max_seq_length": teacher.max_seq_length, "prompt_mix": mix, "seed": int(seed),
                "prompt_names": None, "prompts": {}, "splits": {}}
    files = {"train": list(train_files), "eval": list(eval_files)}
    arrays = {}  # file name -> array, written once every split is computed
    for split, texts in splits.items():
        names, choice = assign_prompts(len(texts), mix, seed, SPLITS[split])
        emb = _embed_split(teacher, texts, names, choice, prompts, batch_size)
        if not np.all(np.isfinite(emb)):
            raise CacheError(f"the teacher gave non-finite embeddings for the {split} split")
        arrays[f"{split}.npy"], arrays[f"{split}_prompts.npy"] = emb, choice
        manifest["prompt_names"] = names
        manifest["prompts"] = {k: prompts.get(k, "") for k in names}
        manifest["splits"][split] = {"files": [os.path.abspath(f) for f in files[split]],
                                     "count": len(texts), "corpus_sha256": corpus_sha256(texts)}
    with output_folder(out_dir, sources=sources, force=force, kind="teacher cache") as tmp:
        for name, array in arrays.items():
            np.save(os.path.join(tmp, name), array)
        write_json(os.path.join(tmp, MANIFEST), manifest, atomic=True)
    return manifest
