"""Reading a teacher cache (the folder ``tarka-jax cache-teacher`` writes).

The format and how it is built: :mod:`tarka_jax.recipe.teacher_cache`. The
distillation loop reads a cache through :class:`TeacherCache`; it lives in the
training core so that distill never imports a recipe.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np

from tarka_jax.errors import TarkaError
from tarka_jax.files.jsonfiles import read_json
from tarka_jax.text.prompts import EVAL_STREAM, TRAIN_STREAM, assign_prompts

FORMAT = "tarka-jax-teacher-cache"
VERSION = 1
MANIFEST = "manifest.json"
SPLITS = {"train": TRAIN_STREAM, "eval": EVAL_STREAM}


class CacheError(TarkaError):
    """A cache that does not match the run that wants to read it."""


def corpus_sha256(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        data = t.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# ---- reading --------------------------------------------------------------------------------


class TeacherCache:
    """A cache folder opened for reading (embeddings memory-mapped)."""

    def __init__(self, folder: str):
        path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no teacher cache in {folder} ({MANIFEST} missing); make "
                                    "one with `tarka-jax cache-teacher`")
        self.manifest = read_json(path)
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"{path} is not a tarka-jax teacher cache")
        self.folder = folder
        self.dim = int(self.manifest["dim"])
        self.prompts = dict(self.manifest.get("prompts") or {})

    def has(self, split: str) -> bool:
        return split in self.manifest["splits"]

    def embeddings(self, split: str) -> np.ndarray:
        if not self.has(split):
            raise CacheError(f"the teacher cache {self.folder} has no {split!r} split; "
                             f"rebuild it with --{split} files")
        return np.load(os.path.join(self.folder, f"{split}.npy"), mmap_mode="r")

    def check(self, split: str, texts: Sequence[str], mix: Mapping[str, float],
              seed: int) -> None:
        """Raise unless this split holds exactly ``texts`` with the prompts the loop will draw."""
        if not self.has(split):
            self.embeddings(split)
        info = self.manifest["splits"][split]
        if info["count"] != len(texts) or info["corpus_sha256"] != corpus_sha256(texts):
            raise CacheError(
                f"the teacher cache's {split} split was computed for another corpus "
                f"({info['count']} texts from {info['files']}; the run has {len(texts)} texts "
                "or different content): rebuild it with `tarka-jax cache-teacher`")
        names, choice = assign_prompts(len(texts), dict(mix), seed, SPLITS[split])
        stored = np.load(os.path.join(self.folder, f"{split}_prompts.npy"))
        if names != self.manifest["prompt_names"] or not np.array_equal(stored, choice):
            raise CacheError(
                f"the teacher cache used prompt mix {self.manifest['prompt_mix']} with seed "
                f"{self.manifest['seed']}; the run asks for {dict(mix)} with seed {seed}")
