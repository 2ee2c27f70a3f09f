"""The ASGI application: routes, errors in TEI's shape, the API key, metrics, start and stop.

Start-up binds the port at once and compiles on a thread: ``/health`` answers 503 ("warming
up: compiled k of n programs") until every pass shape is compiled, then 200. Shutdown (SIGTERM
or SIGINT: uvicorn's graceful shutdown) stops accepting connections, lets the requests in
flight finish (the engine keeps running for them), then stops the engine.

Errors: an :class:`~tarka_jax.serve.apierrors.ApiError` becomes its status and TEI's body
(``/v1/embeddings``: TEI's OpenAI-compatible body); anything else a request triggers is logged
and answered 500 in the same shape; the server goes on. ``--api-key`` guards every route but
``/health``, ``GET /`` and ``/metrics`` (TEI's public routes).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time

import orjson
from fastapi import FastAPI, Request, Response

from tarka_jax.serve import apierrors
from tarka_jax.serve.routes import build_router
from tarka_jax.serve.service import ClientGone, Service

log = logging.getLogger("tarka_jax.serve")
PUBLIC = {("GET", "/health"), ("GET", "/"), ("GET", "/metrics")}
OPENAI_PATHS = {"/v1/embeddings", "/embeddings"}
ROUTES = {"/", "/embed", "/embed_all", "/tokenize", "/health", "/info", "/metrics",
          "/v1/embeddings", "/embeddings"}


def error_response(error: apierrors.ApiError, path: str) -> Response:
    body = error.body(openai=path in OPENAI_PATHS)
    return Response(orjson.dumps(body), error.status, headers=error.headers,
                    media_type="application/json")


def create_app(service: Service, on_fatal=None) -> FastAPI:
    """The app over ``service``; ``on_fatal(error)`` is called if start-up compiling fails."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        def warm_up():
            try:
                service.warm_up()
                log.info("ready: %s", service.status)
            except BaseException as e:  # noqa: BLE001  (said, then the server stops)
                service.status = f"start-up failed: {e}"
                log.error("tarka-jax serve: %s", service.status)
                if on_fatal is not None:
                    on_fatal(e)

        threading.Thread(target=warm_up, name="tarka-serve-warmup", daemon=True).start()
        yield
        service.close()

    app = FastAPI(title="tarka-jax serve", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.include_router(build_router(service))

    @app.exception_handler(apierrors.ApiError)
    async def api_error(request: Request, error: apierrors.ApiError):
        return error_response(error, request.url.path)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone):
        return Response(status_code=499)  # nobody reads it; the metrics count it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("tarka-jax serve: %s %s failed", request.method, request.url.path)
        message = " ".join(str(error).split())[:500] or type(error).__name__
        return error_response(apierrors.ApiError(f"internal error: {message}", "Backend",
                                                 status=500), request.url.path)

    return _Guard(app, service)


class _Guard:
    """Pure ASGI around the app (no body buffering): API key, request count and latency."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        self.key = (f"Bearer {service.settings.api_key}".encode()
                    if service.settings.api_key else None)

    def __getattr__(self, name):  # app.state, app.routes, ... for whoever inspects the app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.key is not None and (method, path) not in PUBLIC and not hmac.compare_digest(
                    dict(scope["headers"]).get(b"authorization", b""), self.key):
                response = error_response(apierrors.unauthorized(), path)
                return await response(scope, receive, send_status)
            return await self.app(scope, receive, send_status)
        finally:
            metrics = self.service.metrics
            route, code = (path if path in ROUTES else "other"), str(status[0])
            metrics.requests.labels(route, code).inc()
            metrics.latency.labels(route, code).observe(time.perf_counter() - start)


__all__ = ["create_app", "error_response"]
