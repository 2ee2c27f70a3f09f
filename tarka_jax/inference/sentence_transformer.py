"""``from tarka_jax import SentenceTransformer``: sentence-transformers' constructor over :class:`Embedder`.

Code written for sentence-transformers 6.x runs unchanged except the import::

    from tarka_jax import SentenceTransformer     # was: from sentence_transformers import ...
    model = SentenceTransformer(path, device="cpu", truncate_dim=256)
    q = model.encode_query(["..."]); d = model.encode_document(["..."])
    scores = model.similarity(q, d)

Everything is :class:`~tarka_jax.Embedder` (the same loading, batching and
outputs; numpy arrays where sentence-transformers returns torch tensors, and a
``jax.Array`` for ``convert_to_tensor=True``). docs/st_dropin.md lists what each ST
argument does here.
"""

from __future__ import annotations

from typing import Any

from tarka_jax.errors import InputTypeError
from tarka_jax.inference.embedder import Embedder


class SentenceTransformer(Embedder):
    """An :class:`Embedder` built with sentence-transformers' constructor signature.

    Args mirror ``sentence_transformers.SentenceTransformer.__init__`` (6.2): the
    path (or hub id) first, then keywords. ``modules=`` (a model assembled from torch
    modules) has no JAX equivalent and is refused. tarka-jax's own options
    (``dtype``, ``attention``, ``max_seq_length``, ``pack``, ...) are accepted as
    extra keywords.
    """

    def __init__(self, model_name_or_path: str | None = None, *, modules: Any = None,
                 device: Any = None, prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None, cache_folder: str | None = None,
                 trust_remote_code: bool = False, revision: str | None = None,
                 local_files_only: bool = False, token: bool | str | None = None,
                 use_auth_token: bool | str | None = None, model_kwargs: dict | None = None,
                 processor_kwargs: dict | None = None, config_kwargs: dict | None = None,
                 model_card_data: Any = None, backend: str = "torch",
                 similarity_fn_name: str | None = None, truncate_dim: int | None = None,
                 **tarka_options: Any) -> None:
        if modules is not None:
            raise InputTypeError("SentenceTransformer(modules=...) builds a model from torch modules; "
                            "tarka-jax loads a saved folder or hub id: pass its path")
        if model_name_or_path is None:
            raise InputTypeError("SentenceTransformer() needs a model folder or hub id (tarka-jax "
                            "has no default model)")
        loaded = Embedder.from_pretrained(
            model_name_or_path, device=device, prompts=prompts,
            default_prompt_name=default_prompt_name, cache_folder=cache_folder,
            trust_remote_code=trust_remote_code, revision=revision,
            local_files_only=local_files_only, token=token, use_auth_token=use_auth_token,
            model_kwargs=model_kwargs, processor_kwargs=processor_kwargs,
            config_kwargs=config_kwargs, model_card_data=model_card_data, backend=backend,
            similarity_fn_name=similarity_fn_name, truncate_dim=truncate_dim, **tarka_options)
        self.__dict__.update(loaded.__dict__)


__all__ = ["SentenceTransformer"]
