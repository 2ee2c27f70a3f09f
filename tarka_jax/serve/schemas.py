"""The JSON bodies the routes accept, and how a bad one becomes one clear 4xx line.

pydantic models in strict mode (``"normalize": 1`` is not a boolean, ``"dimensions": "64"`` not
an integer); unknown fields are ignored, as TEI's serde structs ignore them (clients send
fields such as ``user`` or huggingface_hub's ``encoding_format`` that change nothing here).
``inputs`` / ``input`` is checked by hand (:func:`texts`) so that a wrong element names its
index and type instead of pydantic's union report. Field names and defaults are TEI's
(``router/src/http/types.rs``) and OpenAI's embeddings API; ``chunking`` (and ``prompt_name``
on ``/v1/embeddings``) are this server's additions (docs/serve.md).
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict

from tarka_jax.serve import apierrors

Direction = Literal["left", "right", "Left", "Right"]
Chunking = Literal["truncate", "mean"]  # one embedding per input: any route
Windowed = Literal["truncate", "mean", "chunks"]  # "chunks": /embed only (a list per input)


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class EmbedRequest(_Request):
    """TEI ``POST /embed`` (and ``POST /``)."""

    inputs: Any
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Direction | None = None
    prompt_name: str | None = None
    dimensions: int | None = None
    chunking: Windowed | None = None


class EmbedAllRequest(_Request):
    """TEI ``POST /embed_all``: every token's last hidden state."""

    inputs: Any
    truncate: bool | None = None
    truncation_direction: Direction | None = None
    prompt_name: str | None = None


class OpenAIRequest(_Request):
    """OpenAI ``POST /v1/embeddings``."""

    input: Any
    model: str | None = None
    user: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    prompt_name: str | None = None
    chunking: Chunking | None = None


class TokenizeRequest(_Request):
    """TEI ``POST /tokenize``."""

    inputs: Any
    add_special_tokens: bool = True
    prompt_name: str | None = None


def parse(model: type[BaseModel], body: bytes) -> BaseModel:
    """``body`` as ``model``, or a 422 naming the first field at fault."""
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        what = first["msg"]
        if first["type"] == "json_invalid":
            what = f"the body is not valid JSON ({first.get('ctx', {}).get('error', what)})"
        elif first["type"] == "model_type":
            what = "the body must be a JSON object"
        elif first["type"] == "missing":
            what = f"`{where}` is required"
        else:
            what = f"`{where}`: {what}"
        raise apierrors.validation(what) from None


def texts(value: Any, field: str, most: int) -> tuple[list[str], bool]:
    """``(texts, single)`` from a string or a list of strings, at most ``most`` of them.

    TEI's rules: an empty list or an empty string is 400 Empty, more than
    ``--max-client-batch-size`` is 422. Token-id inputs (lists of integers, which TEI and
    OpenAI also take) are refused: ids of another tokenizer would embed as nonsense.
    """
    if isinstance(value, str):
        items, single = [value], True
    elif isinstance(value, list):
        items, single = value, False
        if not items:
            raise apierrors.empty()
        if len(items) > most:
            raise apierrors.too_many(len(items), most)
    else:
        raise apierrors.validation(f"`{field}` must be a string or a list of strings, not "
                                   f"{_json_type(value)}")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            hint = (" (token-id inputs are not supported: send text)"
                    if isinstance(item, (int, list)) else "")
            raise apierrors.validation(f"`{field}[{i}]` is {_json_type(item)}, not a string{hint}")
        if not item:
            raise apierrors.empty()
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as e:
            raise apierrors.validation(f"`{field}[{i}]` holds a lone surrogate at character "
                                       f"{e.start}: not valid Unicode text") from None
    return items, single


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


__all__ = ["EmbedAllRequest", "EmbedRequest", "OpenAIRequest", "TokenizeRequest", "parse",
           "texts"]
