"""``tarka-jax serve`` as a client sees it: one live server (the real command line, a
subprocess on 127.0.0.1), the ``openai`` client, huggingface_hub's ``InferenceClient`` and plain
HTTP on every route, every error, 64 concurrent clients, the metrics.

Every embedding is compared with ``Embedder.encode`` on the same model and settings in this
process (<= 1e-5, float32). The model is the shipped demo-mini with task prompts added, at
``--max-input-tokens 128`` so start-up compiles few programs; the server shares a compilation
cache folder with this module's other server (test_serve_drain.py starts its own).
"""

from __future__ import annotations

import asyncio
import base64
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from tarka_jax import Embedder  # noqa: E402
from tarka_jax.convert.sources import builtin_folder  # noqa: E402
from tarka_jax.testing.serving import prompted_copy, start_server  # noqa: E402
from tarka_jax.testing.wordpiece import long_text  # noqa: E402

MAX_TOKENS = 128
TOL = 1e-5


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return prompted_copy(builtin_folder("demo-mini"), str(tmp_path_factory.mktemp("m") / "m"))


@pytest.fixture(scope="module")
def reference(model_folder):
    return Embedder.from_pretrained(model_folder, max_seq_length=MAX_TOKENS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for this module's servers: the second one starts from it."""
    return str(tmp_path_factory.mktemp("xla"))


@pytest.fixture(scope="module")
def server(model_folder, cache):
    with start_server(model_folder, "--max-input-tokens", str(MAX_TOKENS),
                      "--max-client-batch-size", "8", "--payload-limit", "20000",
                      "--served-model-name", "demo", env={"TARKA_JAX_COMPILATION_CACHE": cache},
                      timeout=420) as (url, _):
        yield url


def texts_of(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [long_text(int(rng.integers(1, 60)), seed=seed * 100 + i) for i in range(n)]


def post(url, path, body, **kw):
    return httpx.post(url + path, json=body, timeout=60, **kw)


def close(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a - b).max() <= TOL, np.abs(a - b).max()


# ---- clients ---------------------------------------------------------------------------------


def test_openai_client(server, reference):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    texts = texts_of(5, 1)
    got = client.embeddings.create(model="demo", input=texts)  # the client asks for base64
    assert [d.index for d in got.data] == list(range(5)) and got.model == "demo"
    close([d.embedding for d in got.data], reference.encode(texts, normalize_embeddings=True))
    ids = reference.tokenizer.encode(texts)
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(map(len, ids))
    one = client.embeddings.create(model="demo", input="hello", dimensions=32,
                                   encoding_format="float")
    close(one.data[0].embedding, reference.encode("hello", truncate_dim=32,
                                                  normalize_embeddings=True))
    query = client.embeddings.create(model="demo", input=texts[:2],
                                     extra_body={"prompt_name": "query"})
    close([d.embedding for d in query.data], reference.encode_query(texts[:2]))
    with pytest.raises(openai.UnprocessableEntityError, match="dimensions"):
        client.embeddings.create(model="demo", input="x", dimensions=100_000)


def test_huggingface_inference_client(server, reference, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    # The suite runs offline (HF_HUB_OFFLINE=1), which blocks every request of the hub's
    # HTTP session, loopback ones too; this one goes to our server on 127.0.0.1 only.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    client = InferenceClient(server)
    got = client.feature_extraction("a sentence to embed")
    close(got, reference.encode(["a sentence to embed"], normalize_embeddings=True))
    got = client.feature_extraction("doc", prompt_name="document", normalize=False,
                                    dimensions=16)
    close(got, reference.encode_document(["doc"], truncate_dim=16))


# ---- routes ----------------------------------------------------------------------------------


def test_embed_route_matches_encode(server, reference):
    texts = texts_of(6, 2)
    r = post(server, "/embed", {"inputs": texts})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    close(r.json(), reference.encode(texts, normalize_embeddings=True))
    single = post(server, "/embed", {"inputs": texts[0], "normalize": False, "dimensions": 8})
    close(single.json(), reference.encode(texts[:1], truncate_dim=8))
    root = post(server, "/", {"inputs": texts[:2], "prompt_name": "query"})
    close(root.json(), reference.encode(texts[:2], prompt_name="query",
                                        normalize_embeddings=True))


def test_truncation(server, reference):
    long = long_text(400, seed=7)
    right = post(server, "/embed", {"inputs": [long, "short"], "truncate": True})
    close(right.json(), reference.encode([long, "short"], normalize_embeddings=True))
    left = post(server, "/embed", {"inputs": long, "truncate": True,
                                   "truncation_direction": "left"})
    tokenizer = reference.tokenizer
    try:  # the same model truncating on the left
        tokenizer.truncation_side = "left"
        tokenizer.set_max_seq_length(MAX_TOKENS)
        close(left.json(), reference.encode([long], normalize_embeddings=True))
    finally:
        tokenizer.truncation_side = "right"
        tokenizer.set_max_seq_length(MAX_TOKENS)
    assert not np.allclose(left.json(), right.json()[0])


def test_chunking(server, reference):
    """Inputs over --max-input-tokens, embedded whole: "mean" (one embedding, any route) and
    "chunks" (/embed: each window with its spans), as Embedder.encode(chunking=...)."""
    long, short = long_text(500, seed=9), "short one"
    before = _metric(httpx.get(server + "/metrics").text, "tarka_serve_inputs_chunked_total")
    mean = post(server, "/embed", {"inputs": [long, short], "chunking": "mean",
                                   "prompt_name": "document"})
    close(mean.json(), reference.encode([long, short], chunking="mean", prompt_name="document",
                                        normalize_embeddings=True))
    after = _metric(httpx.get(server + "/metrics").text, "tarka_serve_inputs_chunked_total")
    assert after == before + 1
    openai = post(server, "/v1/embeddings", {"input": long, "chunking": "mean",
                                             "dimensions": 64})
    close(openai.json()["data"][0]["embedding"],
          reference.encode(long, chunking="mean", truncate_dim=64, normalize_embeddings=True))
    chunks = post(server, "/embed", {"inputs": [short, long], "chunking": "chunks",
                                     "normalize": False}).json()
    expect = reference.encode([short, long], chunking="chunks")
    assert [len(c) for c in chunks] == [1, len(expect.of_text(1))]
    close([w["embedding"] for c in chunks for w in c], expect.embeddings)
    assert [w["char_span"] for w in chunks[1]] == expect.char_spans[1:].tolist()
    assert [w["chunk"] for w in chunks[1]] == list(range(len(chunks[1])))
    refused = post(server, "/v1/embeddings", {"input": long, "chunking": "chunks"})
    assert refused.status_code == 422 and "chunking" in refused.json()["message"]


def test_embed_all_and_tokenize(server, reference):
    texts = ["hello world", texts_of(1, 3)[0]]
    r = post(server, "/embed_all", {"inputs": texts, "prompt_name": "query"})
    expect = reference.encode(texts, output_value="token_embeddings", prompt_name="query")
    assert len(r.json()) == 2
    for got, want in zip(r.json(), expect):
        close(got, want)
    tokens = post(server, "/tokenize", {"inputs": ["héllo world"], "prompt_name": "query"}).json()
    prompt = reference.prompts["query"]
    assert [t["id"] for t in tokens[0]] == reference.tokenizer.encode(["héllo world"],
                                                                      prompt=prompt)[0]
    raw = (prompt + "héllo world").encode()
    for t in tokens[0]:
        if t["special"]:
            assert t["start"] is None and t["stop"] is None
        else:
            assert raw[t["start"]:t["stop"]].decode() == t["text"]
    bare = post(server, "/tokenize", {"inputs": "hi", "add_special_tokens": False}).json()
    assert not any(t["special"] for t in bare[0])


def test_health_info_metrics(server):
    assert httpx.get(server + "/health").status_code == 200
    assert httpx.get(server + "/").status_code == 200
    info = httpx.get(server + "/info").json()
    assert info["served_model_name"] == "demo" and info["max_input_length"] == MAX_TOKENS
    assert info["max_client_batch_size"] == 8 and info["model_type"] == {
        "embedding": {"pooling": "mean"}}
    text = httpx.get(server + "/metrics").text
    assert 'tarka_serve_compile_events_total{phase="serving"} 0.0' in text
    assert "tarka_serve_ready 1.0" in text


# ---- errors ----------------------------------------------------------------------------------

ERRORS = [  # (path, body, status, error_type, words in the message)
    ("/embed", {"inputs": ["x"] * 9}, 422, "Validation", "batch size 9 > maximum allowed batch size 8"),
    ("/embed", {"inputs": long_text(300, seed=1)}, 422, "Validation", "must have less than"),
    ("/embed", {"inputs": []}, 400, "Empty", "cannot be empty"),
    ("/embed", {"inputs": ""}, 400, "Empty", "cannot be empty"),
    ("/embed", {"inputs": 5}, 422, "Validation", "must be a string or a list"),
    ("/embed", {"inputs": ["a", 7]}, 422, "Validation", "`inputs[1]` is an integer"),
    ("/embed", {"inputs": [[1, 2]]}, 422, "Validation", "token-id inputs"),
    ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "Validation", "normalize"),
    ("/embed", {"inputs": "a", "dimensions": "8"}, 422, "Validation", "dimensions"),
    ("/embed", {"inputs": "a", "dimensions": 0}, 422, "Validation", "should be positive"),
    ("/embed", {"inputs": "a", "dimensions": 385}, 422, "Validation", "smaller than"),
    ("/embed", {"inputs": "a", "prompt_name": "nope"}, 422, "Validation", "nope"),
    ("/embed", {"inputs": "a", "truncation_direction": "up"}, 422, "Validation", "truncation"),
    ("/embed", {"text": "a"}, 422, "Validation", "`inputs` is required"),
    ("/embed", [1, 2], 422, "Validation", "JSON object"),
    ("/embed_all", {"inputs": ["x"] * 9}, 422, "Validation", "batch size"),
    ("/tokenize", {"inputs": []}, 400, "Empty", "cannot be empty"),
]


@pytest.mark.parametrize("path,body,status,kind,words", ERRORS,
                         ids=[f"{p}-{i}" for i, (p, *_) in enumerate(ERRORS)])
def test_errors_in_tei_shape(server, path, body, status, kind, words):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == kind and words in r.json()["error"], r.json()


def test_raw_body_errors(server):
    bad = httpx.post(server + "/embed", content=b"{not json", timeout=30)
    assert bad.status_code == 422 and "not valid JSON" in bad.json()["error"]
    big = httpx.post(server + "/embed", content=b" " * 20_001, timeout=30)
    assert big.status_code == 413 and big.json()["error_type"] == "Validation"
    assert "--payload-limit 20000" in big.json()["error"]
    openai_shape = post(server, "/v1/embeddings", {"input": []})
    assert openai_shape.status_code == 400
    assert openai_shape.json() == {"message": "Input validation error: `inputs` cannot be empty",
                                   "code": 400, "type": "Empty"}
    assert httpx.get(server + "/health").status_code == 200  # none of it hurt the server


# ---- many clients at once --------------------------------------------------------------------


def test_64_concurrent_clients_in_order(server, reference):
    """64 clients at once, 1-6 texts of 1-60 words each, both embedding routes: every answer
    is its own texts' embeddings, in order, whatever rows they shared on the server."""
    rng = np.random.default_rng(5)
    jobs = [texts_of(int(rng.integers(1, 7)), 100 + i) for i in range(64)]
    for i in range(0, 64, 8):  # a long text among them, embedded whole in windows
        jobs[i][0] = long_text(300, seed=i)
    expect = reference.encode([t for texts in jobs for t in texts], normalize_embeddings=True,
                              chunking="mean")
    before = _metric(httpx.get(server + "/metrics").text, "tarka_serve_pass_texts_count")

    async def one(client, i, texts):
        if i % 2:
            r = await client.post("/embed", json={"inputs": texts})
            return r.status_code, r.json()
        r = await client.post("/v1/embeddings", json={"input": texts, "chunking": "mean",
                                                      "encoding_format": "base64"})
        assert r.status_code == 200, r.text
        rows = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r.json()["data"]]
        return r.status_code, rows

    async def all_clients():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(client, i, t) for i, t in enumerate(jobs)))

    results = asyncio.run(all_clients())
    start = 0
    for (status, rows), texts in zip(results, jobs):
        assert status == 200
        close(rows, expect[start:start + len(texts)])
        start += len(texts)
    text = httpx.get(server + "/metrics").text
    passes = _metric(text, "tarka_serve_pass_texts_count") - before
    assert 0 < passes < start  # texts shared passes
    assert _metric(text, 'tarka_serve_requests_total{route="/embed",status="200"}') >= 32


def test_metrics_move(server):
    get = lambda: httpx.get(server + "/metrics").text
    key = 'tarka_serve_requests_total{route="/embed",status="422"}'
    before = get()
    post(server, "/embed", {"inputs": long_text(300, seed=2), "truncate": True})
    post(server, "/embed", {"inputs": 1})
    after = get()
    assert _metric(after, key) == _metric(before, key) + 1
    assert (_metric(after, "tarka_serve_inputs_truncated_total")
            == _metric(before, "tarka_serve_inputs_truncated_total") + 1)
    assert (_metric(after, 'tarka_serve_request_duration_seconds_count{route="/embed",'
                           'status="200"}')
            == _metric(before, 'tarka_serve_request_duration_seconds_count{route="/embed",'
                               'status="200"}') + 1)
    for stage in ("tokenize", "queue", "plan", "device", "serialize"):
        assert _metric(after, f'tarka_serve_stage_seconds_count{{stage="{stage}"}}') > 0
    assert _metric(after, "tarka_serve_pass_padding_share_count") > 0


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_api_key(model_folder, cache):
    """A server with --api-key: 401 in TEI's shape without the key; /health stays public."""
    env = {"TARKA_JAX_API_KEY": "s3cret", "TARKA_JAX_COMPILATION_CACHE": cache}
    with start_server(model_folder, "--max-input-tokens", str(MAX_TOKENS), env=env) as (url, _):
        r = post(url, "/embed", {"inputs": "hi"})
        assert r.status_code == 401 and r.json()["error_type"] == "Unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = post(url, "/embed", {"inputs": "hi"}, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        ok = post(url, "/embed", {"inputs": "hi"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 200


def test_missing_extra_names_the_pip_line(monkeypatch):
    import builtins

    from tarka_jax.serve import cli

    real = builtins.__import__

    def no_uvicorn(name, *a, **kw):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'", name="uvicorn")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(cli.MissingExtraError, match=r"pip install 'tarka-jax\[serve\]'"):
        cli._imports()


def test_bad_flags_one_line(capsys):
    from tarka_jax.cli import main

    assert main(["serve", "--model", "builtin:demo-mini", "--max-batch-tokens", "0"]) == 2
    assert "--max-batch-tokens must be at least 1" in capsys.readouterr().err
    assert os.environ.get("TARKA_JAX_API_KEY") is None
