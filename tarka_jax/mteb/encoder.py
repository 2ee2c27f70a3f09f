"""MTEB (``pip install mteb``, 2.x) for tarka-jax models: :class:`TarkaEncoder`.

``mteb.evaluate(TarkaEncoder("path/or/hub-id"), tasks)`` scores a JAX model with
the same protocol the MTEB leaderboard uses for a ``SentenceTransformer``. Three
things make the numbers comparable with ``SentenceTransformer(path)`` through mteb
(tested in ``tests/test_mteb.py``; docs/mteb.md has the walk-through):

* **Prompt resolution is mteb's own.** The model's prompts are seen the way mteb
  sees a sentence-transformers 6.x model: its ``config_sentence_transformers.json``
  prompts on top of sentence-transformers' built-in ``{"query": None, "document":
  None}``, keys mteb does not know dropped (with mteb's warning), and the prompt
  for a task chosen by :func:`mteb.models.abs_encoder.get_prompt_name`: task name +
  prompt type, task name, task type + prompt type, task type, prompt type.
* **The same encode paths.** Queries go through ``Embedder.encode_query``,
  documents through ``encode_document`` and everything else through ``encode``,
  as mteb calls them on a ``SentenceTransformer``; when mteb resolves no prompt,
  the prompt sentence-transformers would then fall back to is passed explicitly,
  so the two libraries cannot drift apart on a corner case.
* **mteb's similarity functions** (cosine / dot), taken from the model's
  ``similarity_fn_name``.

mteb depends on torch; install a CPU torch first (README), then ``.[mteb]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np

try:
    from mteb.models import ModelMeta
    from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
    from mteb.models.model_meta import ScoringFunction
    from mteb.types import PromptType
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError("tarka_jax.mteb.encoder needs the mteb package: install a CPU torch first, "
                      "then pip install 'tarka-jax[mteb]'", name=e.name) from e

from tarka_jax.errors import InputTypeError, UsageError
from tarka_jax.inference.embedder import Embedder
from tarka_jax.text.chunking import DEFAULT_MAX_CHUNKS, ChunkingSpec
from tarka_jax.text.prompts import st_prompt_name

#: sentence-transformers 6.x adds these to every model's prompts (``_default_prompts``).
ST_DEFAULT_PROMPTS: dict[str, str | None] = {"query": None, "document": None}
_NON_TEXT = ("image", "audio", "video")


def st_style_prompts(prompts: dict[str, str] | None) -> dict[str, str | None]:
    """The prompts a ``SentenceTransformer`` loaded from the same folder holds."""
    return {**ST_DEFAULT_PROMPTS, **(prompts or {})}


def resolve_prompt(model_prompts: dict[str, str | None] | None, task_metadata,
                   prompt_type: PromptType | None) -> str | None:
    """The prompt string mteb hands ``encode_query``/``encode_document``/``encode``.

    ``model_prompts`` is the validated dict (:meth:`TarkaEncoder.model_prompts`);
    None when no key matches or the matching value is None.
    """
    if not model_prompts:
        return None
    name = get_prompt_name(model_prompts, task_metadata, prompt_type)
    return model_prompts.get(name) if name else None


def fallback_prompt(st_prompts: dict[str, str | None], default_prompt_name: str | None,
                    prompt_type: PromptType | None) -> str:
    """What sentence-transformers 6.x prepends when called with ``prompt=None``.

    ``encode_query`` takes the "query" prompt when the key exists (ST's defaults
    make it exist, possibly as None = no prompt, which also blocks the default
    prompt); ``encode_document`` the first of "document", "passage", "corpus";
    plain ``encode`` the ``default_prompt_name`` prompt. "" means no prompt.
    """
    kind = {PromptType.query: "query", PromptType.document: "document"}.get(prompt_type)
    name = st_prompt_name(st_prompts, kind) if kind else default_prompt_name
    return (st_prompts.get(name) if name else None) or ""


class TarkaEncoder(AbsEncoder):
    """An mteb 2.x encoder (``EncoderProtocol``) running a tarka-jax :class:`Embedder`.

    Args:
      model_name_or_path: a model folder (sentence-transformers, HF or
        ``hf_to_flax``), a hub id, ``builtin:NAME``, or a ready :class:`Embedder`.
      revision: hub revision (also reported in :attr:`mteb_model_meta`).
      dtype: compute dtype, "float32" (parity with PyTorch) or "bfloat16".
      attention: attention implementation (None = the platform's best).
      devices: jax devices (or one platform string such as "cpu", "gpu:0") to run
        on; one device is supported (the Embedder has no multi-device encode).
      device: mteb's loader argument, the same as a one-device ``devices``.
      model_prompts: replaces the model's own prompts, as for mteb's
        ``SentenceTransformerEncoderWrapper``.
      name: the model name mteb records (default: the hub id, or
        ``local/<folder name>``); must contain a "/".
      batch_size: texts per forward pass when mteb passes no ``batch_size``.
      chunking: None / "truncate" (sentence-transformers' rule, the default), or "mean":
        texts longer than ``max_seq_length`` embed as the mean of their windows
        (``Embedder.encode(chunking=...)``, docs/long_documents.md); mteb takes one
        vector per text, so "chunks" is refused.
      chunk_overlap, max_chunks: the windows' overlap and most windows per text.
      **kwargs: more :meth:`Embedder.from_pretrained` arguments
        (``max_seq_length``, ``truncate_dim``, ``cache_dir``, ``token``, ``pack``...).
    """

    def __init__(self, model_name_or_path: str | Embedder, revision: str | None = None, *,
                 dtype: str = "float32", attention: str | None = None,
                 devices: Sequence[Any] | str | None = None, device: str | None = None,
                 model_prompts: dict[str, str] | None = None, name: str | None = None,
                 batch_size: int = 32, chunking: str | None = None, chunk_overlap: int = 0,
                 max_chunks: int = DEFAULT_MAX_CHUNKS, **kwargs: Any) -> None:
        self.chunking = ChunkingSpec.parse(chunking, chunk_overlap, max_chunks)
        if self.chunking.mode == "chunks":
            raise UsageError("mteb scores one vector per text: chunking must be 'truncate' "
                             "or 'mean', not 'chunks'")
        self.device = _one_device(devices if devices is not None else device)
        if isinstance(model_name_or_path, Embedder):
            if kwargs:
                raise InputTypeError(f"unexpected arguments for a ready Embedder: {sorted(kwargs)}")
            self.model = model_name_or_path
            source = None
        else:
            import jax

            with jax.default_device(self.device):
                self.model = Embedder.from_pretrained(model_name_or_path, dtype=dtype,
                                                      attention=attention, revision=revision,
                                                      **kwargs)
            source = str(model_name_or_path)
        self.batch_size = batch_size
        # What a SentenceTransformer of this folder holds, and what mteb makes of it.
        self.st_prompts = (dict(model_prompts) if model_prompts
                           else st_style_prompts(self.model.prompts))
        validated, _ = AbsEncoder.validate_task_to_prompt_name(self.st_prompts,
                                                               raise_for_invalid_keys=False)
        self.model_prompts = validated
        self.mteb_model_meta = model_meta(self.model, source, revision=revision, name=name,
                                          loader_kwargs={"dtype": self.model.dtype,
                                                         "attention": attention,
                                                         **_recorded(self.chunking)})

    # ---- EncoderProtocol ------------------------------------------------------------------

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        """float32 ``[n, dim]`` embeddings of mteb's DataLoader of text batches."""
        features = getattr(getattr(inputs, "dataset", None), "features", None) or {}
        if any(k in features for k in _NON_TEXT):
            raise UsageError(f"task {task_metadata.name} has {sorted(features)} inputs; "
                             "a tarka-jax model embeds text only")
        texts = [text for batch in inputs for text in batch["text"]]
        prompt = self.prompt_for(task_metadata, prompt_type)
        if prompt_type == PromptType.query:
            encode = self.model.encode_query
        elif prompt_type == PromptType.document:
            encode = self.model.encode_document
        elif prompt_type is None:
            encode = self.model.encode
        else:
            raise UsageError(f"unknown prompt type {prompt_type!r}")
        return encode(texts, prompt=prompt, batch_size=kwargs.get("batch_size", self.batch_size),
                      show_progress_bar=kwargs.get("show_progress_bar", False),
                      **self.chunking.encode_kwargs())

    def prompt_for(self, task_metadata, prompt_type: PromptType | None) -> str:
        """The prompt string prepended for this task and prompt type ("" = none)."""
        prompt = resolve_prompt(self.model_prompts, task_metadata, prompt_type)
        if prompt is not None:
            return prompt
        return fallback_prompt(self.st_prompts, self.model.default_prompt_name, prompt_type)

    def similarity(self, embeddings1, embeddings2):
        """``[n1, n2]`` scores with the model's similarity function (mteb's cosine / dot)."""
        if self.mteb_model_meta.similarity_fn_name in (ScoringFunction.COSINE,
                                                       ScoringFunction.DOT_PRODUCT):
            return super().similarity(embeddings1, embeddings2)
        return self.model.similarity(_numpy(embeddings1), _numpy(embeddings2))

    def similarity_pairwise(self, embeddings1, embeddings2):
        """``[n]`` scores of row ``i`` with row ``i``."""
        if self.mteb_model_meta.similarity_fn_name in (ScoringFunction.COSINE,
                                                       ScoringFunction.DOT_PRODUCT):
            return super().similarity_pairwise(embeddings1, embeddings2)
        a, b = _numpy(embeddings1), _numpy(embeddings2)
        return np.array([self.model.similarity(x, y)[0, 0] for x, y in zip(a, b)], np.float32)


# ---- model metadata ------------------------------------------------------------------------


def model_meta(model: Embedder, source: str | None, *, revision: str | None = None,
               name: str | None = None, loader_kwargs: dict | None = None) -> ModelMeta:
    """mteb's :class:`ModelMeta` of a tarka-jax model (framework "JAX").

    ``revision`` falls back to the hub snapshot's commit (a cached hub folder) or
    the first 12 hex digits of the sha256 of the weights, so two different
    checkpoints never share a result entry.
    """
    from tarka_jax.convert.sources import resolve_folder

    folder = resolve_folder(source, revision=revision) if source else None
    n_params = int(sum(np.size(x) for x in _leaves(model.params)))
    n_embed = int(model.config.vocab_size * model.config.hidden_size)
    sim = model.similarity_fn_name or "cosine"
    return ModelMeta(
        loader=TarkaEncoder, loader_kwargs=dict(loader_kwargs or {}),
        name=name or _default_name(source, folder), revision=revision or _revision(folder),
        release_date=None, languages=None, n_parameters=n_params,
        n_embedding_parameters=n_embed,
        memory_usage_mb=round(n_params * 4 / 2 ** 20, 1),  # float32 weights
        max_tokens=model.max_seq_length, embed_dim=model.get_sentence_embedding_dimension(),
        license=_license(folder), open_weights=True, public_training_code=None,
        public_training_data=None, framework=["JAX"],
        reference=(f"https://huggingface.co/{source}" if _is_hub_id(source, folder) else None),
        similarity_fn_name=ScoringFunction.from_str(sim), use_instructions=bool(model.prompts),
        training_datasets=None)


def _recorded(spec: ChunkingSpec) -> dict[str, Any]:
    """The chunking keywords a result records (none for the default truncation)."""
    return spec.encode_kwargs() if spec.windows else {}


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def _is_hub_id(source: str | None, folder: str | None) -> bool:
    return bool(source) and not os.path.isdir(source) and ":" not in source \
        and source.count("/") == 1 and folder is not None


def _default_name(source: str | None, folder: str | None) -> str:
    if source is None:
        return "local/embedder"
    if _is_hub_id(source, folder):
        return source
    if source.startswith("builtin:"):
        return "builtin/" + source.split(":", 1)[1]
    return "local/" + (os.path.basename(os.path.normpath(folder or source)) or "model")


def _revision(folder: str | None) -> str:
    if folder is None:
        return "in-memory"
    parts = os.path.normpath(folder).split(os.sep)
    if len(parts) >= 2 and parts[-2] == "snapshots":  # huggingface_hub cache: the commit
        return parts[-1]
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith((".safetensors", ".json")) and os.path.isfile(
                os.path.join(folder, name)):
            with open(os.path.join(folder, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return "sha256-" + digest.hexdigest()[:12]


def _license(folder: str | None) -> str | None:
    """The ``license:`` of the model card's front matter, when mteb knows that licence."""
    from mteb.types._metadata import Licenses

    path = os.path.join(folder, "README.md") if folder else None
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, _, value = line.partition(":")
        if key.strip() == "license":
            value = json.loads(value) if value.strip().startswith('"') else value.strip()
            return value if value in get_args(Licenses) else None
    return None


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, np.float32)


def _one_device(devices):
    """One jax device from None / a device / a platform string / a one-element list."""
    import jax

    if devices is None:
        return jax.devices()[0]
    if isinstance(devices, str):
        platform, _, index = devices.partition(":")
        platform = {"cuda": "gpu"}.get(platform.lower(), platform.lower())
        try:
            return jax.devices(platform)[int(index or 0)]
        except (RuntimeError, IndexError) as e:
            raise UsageError(f"no jax device {devices!r}; available: {jax.devices()}") from e
    if not isinstance(devices, (list, tuple)):
        return devices
    if len(devices) != 1:
        raise NotImplementedError(
            f"TarkaEncoder runs on one device; got {len(devices)}. Run one evaluation per "
            "device (e.g. CUDA_VISIBLE_DEVICES) until the Embedder shards its batches")
    return _one_device(devices[0])


__all__ = ["TarkaEncoder", "fallback_prompt", "model_meta", "resolve_prompt",
           "st_style_prompts"]
