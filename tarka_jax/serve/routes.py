"""The routes: TEI's ``/embed`` (and ``/``), ``/embed_all``, ``/tokenize``, ``/info``, ``/health``;
OpenAI's ``/v1/embeddings``; Prometheus' ``/metrics``. Shapes: docs/serve.md.

Each handler reads its body (bounded by ``--payload-limit``), parses it
(:mod:`tarka_jax.serve.schemas`), and leaves the work to the
:class:`~tarka_jax.serve.service.Service`; an :class:`~tarka_jax.serve.apierrors.ApiError`
anywhere becomes TEI's error body (:mod:`tarka_jax.serve.app` catches it). Bodies are written
with orjson, float32 values as their shortest round-tripping decimals.
"""

from __future__ import annotations

import base64
import time

import orjson
from fastapi import APIRouter, Request, Response

from tarka_jax import __version__
from tarka_jax.serve import apierrors, schemas
from tarka_jax.serve.service import Service

JSON = "application/json"


def _json(content, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status,
                    headers=headers, media_type=JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (Content-Length first)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise apierrors.payload_too_large(int(size), limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise apierrors.payload_too_large(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def disconnect_watch(request: Request):
    """An awaitable factory that returns when the client has closed its connection."""
    receive = request.receive

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
    return disconnected


def build_router(service: Service) -> APIRouter:
    """Every route of one server, bound to its service."""
    router = APIRouter()
    settings, metrics = service.settings, service.metrics

    async def parse(request: Request, model):
        return schemas.parse(model, await read_body(request, settings.payload_limit))

    def serialized(content, start: float) -> Response:
        response = _json(content)
        metrics.stage.labels("serialize").observe(time.perf_counter() - start)
        return response

    async def embed(request: Request) -> Response:
        req = await parse(request, schemas.EmbedRequest)
        texts, _ = schemas.texts(req.inputs, "inputs", settings.max_client_batch_size)
        dimensions = service.check_dimensions(req.dimensions)
        prompt = service.prompt(req.prompt_name)
        with service.admitted():
            encoded = await service.tokenize(texts, prompt, req.truncate,
                                             req.truncation_direction, req.chunking)
            out = await service.run(encoded, disconnect_watch(request))
        start = time.perf_counter()
        out = service.finish(service.combine(encoded, out), dimensions, req.normalize)
        if encoded.chunking == "chunks":
            return serialized(_windows(encoded, out), start)
        return serialized(out, start)

    async def openai_embeddings(request: Request) -> Response:
        req = await parse(request, schemas.OpenAIRequest)
        texts, _ = schemas.texts(req.input, "input", settings.max_client_batch_size)
        dimensions = service.check_dimensions(req.dimensions)
        prompt = service.prompt(req.prompt_name)
        with service.admitted():
            encoded = await service.tokenize(texts, prompt, None, None, req.chunking)
            out = await service.run(encoded, disconnect_watch(request))
        start = time.perf_counter()
        out = service.finish(service.combine(encoded, out), dimensions, True)
        if req.encoding_format == "base64":
            rows = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in out]
        else:
            rows = list(out)
        data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(rows)]
        return serialized({"object": "list", "data": data, "model": settings.model_name,
                           "usage": {"prompt_tokens": encoded.tokens,
                                     "total_tokens": encoded.tokens}}, start)

    async def embed_all(request: Request) -> Response:
        req = await parse(request, schemas.EmbedAllRequest)
        texts, _ = schemas.texts(req.inputs, "inputs", settings.max_client_batch_size)
        prompt = service.prompt(req.prompt_name)
        with service.admitted():
            encoded = await service.tokenize(texts, prompt, req.truncate,
                                             req.truncation_direction)
            out = await service.run(encoded, disconnect_watch(request), tokens=True)
        start = time.perf_counter()
        return serialized(out, start)

    async def tokenize(request: Request) -> Response:
        req = await parse(request, schemas.TokenizeRequest)
        texts, _ = schemas.texts(req.inputs, "inputs", settings.max_client_batch_size)
        prompt = service.prompt(req.prompt_name)
        return _json(await service.token_table(texts, prompt, req.add_special_tokens))

    async def health() -> Response:
        service.check_ready()
        return Response(status_code=200)

    async def info() -> Response:
        return _json(info_body(service))

    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    router.add_api_route("/embed", embed, methods=["POST"])
    router.add_api_route("/", embed, methods=["POST"])
    router.add_api_route("/v1/embeddings", openai_embeddings, methods=["POST"])
    router.add_api_route("/embeddings", openai_embeddings, methods=["POST"])
    router.add_api_route("/embed_all", embed_all, methods=["POST"])
    router.add_api_route("/tokenize", tokenize, methods=["POST"])
    router.add_api_route("/health", health, methods=["GET"])
    router.add_api_route("/", health, methods=["GET"])
    router.add_api_route("/info", info, methods=["GET"])
    router.add_api_route("/metrics", prometheus, methods=["GET"])
    return router


def _windows(encoded, rows) -> list[list[dict]]:
    """``chunking: "chunks"``: per input, its windows in order, each with its spans."""
    win, out = encoded.windows, [[] for _ in range(encoded.n_texts)]
    for w, row in enumerate(rows):
        out[win.text_index[w]].append({
            "embedding": row, "chunk": int(win.chunk_index[w]),
            "token_span": win.token_spans[w].tolist(), "char_span": win.char_spans[w].tolist()})
    return out


def info_body(service: Service) -> dict:
    """TEI's ``/info`` fields, then this server's own (devices, prompts, chunking)."""
    s, model = service.settings, service.model
    return {
        "model_id": s.model_name, "model_sha": None, "model_dtype": model.dtype,
        "served_model_name": s.model_name,
        "model_type": {"embedding": {"pooling": "mean"}},
        "max_concurrent_requests": s.max_concurrent_requests,
        "max_input_length": service.max_input_tokens,
        "max_batch_tokens": s.max_batch_tokens, "max_batch_requests": None,
        "max_client_batch_size": s.max_client_batch_size, "auto_truncate": s.auto_truncate,
        "tokenization_workers": 2, "version": __version__, "sha": None, "docker_label": None,
        "embedding_dim": model.embedding_dim, "hidden_size": model.config.hidden_size,
        "prompts": dict(model.prompts), "default_prompt_name": s.prompt_name
        or model.default_prompt_name, "chunking": s.chunking or "truncate",
        "chunk_overlap": s.chunk_overlap, "max_chunks": s.max_chunks,
        "devices": [str(d) for d in model.placement.devices], "pass_tokens": model.pass_tokens,
        "ready": service.ready.is_set(), "status": service.status,
    }


__all__ = ["build_router", "info_body", "read_body"]
