"""``tarka-jax serve``: the flags, the model, uvicorn. (Argument parsing and start-up only.)"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tarka_jax.errors import TarkaError, UsageError
from tarka_jax.runtime.command import Command

PIP_LINE = "pip install 'tarka-jax[serve]'"
API_KEY_ENV = "TARKA_JAX_API_KEY"


class MissingExtraError(TarkaError):
    """The server's libraries (the ``serve`` extra) are not installed."""


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="model folder (sentence-transformers, HF or hf_to_flax), hub id or "
                        "builtin:NAME")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                   help=f"require `Authorization: Bearer KEY` (401 without it); default "
                        f"${API_KEY_ENV}, which keeps the key out of the process list")
    p.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="real tokens the engine takes from waiting requests per step "
                        "(default 16384); the planner cuts a step into passes of at most "
                        "pass_tokens slots per device (docs/serve.md)")
    p.add_argument("--max-client-batch-size", type=int, default=32,
                   help="most inputs in one request (default 32)")
    p.add_argument("--max-concurrent-requests", type=int, default=512,
                   help="requests admitted at once; more get 429 with Retry-After (default 512)")
    p.add_argument("--max-input-tokens", type=int, default=None,
                   help="longest input in tokens, prompt and special tokens included "
                        "(default: the model's max_seq_length)")
    p.add_argument("--payload-limit", type=int, default=2_000_000,
                   help="largest request body in bytes (default 2000000); more gets 413")
    p.add_argument("--auto-truncate", action="store_true",
                   help="cut inputs over --max-input-tokens when a request does not say "
                        "\"truncate\" (default: refuse them with 422, as TEI does)")
    p.add_argument("--chunking", choices=("truncate", "mean"), default=None,
                   help="default for inputs over --max-input-tokens: 'mean' embeds them whole "
                        "(the token-weighted mean of windows); a request's \"chunking\" wins")
    p.add_argument("--chunk-overlap", type=int, default=0,
                   help="tokens consecutive windows share when chunking (default 0)")
    p.add_argument("--max-chunks", type=int, default=64,
                   help="most windows per input when chunking; a longer input is embedded "
                        "from its first windows and counted as truncated (default 64)")
    p.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    p.add_argument("--prompt-name", default=None,
                   help="default prompt of requests that name none (default: the model's)")
    p.add_argument("--device", default=None,
                   help="one device (cpu, cuda, cuda:1, tpu:0; default: every local device)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="most rows of a forward pass (default 32)")
    p.add_argument("--attention", default=None, help="attention implementation (default: best)")
    p.add_argument("--revision", default=None, help="hub revision")
    p.add_argument("--served-model-name", default=None,
                   help="the name /info and /v1/embeddings report (default: --model)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))


def _check(args) -> None:
    for name in ("max_batch_tokens", "max_client_batch_size", "max_concurrent_requests",
                 "payload_limit", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, "
                             f"got {getattr(args, name)}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.max_input_tokens is not None and args.max_input_tokens > args.max_batch_tokens:
        raise UsageError(f"--max-batch-tokens ({args.max_batch_tokens}) must be at least "
                         f"--max-input-tokens ({args.max_input_tokens})")


def _imports():
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise MissingExtraError(f"tarka-jax serve needs the serve extra ({e.name} is missing): "
                                f"{PIP_LINE}") from None
    return uvicorn


def _run(args) -> int:
    uvicorn = _imports()
    _check(args)
    from tarka_jax.inference.embedder import Embedder
    from tarka_jax.serve.app import create_app
    from tarka_jax.serve.metrics import Metrics
    from tarka_jax.serve.service import Service, Settings

    model = Embedder.from_pretrained(args.model, dtype=args.dtype, attention=args.attention,
                                     max_seq_length=args.max_input_tokens,
                                     revision=args.revision, device=args.device)
    if model.max_seq_length > args.max_batch_tokens:
        raise UsageError(f"--max-batch-tokens ({args.max_batch_tokens}) must be at least the "
                         f"longest input ({model.max_seq_length} tokens; --max-input-tokens)")
    settings = Settings(
        model_name=args.served_model_name or args.model, max_batch_tokens=args.max_batch_tokens,
        max_client_batch_size=args.max_client_batch_size,
        max_concurrent_requests=args.max_concurrent_requests, payload_limit=args.payload_limit,
        auto_truncate=args.auto_truncate, chunking=args.chunking,
        chunk_overlap=args.chunk_overlap, max_chunks=args.max_chunks, prompt_name=args.prompt_name,
        batch_size=args.batch_size, api_key=args.api_key)
    service = Service(settings, model, Metrics())
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"tarka-jax serve: listening on {args.host} without --api-key: anyone who can "
              "reach this port can use the model", file=sys.stderr)
    failed = []
    config = uvicorn.Config(None, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=30, lifespan="on")
    server = uvicorn.Server(config)

    def on_fatal(error):
        failed.append(error)
        server.should_exit = True

    config.app = create_app(service, on_fatal)
    server.run()
    if failed:
        raise failed[0]
    return 0


COMMAND = Command(
    "serve", "serve embeddings over HTTP (OpenAI- and TEI-compatible; needs the serve extra)",
    _arguments, _run,
    description="An embedding server: OpenAI POST /v1/embeddings, text-embeddings-inference "
                "POST /embed, /embed_all, /tokenize, GET /health, /info, /metrics. Requests "
                "are batched together under a token budget and packed into passes on every "
                "local device. docs/serve.md.")
