"""The sentence-transformers-style API: :class:`Embedder` (numpy in, numpy out) and :func:`load`.

Which texts share a forward pass and at what shape (so what a call compiles):
:mod:`tarka_jax.inference.batching`; :attr:`Embedder.compiled_shapes` lists the shapes seen.
How the passes run: :mod:`tarka_jax.inference.passes`; texts longer than ``max_seq_length``
(``chunking=``) and the per-call report: :mod:`tarka_jax.inference.chunked`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from tarka_jax.errors import InputTypeError, UsageError
from tarka_jax.files.text_input import check_encodable
from tarka_jax.inference import batching, chunked, passes, similarity, st_args
from tarka_jax.inference.chunked import ChunkedEmbeddings, EncodeReport
from tarka_jax.inference.loading import load, tokenizer_for
from tarka_jax.inference.placement import Placement
from tarka_jax.inference.quantize import quantize_embeddings
from tarka_jax.nn.numerics import l2_normalize, resolve_dtype
from tarka_jax.text.chunking import DEFAULT_MAX_CHUNKS, ChunkingSpec
from tarka_jax.text.prompts import st_prompt_name
from tarka_jax.text.rows import length_buckets
from tarka_jax.text.tokenizer import TextTokenizer, check_texts


class Embedder:
    """Sentence embeddings with the sentence-transformers calling conventions.

    Build it with :meth:`from_pretrained`. Outputs are float32 numpy arrays. It runs on
    every local device by default, rows split over them (``device=`` / ``devices=`` /
    ``mesh=``: :mod:`tarka_jax.inference.placement`, docs/devices.md).
    """

    def __init__(self, config, params, tokenizer: TextTokenizer, *, prompts=None,
                 default_prompt_name: str | None = None, similarity_fn_name: str = "cosine",
                 dtype: Any = "float32", attention: str | None = None,
                 truncate_dim: int | None = None, pack: bool = True,
                 pack_segments: int | None = None, buckets_per_octave: int = 1,
                 device: Any = None, devices: Any = None, mesh: Any = None):
        self.dtype = resolve_dtype(dtype).name
        _check_attention(attention)
        self.config = config
        self.tokenizer = tokenizer
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise UsageError(f"default_prompt_name {default_prompt_name!r} is not one of the "
                             f"prompts {list(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.similarity_fn_name = similarity_fn_name
        self.attention = attention
        self.truncate_dim = st_args.check_truncate_dim(truncate_dim, self.config.embedding_dim)
        self.pack = bool(pack)
        self.pack_segments = (None if pack_segments is None else st_args.check_int(  # <= width
            "pack_segments", pack_segments, 1, self.config.max_position_embeddings))
        self.buckets_per_octave = st_args.check_int("buckets_per_octave", buckets_per_octave, 1, 64)
        self.compiled_shapes: set[tuple[int, int, int]] = set()
        self.placement = Placement.build(device, devices, mesh)
        self.mesh = self.placement.mesh
        self.device = self.placement.device  # the one device (None on several)
        self.params = self.placement.put_params(params)
        # Shape policy (tarka_jax.inference.batching): partial passes round to _row_multiple rows, row
        # counts divide by _devices (the mesh's batch axes), passes hold at most pass_tokens
        # token slots (None: batch_size rows), packed plans rank by estimated work per slot.
        platform = self.placement.devices[0].platform
        self._slot_cost = batching.SlotCost.of(config)
        self._row_multiple = batching.ROW_MULTIPLE.get(platform, batching.DEFAULT_ROW_MULTIPLE)
        self._devices, self.pass_tokens = self.placement.rows, batching.PASS_TOKENS.get(platform)
        self.source_folder: str | None = None  # the folder from_pretrained read (for save)
        self._set_buckets()

    @classmethod
    def from_pretrained(cls, model_name_or_path, dtype: Any = "float32",
                        attention: str | None = None, max_seq_length: int | None = None,
                        revision: str | None = None, cache_dir: str | None = None,
                        token: str | bool | None = None, truncate_dim: int | None = None, *,
                        device: Any = None, devices: Any = None, mesh: Any = None,
                        prompts: dict[str, str] | None = None,
                        default_prompt_name: str | None = None,
                        similarity_fn_name: str | None = None, cache_folder: str | None = None,
                        trust_remote_code: bool = False, local_files_only: bool = False,
                        model_kwargs: dict | None = None, use_auth_token=None,
                        backend: str = "torch", processor_kwargs: dict | None = None,
                        config_kwargs: dict | None = None, model_card_data: Any = None,
                        **kwargs) -> Embedder:
        """Load an HF / sentence-transformers folder, a ``hf_to_flax`` folder, or a hub id.

        Takes sentence-transformers' constructor keywords too (docs/st_dropin.md):
        ``device`` ("cpu", "cuda", "cuda:1", a jax.Device: one device instead of the
        default, every local device; ``devices=`` a list, ``mesh=`` a ("data"[, "fsdp"])
        mesh: docs/devices.md; one of the three at most), ``cache_folder`` (=
        ``cache_dir``), ``local_files_only`` (no download), ``model_kwargs`` (its
        ``torch_dtype`` / ``dtype`` picks the compute dtype; other keys are ignored
        with a warning), ``prompts`` (merged over the saved ones), ``default_prompt_name``
        and ``similarity_fn_name`` (override the saved ones). ``trust_remote_code``,
        ``backend``, ``processor_kwargs``, ``config_kwargs`` change nothing here and
        warn when set.

        Args:
          dtype: compute dtype, "float32" (parity with PyTorch) or "bfloat16".
          attention: attention implementation (None = best for the platform).
          max_seq_length: truncation length, an int in 1..max_position_embeddings;
            None = the checkpoint's.
          truncate_dim: default Matryoshka dimension for every encode call.
        """
        from tarka_jax.convert import open_model

        model_name_or_path, dtype, device, cache_dir, token = st_args.from_pretrained_options(
            model_name_or_path, dtype=dtype, device=device, revision=revision,
            cache_dir=cache_dir, cache_folder=cache_folder, token=token,
            use_auth_token=use_auth_token, local_files_only=local_files_only,
            model_kwargs=model_kwargs, trust_remote_code=trust_remote_code, backend=backend,
            processor_kwargs=processor_kwargs, config_kwargs=config_kwargs,
            model_card_data=model_card_data)
        resolve_dtype(dtype)  # refuse float16 and a bad placement before reading any weights
        mesh = Placement.build(device, devices, mesh).mesh
        _check_attention(attention)
        ckpt = open_model(model_name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        merged = {**ckpt.meta.prompts, **(prompts or {})}  # ST: the caller's win per name
        model = cls(ckpt.config, ckpt.params, tokenizer_for(ckpt, max_seq_length), prompts=merged,
                    default_prompt_name=default_prompt_name or ckpt.meta.default_prompt_name,
                    similarity_fn_name=similarity_fn_name or ckpt.meta.similarity_fn_name,
                    dtype=dtype, attention=attention, truncate_dim=truncate_dim,
                    mesh=mesh, **kwargs)
        model.source_folder = ckpt.folder
        return model

    # ---- properties -------------------------------------------------------------------------

    @property
    def embedding_dim(self) -> int:
        """Dimension of the model's embeddings (before any ``truncate_dim``)."""
        return self.config.embedding_dim

    def get_embedding_dimension(self) -> int:
        """Output dimension of :meth:`encode`, ``truncate_dim`` applied (ST 6.2's name)."""
        return self.truncate_dim or self.embedding_dim

    def get_sentence_embedding_dimension(self) -> int:
        """Alias of :meth:`get_embedding_dimension` (the name before sentence-transformers 6.2)."""
        return self.get_embedding_dimension()

    @property
    def max_seq_length(self) -> int | None:
        return self.tokenizer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        value = st_args.check_max_seq_length(value, self.config.max_position_embeddings)
        self.tokenizer.set_max_seq_length(value)
        self._set_buckets()

    def _set_buckets(self) -> None:
        top = self.tokenizer.max_seq_length or self.config.max_position_embeddings
        if self.buckets_per_octave > 1:
            self.buckets = length_buckets(top, per_octave=self.buckets_per_octave)
        else:
            self.buckets = batching.row_lengths(top)
        self.pack_width_sets = batching.pack_width_sets(top)

    # ---- encoding ---------------------------------------------------------------------------

    def encode(self, inputs: str | Sequence[str], prompt_name: str | None = None,
               prompt: str | None = None, batch_size: int = 32,
               show_progress_bar: bool | None = None,
               output_value: str | None = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               device: Any = None, normalize_embeddings: bool = False,
               truncate_dim: int | None = None, pool: Any = None, chunk_size: int | None = None,
               *, pack: bool | None = None, chunking: str | None = None,
               chunk_overlap: int = 0, max_chunks: int = DEFAULT_MAX_CHUNKS,
               report: EncodeReport | None = None):
        """Embed texts: float32 ``[n, dim]`` (``[dim]`` for a single str).

        The arguments and their order are sentence-transformers 6.2's ``encode``
        (docs/st_dropin.md), with the same rules: truncate, then normalise, then
        quantise; ``convert_to_tensor`` wins over ``convert_to_numpy``.

        Args:
          inputs: a str or a sequence of str (an empty list gives ``[0, dim]``).
          prompt_name: key of :attr:`prompts` to prepend.
          prompt: explicit prompt string (wins over ``prompt_name``); the default
            prompt (``default_prompt_name``) applies when both are None.
          batch_size: texts per forward pass (rows per pass when packing).
          show_progress_bar: tqdm bar; None shows one only for more than 256 texts.
          output_value: "sentence_embedding", or "token_embeddings": a list with one
            float32 ``[tokens_i, hidden]`` array per text (no padding; the backbone's
            last hidden state, before pooling; no truncation or normalisation).
          precision: "float32", or "int8" / "uint8" / "binary" / "ubinary" as
            :func:`tarka_jax.inference.quantize.quantize_embeddings` (int8 / uint8 calibrate on
            this call's embeddings, so they need more than one text).
          convert_to_numpy: True: one numpy array; False: a list of per-text arrays.
          convert_to_tensor: one ``jax.Array`` replicated on the model's devices.
          device: None, or the model's own device(s) (it is placed when built).
          normalize_embeddings: L2-normalise the returned vectors (after truncation).
          truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka),
            after the model's own normalisation; default: the constructor's.
          pool, chunk_size: ST's multi-process pool; not supported (must be None).
          pack: several texts per row (segment ids keep them apart): the same
            embeddings with far less padding. None = the constructor's default
            (True: it measured faster, BENCHMARKS.md); False = one text per row,
            sorted by length and bucketed, like sentence-transformers.
          chunking: a text longer than ``max_seq_length`` is cut there (None or
            "truncate": sentence-transformers' rule), or split into windows of
            ``max_seq_length`` tokens, prompt and special tokens in each: "mean" gives
            one embedding per text (the token-weighted mean of its windows, then the
            model's normalisation), "chunks" a :class:`ChunkedEmbeddings` (one row per
            window with its token and character spans). docs/long_documents.md.
          chunk_overlap: tokens consecutive windows share (less than a window's room
            for text).
          max_chunks: most windows per text; a longer text is embedded from its first
            ``max_chunks`` windows, with a warning, and counted in ``report.truncated``.
          report: an :class:`EncodeReport` this call fills (texts, model inputs, tokens,
            which texts were truncated); one per call, so threads never share it.
        """
        texts, single = check_texts(inputs)
        check_encodable(texts)
        prompt = self._resolve_prompt(prompt, prompt_name)
        truncate_dim = (st_args.check_truncate_dim(truncate_dim, self.config.embedding_dim)
                        or self.truncate_dim)
        batch_size = st_args.check_int("batch_size", batch_size)
        st_args.check_encode_options(output_value, precision, pool, chunk_size)
        spec = ChunkingSpec.parse(chunking, chunk_overlap, max_chunks)
        self.placement.check_encode_device(device)
        if output_value == "token_embeddings":
            if spec.windows:
                raise UsageError("chunking applies to sentence embeddings; "
                                 "output_value='token_embeddings' returns tokens as they are")
            out = self._token_embeddings(texts, prompt, batch_size, report)
            if precision != "float32" and out:
                out = quantize_embeddings(out, precision)
            if convert_to_tensor:
                out = [self.placement.put_output(x) for x in out]
            return out[0] if single else out
        if not texts and not self.placement.spans_processes:  # (else a collective: join it)
            chunked.fill_report(report, spec, 0, [], [], self.max_seq_length)
            out = np.zeros((0, self.embedding_dim), np.float32)
            if spec.mode == "chunks":
                out = ChunkedEmbeddings.empty(out)
        else:
            out = chunked.embed_texts(
                self, texts, prompt, spec, batch_size=batch_size,
                pack=self.pack if pack is None else pack,
                show_progress_bar=show_progress_bar, report=report)
        if isinstance(out, ChunkedEmbeddings):
            rows = self._finish(out.embeddings, truncate_dim, normalize_embeddings, precision,
                                convert_to_numpy, convert_to_tensor)
            return out.with_embeddings(rows)
        out = self._finish(out, truncate_dim, normalize_embeddings, precision,
                           convert_to_numpy, convert_to_tensor)
        return out[0] if single else out

    def encode_query(self, inputs, prompt_name: str | None = None, prompt: str | None = None,
                     *args, **kwargs):
        """:meth:`encode` (same arguments) with the "query" prompt when the model has one."""
        if prompt_name is None and prompt is None:
            prompt_name = st_prompt_name(self.prompts, "query")
        return self.encode(inputs, prompt_name, prompt, *args, **kwargs)

    def encode_document(self, inputs, prompt_name: str | None = None, prompt: str | None = None,
                        *args, **kwargs):
        """:meth:`encode` with the first of the "document", "passage", "corpus" prompts."""
        if prompt_name is None and prompt is None:
            prompt_name = st_prompt_name(self.prompts, "document")
        return self.encode(inputs, prompt_name, prompt, *args, **kwargs)

    def similarity(self, a, b) -> np.ndarray:
        """Pairwise similarity ``[len(a), len(b)]`` with the model's similarity function.

        Cosine for every checkpoint we know of; "dot", "euclidean" and "manhattan"
        (negative distances) as in sentence-transformers. Inputs are ``[n, dim]``
        or ``[dim]``.
        """
        return similarity.matrix(a, b, self.similarity_fn_name)

    def similarity_pairwise(self, a, b) -> np.ndarray:
        """``[n]``: the similarity of ``a[i]`` with ``b[i]`` (sentence-transformers' method)."""
        return similarity.pairwise(a, b, self.similarity_fn_name)

    # ---- tokenising and saving --------------------------------------------------------------

    def preprocess(self, inputs: str | Sequence[str], prompt: str | None = None
                   ) -> dict[str, np.ndarray]:
        """Tokenise as :meth:`encode` does: int32 ``input_ids`` / ``attention_mask`` ``[B, T]``.

        sentence-transformers 6.2's name (``tokenize`` is its deprecated alias, kept
        here too). Rows are padded to the longest text; ``segment_ids`` and
        ``positions`` are what the JAX model takes.
        """
        texts, _ = check_texts(inputs)
        check_encodable(texts)
        batch = self.tokenizer.pad(self.tokenizer.encode(texts, prompt=prompt))
        batch["attention_mask"] = (batch["segment_ids"] > 0).astype(np.int32)
        return batch

    def tokenize(self, texts: str | Sequence[str], prompt: str | None = None
                 ) -> dict[str, np.ndarray]:
        """Alias of :meth:`preprocess` (the name sentence-transformers deprecated in 6.2)."""
        return self.preprocess(texts, prompt=prompt)

    def save(self, path: str, model_name: str | None = None, create_model_card: bool = True,
             train_datasets=None, safe_serialization: bool = True) -> None:
        """Write a sentence-transformers folder ``SentenceTransformer(path)`` loads.

        It carries this model's current prompts, default prompt, similarity function and
        max_seq_length. Written into a temporary sibling and moved into place; an existing
        ``path`` is replaced only if tarka-jax wrote it and it holds nothing else
        (never the model's own folder, or the current directory).
        ``model_name`` / ``create_model_card`` / ``train_datasets`` are accepted for
        sentence-transformers compatibility and write nothing extra.
        """
        from tarka_jax.convert.st_folder import SentenceTransformerMeta, save_sentence_transformers
        from tarka_jax.files.outputs import output_folder

        if not safe_serialization:
            raise UsageError("tarka-jax writes safetensors only (safe_serialization=False)")
        if self.source_folder is None:
            raise UsageError("save needs the tokenizer files: build the model with "
                             "Embedder.from_pretrained")
        meta = SentenceTransformerMeta(dict(self.prompts), self.default_prompt_name,
                                       self.max_seq_length, self.similarity_fn_name)
        params = jax.tree.map(np.asarray, self.params)
        with output_folder(path, sources=[self.source_folder], force=True) as tmp:
            save_sentence_transformers(tmp, self.config, params, meta, self.source_folder)

    def save_pretrained(self, path: str, **kwargs) -> None:
        """Same as :meth:`save` (sentence-transformers has both names)."""
        self.save(path, **kwargs)

    # ---- internals --------------------------------------------------------------------------

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        # sentence-transformers' rule: explicit prompt > prompt_name > default_prompt_name.
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputTypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                valid = ", ".join(repr(p) for p in self.prompts) or "none: the model has no prompts"
                raise UsageError(f"unknown prompt name {prompt_name!r}; valid names: {valid}")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def _token_embeddings(self, texts, prompt, batch_size, report) -> list[np.ndarray]:
        ids = chunked.encode_truncated(self.tokenizer, texts, prompt, ChunkingSpec(), report)
        return passes.token_embeddings_of(self, ids, batch_size)

    def _finish(self, out: np.ndarray, truncate_dim, normalize_embeddings, precision,
                convert_to_numpy, convert_to_tensor):
        """``[n, dim]`` float32 -> what ``encode`` returns: truncated to ``truncate_dim``,
        normalised, quantised, then numpy, per-row arrays or one ``jax.Array``."""
        if len(out):
            if truncate_dim:
                out = out[:, :truncate_dim]
            if normalize_embeddings:
                out = l2_normalize(out)
            out = np.ascontiguousarray(out, dtype=np.float32)
            if precision != "float32":
                out = quantize_embeddings(out, precision)
        elif truncate_dim:
            out = out[:, :truncate_dim]
        if convert_to_tensor:
            return self.placement.put_output(out)
        if not convert_to_numpy:
            return [self.placement.put_output(row) for row in out]
        return out


def _check_attention(attention: str | None) -> None:
    from tarka_jax.kernels import check_implementation_name

    check_implementation_name(attention)


__all__ = ["ChunkedEmbeddings", "Embedder", "EncodeReport", "load"]
