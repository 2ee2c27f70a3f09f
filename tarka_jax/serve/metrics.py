"""The Prometheus metrics of one server (``GET /metrics``), in their own registry.

A registry per server, not prometheus-client's global one, so several servers in one process
(the tests) never share counters. Names start ``tarka_serve_``; docs/serve.md lists each with
what moves it. The stage histogram is where the time goes: ``tokenize`` and ``serialize`` on
the event loop's side, ``queue`` (submitted until the engine takes the request's first text),
``plan`` (gather + plan + lay out a step), ``dispatch`` (hand a pass to the devices),
``device`` (wait for its result), ``scatter`` (results back to their requests).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STAGE = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
_TOKENS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)
_TEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_SHARE = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Metrics:
    """Every metric the server exports; :meth:`render` is the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tarka_serve_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("tarka_serve_request_duration_seconds",
                                 "request latency (body read to response sent)",
                                 ["route", "status"], buckets=_LATENCY, registry=r)
        self.in_flight = Gauge("tarka_serve_requests_in_flight",
                               "requests admitted and not yet answered "
                               "(--max-concurrent-requests caps it)", registry=r)
        self.queue_texts = Gauge("tarka_serve_queue_texts",
                                 "model inputs waiting for the engine", registry=r)
        self.pass_tokens = Histogram("tarka_serve_pass_tokens", "real tokens per forward pass",
                                     buckets=_TOKENS, registry=r)
        self.pass_texts = Histogram("tarka_serve_pass_texts", "model inputs per forward pass",
                                    buckets=_TEXTS, registry=r)
        self.pass_padding = Histogram("tarka_serve_pass_padding_share",
                                      "share of a pass's token slots that are padding",
                                      buckets=_SHARE, registry=r)
        self.compiles = Counter("tarka_serve_compile_events",
                                "programs compiled, at start-up (warmup) or while serving "
                                "(serving: a shape start-up missed)", ["phase"], registry=r)
        self.truncated = Counter("tarka_serve_inputs_truncated",
                                 "inputs cut at --max-input-tokens", registry=r)
        self.chunked = Counter("tarka_serve_inputs_chunked",
                               "inputs longer than --max-input-tokens embedded in windows",
                               registry=r)
        self.dropped = Counter("tarka_serve_inputs_dropped",
                               "inputs of disconnected clients dropped before the device",
                               registry=r)
        self.tokens = Counter("tarka_serve_tokens", "tokens embedded (usage)", registry=r)
        self.stage = Histogram("tarka_serve_stage_seconds", "seconds per stage of a request",
                               ["stage"], buckets=_STAGE, registry=r)
        self.ready = Gauge("tarka_serve_ready", "1 once every shape is compiled", registry=r)
        for phase in ("warmup", "serving"):
            self.compiles.labels(phase)

    def observe_pass(self, real_tokens: int, texts: int, slots: int) -> None:
        self.pass_tokens.observe(real_tokens)
        self.pass_texts.observe(texts)
        self.pass_padding.observe(1.0 - real_tokens / slots if slots else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["Metrics"]
