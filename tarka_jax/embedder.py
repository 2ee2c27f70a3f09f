"""The sentence-transformers-style API: :class:`Embedder` (numpy in, numpy out) and :func:`load`.

Inference shape policy (why a call compiles what it compiles): see
:mod:`tarka_jax.batching`. In short: unpacked rows are padded to row lengths
that step by 64/128 above 128 tokens; packed texts share rows only with texts
of similar length (one length group per power of two); a group's partial pass
is padded to a multiple of 8 rows (powers of two below 8); compiled programs
are reused across calls (one module-level ``jax.jit``, params passed as an
argument) and :attr:`Embedder.compiled_shapes` lists the (rows, length,
segments) seen. ``buckets_per_octave >= 2`` selects the older geometric length
buckets for unpacked rows (BENCHMARKS.md has the measured trade-off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from tarka_jax import batching
from tarka_jax.model import embed
from tarka_jax.numerics import l2_normalize, resolve_dtype
from tarka_jax.tokenizer import TextTokenizer, check_texts, length_buckets

# One jitted forward for every Embedder: params are an argument, the config and
# the compute settings are static, so equal settings share compiled programs.
_embed_jit = jax.jit(embed, static_argnames=("config", "dtype", "attention",
                                             "segments_per_row", "remat"))

_DOCUMENT_PROMPTS = ("document", "passage", "corpus")
_AUTO_PROGRESS_BATCHES = 8  # show_progress_bar=None shows a bar above this many batches


def load(path_or_hub_id, *, max_seq_length: int | None = None, revision: str | None = None,
         cache_dir: str | None = None, token: str | bool | None = None):
    """``(config, params, tokenizer)`` for the functional API.

    ``params`` is a float32 numpy tree for :func:`tarka_jax.embed`; ``tokenizer``
    a :class:`~tarka_jax.tokenizer.TextTokenizer` producing its batches.
    """
    from tarka_jax.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path_or_hub_id, revision=revision, cache_dir=cache_dir, token=token)
    return ckpt.config, ckpt.params, _tokenizer_for(ckpt, max_seq_length)


def _tokenizer_for(ckpt, max_seq_length: int | None) -> TextTokenizer:
    return TextTokenizer.from_folder(
        ckpt.folder, max_seq_length or ckpt.meta.max_seq_length,
        max_position_embeddings=ckpt.config.max_position_embeddings)


class Embedder:
    """Sentence embeddings with the sentence-transformers calling conventions.

    Build it with :meth:`from_pretrained`. Outputs are float32 numpy arrays.
    """

    def __init__(self, config, params, tokenizer: TextTokenizer, *, prompts=None,
                 default_prompt_name: str | None = None, similarity_fn_name: str = "cosine",
                 dtype: Any = "float32", attention: str | None = None,
                 truncate_dim: int | None = None, pack: bool = True,
                 pack_segments: int | None = None, buckets_per_octave: int = 1):
        self.dtype = resolve_dtype(dtype).name
        _check_attention(attention)
        self.config = config
        self.tokenizer = tokenizer
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the "
                             f"prompts {list(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.similarity_fn_name = similarity_fn_name
        self.attention = attention
        self.truncate_dim = self._check_truncate_dim(truncate_dim)
        self.pack = bool(pack)
        self.pack_segments = pack_segments
        if not isinstance(buckets_per_octave, int) or buckets_per_octave < 1:
            raise ValueError(f"buckets_per_octave must be a positive int, got {buckets_per_octave!r}")
        self.buckets_per_octave = buckets_per_octave
        self.compiled_shapes: set[tuple[int, int, int]] = set()
        # Shape policy knobs (tarka_jax.batching): partial passes round to a multiple of
        # _row_multiple rows; every row count divides by _devices (a data-parallel mesh).
        self._row_multiple = 8
        self._devices = 1
        self.params = jax.device_put(params)
        self._set_buckets()

    @classmethod
    def from_pretrained(cls, path_or_hub_id, dtype: Any = "float32", attention: str | None = None,
                        max_seq_length: int | None = None, revision: str | None = None,
                        cache_dir: str | None = None, token: str | bool | None = None,
                        truncate_dim: int | None = None, **kwargs) -> Embedder:
        """Load an HF / sentence-transformers folder, a ``hf_to_flax`` folder, or a hub id.

        Args:
          dtype: compute dtype, "float32" (parity with PyTorch) or "bfloat16".
          attention: attention implementation (None = best for the platform).
          max_seq_length: truncation length; None = the checkpoint's.
          truncate_dim: default Matryoshka dimension for every encode call.
        """
        from tarka_jax.checkpoint import load_checkpoint

        resolve_dtype(dtype)  # refuse float16 before reading any weights
        _check_attention(attention)
        ckpt = load_checkpoint(path_or_hub_id, revision=revision, cache_dir=cache_dir,
                               token=token)
        return cls(ckpt.config, ckpt.params, _tokenizer_for(ckpt, max_seq_length),
                   prompts=ckpt.meta.prompts, default_prompt_name=ckpt.meta.default_prompt_name,
                   similarity_fn_name=ckpt.meta.similarity_fn_name, dtype=dtype,
                   attention=attention, truncate_dim=truncate_dim, **kwargs)

    # ---- properties -------------------------------------------------------------------------

    @property
    def embedding_dim(self) -> int:
        """Dimension of the model's embeddings (before any ``truncate_dim``)."""
        return self.config.embedding_dim

    def get_sentence_embedding_dimension(self) -> int:
        """Output dimension, ``truncate_dim`` applied (sentence-transformers' name)."""
        return self.truncate_dim or self.embedding_dim

    @property
    def max_seq_length(self) -> int | None:
        return self.tokenizer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        self.tokenizer.set_max_seq_length(value)
        self._set_buckets()

    def _set_buckets(self) -> None:
        top = self.tokenizer.max_seq_length or self.config.max_position_embeddings
        if self.buckets_per_octave > 1:
            self.buckets = length_buckets(top, per_octave=self.buckets_per_octave)
        else:
            self.buckets = batching.row_lengths(top)
        self.pack_widths = batching.pack_widths(top)

    # ---- encoding ---------------------------------------------------------------------------

    def encode(self, texts: str | Sequence[str], prompt_name: str | None = None,
               prompt: str | None = None, batch_size: int = 32, truncate_dim: int | None = None,
               normalize_embeddings: bool = False, show_progress_bar: bool | None = None,
               pack: bool | None = None) -> np.ndarray:
        """Embed texts: float32 ``[n, dim]`` (``[dim]`` for a single str).

        Args:
          texts: a str or a sequence of str (an empty list gives ``[0, dim]``).
          prompt_name: key of :attr:`prompts` to prepend.
          prompt: explicit prompt string (wins over ``prompt_name``); the default
            prompt (``default_prompt_name``) applies when both are None.
          batch_size: texts per forward pass (rows per pass when packing).
          truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka),
            after the model's own normalisation; default: the constructor's.
          normalize_embeddings: L2-normalise the returned vectors (after truncation).
          show_progress_bar: tqdm bar; None shows one only for more than 8 batches.
          pack: several texts per row (segment ids keep them apart): the same
            embeddings with far less padding. None = the constructor's default
            (True: it measured faster, BENCHMARKS.md); False = one text per row,
            sorted by length and bucketed, like sentence-transformers.
        """
        texts, single = check_texts(texts)
        prompt = self._resolve_prompt(prompt, prompt_name)
        truncate_dim = self._check_truncate_dim(truncate_dim) or self.truncate_dim
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not texts:
            return np.zeros((0, truncate_dim or self.embedding_dim), np.float32)

        ids = self.tokenizer.encode(texts, prompt=prompt)
        if self.pack if pack is None else pack:
            out = self._run_packed(ids, batch_size, show_progress_bar)
        else:
            out = self._run_sorted(ids, batch_size, show_progress_bar)
        if truncate_dim:
            out = out[:, :truncate_dim]
        if normalize_embeddings:
            out = l2_normalize(out)
        out = np.ascontiguousarray(out, dtype=np.float32)
        return out[0] if single else out

    def encode_query(self, texts, prompt_name: str | None = None, prompt: str | None = None,
                     **kwargs) -> np.ndarray:
        """:meth:`encode` with the "query" prompt when the model has one."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(self, texts, prompt_name: str | None = None, prompt: str | None = None,
                        **kwargs) -> np.ndarray:
        """:meth:`encode` with the first of the "document", "passage", "corpus" prompts."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in _DOCUMENT_PROMPTS if n in self.prompts), None)
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def similarity(self, a, b) -> np.ndarray:
        """Pairwise similarity ``[len(a), len(b)]`` with the model's similarity function.

        Cosine for every checkpoint we know of; "dot", "euclidean" and "manhattan"
        (negative distances) as in sentence-transformers.
        """
        a = np.atleast_2d(np.asarray(a, np.float32))
        b = np.atleast_2d(np.asarray(b, np.float32))
        if a.shape[-1] != b.shape[-1]:
            raise ValueError(f"cannot compare {a.shape[-1]}-d with {b.shape[-1]}-d embeddings")
        name = self.similarity_fn_name
        if name == "cosine":
            a, b = l2_normalize(a), l2_normalize(b)
            return a @ b.T
        if name == "dot":
            return a @ b.T
        if name == "euclidean":
            return -np.linalg.norm(a[:, None] - b[None], axis=-1)
        if name == "manhattan":
            return -np.abs(a[:, None] - b[None]).sum(-1)
        raise ValueError(f"unknown similarity function {name!r}")

    # ---- internals --------------------------------------------------------------------------

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        # sentence-transformers' rule: explicit prompt > prompt_name > default_prompt_name.
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                valid = ", ".join(repr(p) for p in self.prompts) or "none: the model has no prompts"
                raise ValueError(f"unknown prompt name {prompt_name!r}; valid names: {valid}")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def _check_truncate_dim(self, truncate_dim: int | None) -> int | None:
        if truncate_dim is None:
            return None
        dim = self.config.embedding_dim
        if (not isinstance(truncate_dim, (int, np.integer)) or isinstance(truncate_dim, bool)
                or not 0 < truncate_dim <= dim):
            raise ValueError(
                f"truncate_dim must be an int in 1..{dim} (the model's dimension), "
                f"got {truncate_dim!r}")
        return int(truncate_dim)

    def _forward(self, batch: dict[str, np.ndarray], segments: int):
        rows, width = batch["input_ids"].shape
        self.compiled_shapes.add((rows, width, segments))
        arrays = {k: batch[k] for k in ("input_ids", "segment_ids", "positions")}
        return _embed_jit(self.params, arrays, self.config, dtype=self.dtype,
                          attention=self.attention, segments_per_row=segments)

    def _policy(self) -> dict[str, int]:
        return dict(pad_id=self.tokenizer.pad_token_id, row_multiple=self._row_multiple,
                    devices=self._devices)

    def _run_sorted(self, ids, batch_size, show_progress_bar) -> np.ndarray:
        return self._run(batching.plan_sorted(ids, batch_size, self.buckets, **self._policy()),
                         len(ids), show_progress_bar)

    def _run_packed(self, ids, batch_size, show_progress_bar) -> np.ndarray:
        plan = batching.plan_packed(ids, batch_size, self.pack_widths,
                                    segments=self.pack_segments, **self._policy())
        return self._run(plan, len(ids), show_progress_bar)

    def _run(self, passes, n_texts: int, show_progress_bar) -> np.ndarray:
        """Run the planned passes (pipelined) and put each embedding back at its input index."""
        out = np.empty((n_texts, self.embedding_dim), np.float32)
        batches = ((p, p.arrays) for p in passes)
        for p, result in self._pipeline(batches, len(passes), show_progress_bar):
            out[p.texts] = result[p.row, p.slot]
        return out

    def _pipeline(self, batches, total: int, show_progress_bar):
        """Dispatch batch i+1 before fetching batch i, so host and device overlap."""
        show = total > _AUTO_PROGRESS_BATCHES if show_progress_bar is None else show_progress_bar
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="Batches", unit="batch")
        pending = None
        try:
            for key, batch in batches:
                current = (key, self._forward(batch, key.segments))
                if pending is not None:
                    yield pending[0], np.asarray(pending[1])
                    if bar is not None:
                        bar.update(1)
                pending = current
            if pending is not None:
                yield pending[0], np.asarray(pending[1])
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()


def _check_attention(attention: str | None) -> None:
    from tarka_jax.kernels import check_implementation_name

    check_implementation_name(attention)


__all__ = ["Embedder", "load"]
