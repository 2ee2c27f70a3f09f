"""The errors a request can get, as text-embeddings-inference (TEI) sends them.

TEI's body is ``{"error": "<message>", "error_type": "<kind>"}``; its OpenAI-compatible route
(``/v1/embeddings``) sends ``{"message": ..., "code": <status>, "type": <kind>}`` instead, which
the ``openai`` clients read too (they take ``body.get("error", body)``). The kinds and their
statuses are TEI's (``router/src/http/server.rs``): Validation and Tokenizer 422, Empty 400,
Overloaded 429, Backend 424, Unhealthy 503. Two statuses TEI's axum layers send without a JSON
body get one here in the same shape: 413 (payload too large, kind Validation) and 401 (kind
Unauthorized, our addition). docs/serve.md lists every message.
"""

from __future__ import annotations

from tarka_jax.errors import TarkaError

STATUS = {"Validation": 422, "Tokenizer": 422, "Empty": 400, "Overloaded": 429,
          "Backend": 424, "Unhealthy": 503, "Unauthorized": 401}


class ApiError(TarkaError):
    """A request the server refuses: an HTTP status, TEI's error kind, one clear message."""

    def __init__(self, message: str, kind: str = "Validation", status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status or STATUS[kind]
        self.headers = dict(headers or {})

    def body(self, openai: bool = False) -> dict:
        """TEI's error object; ``openai``: the shape of TEI's ``/v1/embeddings`` errors."""
        if openai:
            return {"message": self.message, "code": self.status, "type": self.kind}
        return {"error": self.message, "error_type": self.kind}


def validation(message: str) -> ApiError:
    """422: TEI prefixes its validation messages so; clients match on the kind, not the text."""
    return ApiError(f"Input validation error: {message}", "Validation")


def empty() -> ApiError:
    return ApiError("Input validation error: `inputs` cannot be empty", "Empty")


def too_many(n: int, most: int) -> ApiError:
    return validation(f"batch size {n} > maximum allowed batch size {most}")


def too_long(index: int, tokens: int, most: int) -> ApiError:
    return validation(
        f"`inputs` must have less than {most + 1} tokens. Given: {tokens} (input {index}); "
        "send \"truncate\": true, or \"chunking\": \"mean\" to embed it whole")


def payload_too_large(size: int | None, limit: int) -> ApiError:
    got = f"{size} bytes" if size is not None else "more"
    return ApiError(f"Payload too large: {got} > --payload-limit {limit} bytes", "Validation",
                    status=413)


def overloaded(retry_after: int) -> ApiError:
    return ApiError("Model is overloaded: too many concurrent requests "
                    f"(--max-concurrent-requests); retry in {retry_after} s", "Overloaded",
                    headers={"Retry-After": str(retry_after)})


def unauthorized() -> ApiError:
    return ApiError("missing or wrong API key: send the header `Authorization: Bearer <key>`",
                    "Unauthorized", headers={"WWW-Authenticate": "Bearer"})


def unhealthy(message: str) -> ApiError:
    return ApiError(message, "Unhealthy")


def backend(message: str) -> ApiError:
    return ApiError(f"Backend error: {message}", "Backend")


__all__ = ["STATUS", "ApiError", "backend", "empty", "overloaded", "payload_too_large",
           "too_long", "too_many", "unauthorized", "unhealthy", "validation"]
