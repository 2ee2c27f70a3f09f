"""The server under load and failure: a full queue (429), a client that hangs up, a pass that
fails, SIGTERM while requests are in flight, and the start-up shape list.

The first three hold the engine with a gate on its forward passes (a server in this process,
uvicorn on a thread, real HTTP on 127.0.0.1), so what is queued when is certain rather than a
race. The drain test sends a real SIGTERM to a real ``tarka-jax serve`` process.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from tarka_jax import Embedder  # noqa: E402
from tarka_jax.inference import batching  # noqa: E402
from tarka_jax.serve.metrics import Metrics  # noqa: E402
from tarka_jax.serve.service import Service, Settings  # noqa: E402
from tarka_jax.testing.serving import in_process, start_server  # noqa: E402
from tarka_jax.testing.wordpiece import long_text  # noqa: E402

WAIT = 60  # seconds any one wait below may take before the test fails


@pytest.fixture(scope="module")
def model():
    return Embedder.from_pretrained("builtin:demo-mini", max_seq_length=64)


class Gate:
    """Holds every forward pass until opened; counts the inputs that reached the device."""

    def __init__(self, forward):
        self.open = threading.Event()
        self.entered = threading.Event()
        self.inputs = 0
        self.fail_next = False
        self._run = forward.run
        forward.run = self.run

    def run(self, plan, tokens):
        self.entered.set()
        assert self.open.wait(WAIT)
        self.inputs += len(plan.texts)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected device failure")
        return self._run(plan, tokens)


@pytest.fixture(scope="module")
def gated(model):
    service = Service(Settings(model_name="demo", max_concurrent_requests=2, batch_size=8,
                               warm_up_token_embeddings=False), model, Metrics())
    with in_process(service) as url:
        yield url, service, Gate(service.forward)


def sample(service, name: str, **labels) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def in_background(url, body):
    """POST /embed on a thread; returns (thread, result list)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(
        httpx.post(url + "/embed", json=body, timeout=WAIT)))
    thread.start()
    return thread, out


def test_full_server_answers_429_with_retry_after(gated, model):
    url, service, gate = gated
    gate.open.clear()
    gate.entered.clear()
    first = in_background(url, {"inputs": ["one"]})
    until(gate.entered.is_set, "the first request on the device")
    second = in_background(url, {"inputs": ["two"]})
    until(lambda: sample(service, "tarka_serve_requests_in_flight") == 2, "two requests admitted")
    r = httpx.post(url + "/embed", json={"inputs": "three"}, timeout=WAIT)
    assert r.status_code == 429 and r.json()["error_type"] == "Overloaded"
    assert int(r.headers["retry-after"]) >= 1
    gate.open.set()
    for thread, out in (first, second):
        thread.join(WAIT)
        assert out[0].status_code == 200
    expect = model.encode(["one", "two"], normalize_embeddings=True)
    np.testing.assert_allclose([first[1][0].json()[0], second[1][0].json()[0]], expect, atol=1e-5)


def test_disconnected_client_never_reaches_the_device(gated):
    url, service, gate = gated
    gate.open.clear()
    gate.entered.clear()
    holder = in_background(url, {"inputs": ["holds the engine"]})
    until(gate.entered.is_set, "the engine busy")
    dropped = sample(service, "tarka_serve_inputs_dropped_total")
    body = json.dumps({"inputs": ["gone one", "gone two", "gone three"]}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"POST /embed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        until(lambda: sample(service, "tarka_serve_queue_texts") == 3, "the texts queued")
    until(lambda: sample(service, "tarka_serve_requests_total", route="/embed", status="499") >= 1,
          "the server to see the client gone")
    before = gate.inputs
    gate.open.set()
    holder[0].join(WAIT)
    assert holder[1][0].status_code == 200
    until(lambda: sample(service, "tarka_serve_queue_texts") == 0, "the queue empty")
    assert sample(service, "tarka_serve_inputs_dropped_total") == dropped + 3
    assert gate.inputs == before + 1  # only the holder's text ran
    assert httpx.post(url + "/embed", json={"inputs": "after"}, timeout=WAIT).status_code == 200


def test_a_failing_pass_fails_its_requests_only(gated):
    url, service, gate = gated
    gate.open.set()
    gate.fail_next = True
    bad = httpx.post(url + "/embed", json={"inputs": ["x", "y"]}, timeout=WAIT)
    assert bad.status_code == 424 and bad.json()["error_type"] == "Backend"
    assert "injected device failure" in bad.json()["error"]
    good = httpx.post(url + "/v1/embeddings", json={"input": ["x", "y"]}, timeout=WAIT)
    assert good.status_code == 200 and len(good.json()["data"]) == 2


@pytest.mark.parametrize("pass_tokens,devices", [(512, 1), (None, 1), (None, 4), (512, 2)])
def test_startup_shapes_cover_every_plan(model, pass_tokens, devices, monkeypatch):
    """Every pass the planner makes for random loads has a shape start-up compiled
    (CPU's pass_tokens or accelerators' full batches; one or several devices)."""
    from tarka_jax.serve.device import Forward

    monkeypatch.setattr(model, "pass_tokens", pass_tokens)
    monkeypatch.setattr(model, "_devices", devices)
    forward = Forward(model)
    shapes = set(forward.shapes(32))
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 300))
        top = int(rng.choice([8, 64]))
        ids = [np.ones(int(k), np.int32) for k in rng.integers(1, top + 1, n)]
        for p in forward.plan(ids, 32):
            rows, width = p.arrays["input_ids"].shape
            assert (rows, width, p.segments) in shapes, (trial, rows, width, p.segments)
    assert len(shapes) <= batching.compile_bound(
        sorted({w for ws in model.pack_width_sets for w in ws}), 32, model._row_multiple, devices)


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight(tmp_path):
    """SIGTERM while clients send: every request the server took is answered 200, then the
    process exits; nothing is served after."""
    env = {"TARKA_JAX_COMPILATION_CACHE": str(tmp_path)}
    texts = [long_text(30, seed=i) for i in range(8)]
    with start_server("builtin:demo-mini", "--max-input-tokens", "64", "--max-batch-tokens",
                      "64", env=env) as (url, proc):
        records, stop = [], threading.Event()

        def client():
            with httpx.Client(base_url=url, timeout=WAIT) as c:
                while not stop.is_set():
                    start = time.monotonic()
                    try:
                        status = c.post("/embed", json={"inputs": texts}).status_code
                    except httpx.HTTPError as e:
                        status = type(e).__name__
                    records.append((start, time.monotonic(), status))
                    if not isinstance(status, int):
                        return

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        until(lambda: len(records) >= 8, "traffic")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)
        stop.set()
        for t in threads:
            t.join(WAIT)
        assert proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), proc.returncode
        statuses = {s for _, _, s in records}
        assert not {s for s in statuses if isinstance(s, int) and s != 200}, statuses
        spanning = [r for r in records if r[0] < signalled < r[1] and r[2] == 200]
        assert spanning, "no request was in flight at the signal"
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=5)
