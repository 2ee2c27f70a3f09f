"""Closed-loop HTTP load: ``tarka-jax serve`` vs sentence-transformers behind FastAPI vs infinity.

N clients on 127.0.0.1, each sending its next request as soon as the last is answered, for a
fixed duration per (engine, concurrency); every engine serves the same model over an
OpenAI-style embeddings route (``input``: one text per request, ``encoding_format`` float) and
gets the same request stream: a seeded mix of lengths at max_seq_length 2048 (``--mix``;
token counts as cpu_encode.py's mixes: queries 5-30, passages 100-300, long 800-2048).
Printed per concurrency: requests/s, tokens/s (the model's own token counts, after
truncation at 2048), p50 / p95 / p99 latency, errors; for tarka-jax also where its time went
(the server's stage histograms, ``/metrics``: tokenise, queue, plan, dispatch, device,
scatter, serialise).

Engines (all started here, one process each, kept up for the whole run and driven in turn:
``--rounds`` x concurrency x engine, interleaved so that a busy machine slows all alike):
  tarka     ``python -m tarka_jax serve`` (warm-up compiles first; XLA cache in --folder)
  st        sentence-transformers ``encode`` in a plain FastAPI endpoint (:func:`st_app`)
  infinity  ``infinity_emb v2`` from its own venv (``--infinity-bin``; infinity-emb 0.0.78
            needs sentence-transformers < 4 and numpy < 2, so it cannot share ours)

    python benchmarks/serve_load.py [--layers 4] [--clients 1 8 64] [--duration 60]
        [--engines tarka st infinity] [--infinity-bin /path/venv/bin/infinity_emb] [--json OUT]

The model is a random Tarka-shaped sentence-transformers folder built once with the torch
stack (cpu_encode.full_size_reference: hidden 768, vocab 64,400; ``--layers`` of them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from pydantic import BaseModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_encode import MIXES, full_size_reference, mix_texts  # noqa: E402

STAGES = ("tokenize", "queue", "plan", "dispatch", "device", "scatter", "serialize")


# ---- the sentence-transformers endpoint (run in its own process) -----------------------------


class Body(BaseModel):
    input: str | list[str]
    model: str | None = None
    encoding_format: str = "float"


def st_app(model_folder: str):
    """The minimal FastAPI endpoint people write around sentence-transformers."""
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_folder, device="cpu")
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(body: Body):  # a plain def: FastAPI runs it on its thread pool
        texts = [body.input] if isinstance(body.input, str) else body.input
        emb = model.encode(texts, batch_size=32, normalize_embeddings=True)
        return {"object": "list", "model": "st", "data": [
            {"object": "embedding", "index": i, "embedding": row.tolist()}
            for i, row in enumerate(emb)]}

    @app.get("/health")
    def health():
        return {}

    return app


# ---- engines ---------------------------------------------------------------------------------


def st3_copy(folder: str, max_seq_length: int = 2048) -> str:
    """The same weights in the folder layout sentence-transformers 3.x reads (infinity's):
    module types ``sentence_transformers.models.*``, the 3.x module configs, and a tokenizer
    class transformers 4.x knows (the same tokenizer.json)."""
    import shutil

    out = folder.rstrip("/") + "-st3"
    if os.path.exists(out):
        return out
    shutil.copytree(folder, out)
    edit = lambda name, fn: _rewrite(os.path.join(out, name), fn)
    edit("modules.json", lambda m: [{**x, "type": "sentence_transformers.models."
                                     + x["type"].rsplit(".", 1)[-1]} for x in m])
    edit("sentence_bert_config.json", lambda c: {"max_seq_length": max_seq_length,
                                                 "do_lower_case": False})
    edit("1_Pooling/config.json", lambda c: {"word_embedding_dimension": c["embedding_dimension"],
                                             "pooling_mode_mean_tokens": True,
                                             "include_prompt": c.get("include_prompt", True)})
    edit("tokenizer_config.json", lambda c: {**c, "tokenizer_class": "PreTrainedTokenizerFast"})
    for dense in ("2_Dense", "3_Dense"):
        edit(f"{dense}/config.json", lambda c: {k: v for k, v in c.items()
                                               if not k.startswith("module_")})
    return out


def _rewrite(path: str, fn) -> None:
    with open(path) as f:
        data = fn(json.load(f))
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def start(engine: str, model: str, port: int, args) -> tuple[subprocess.Popen, str]:
    """(process, embeddings URL) of one engine on 127.0.0.1:port."""
    log = open(os.path.join(args.folder, f"{engine}.log"), "w")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if engine == "tarka":
        env["TARKA_JAX_COMPILATION_CACHE"] = os.path.join(args.folder, "xla-cache")
        cmd = [sys.executable, "-m", "tarka_jax", "serve", "--model", model, "--port", str(port),
               "--log-level", "warning", "--max-client-batch-size", "64"]
        path = "/v1/embeddings"
    elif engine == "st":
        cmd = [sys.executable, os.path.abspath(__file__), "st-server", model, str(port)]
        path = "/v1/embeddings"
    else:
        cmd = [args.infinity_bin, "v2", "--model-id", st3_copy(model), "--port", str(port), "--engine",
               "torch", "--device", "cpu", "--batch-size", "32", "--no-bettertransformer",
               "--url-prefix", ""]
        path = "/embeddings"
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}{path}"


def wait_up(proc, url: str, engine: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{engine} exited ({proc.returncode}); see its log")
        try:
            r = httpx.post(url, json={"input": "warm up", "model": "m"}, timeout=600)
            if r.status_code == 200:
                return
            if 400 <= r.status_code < 500 and r.status_code != 429:
                raise RuntimeError(f"{engine} refused the warm-up request: {r.text[:300]}")
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{engine} not up after {timeout:.0f} s")


# ---- the load --------------------------------------------------------------------------------


def request_stream(mix: dict[str, float], n: int, seed: int = 0) -> list[str]:
    """``n`` texts, each drawn from a mix with the given weights (seeded)."""
    rng = np.random.default_rng(seed)
    names = list(mix)
    picks = rng.choice(len(names), n, p=np.array([mix[k] for k in names]) / sum(mix.values()))
    pools = {k: mix_texts(k, n, tokens_per_word=1.3, seed=seed + i) for i, k in enumerate(names)}
    return [pools[names[p]][i] for i, p in enumerate(picks)]


async def closed_loop(url: str, texts: list[str], tokens: list[int], clients: int,
                      duration: float) -> dict:
    """``clients`` workers, each posting its next text when the last is answered, until
    ``duration`` has passed (requests already sent are waited for and counted)."""
    import httpx

    records, cursor = [], [0]
    stop_at = time.perf_counter() + duration

    async def worker(client):
        while time.perf_counter() < stop_at:
            i = cursor[0] % len(texts)
            cursor[0] += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json={"input": texts[i], "model": "m",
                                                 "encoding_format": "float"})
                ok = r.status_code == 200 and len(r.json()["data"]) == 1
            except httpx.HTTPError:
                ok = False
            records.append((t0, time.perf_counter(), tokens[i], ok))

    start = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    elapsed = max(r[1] for r in records) - start
    good = [r for r in records if r[3]]
    latency = np.array([r[1] - r[0] for r in good]) if good else np.array([np.nan])
    return {"requests": len(good), "errors": len(records) - len(good),
            "requests_per_s": len(good) / elapsed,
            "tokens_per_s": sum(r[2] for r in good) / elapsed,
            "p50_s": float(np.percentile(latency, 50)), "p95_s": float(np.percentile(latency, 95)),
            "p99_s": float(np.percentile(latency, 99)), "seconds": elapsed}


def stage_seconds(metrics_url: str) -> dict[str, float]:
    """The server's summed seconds per stage (``tarka_serve_stage_seconds_sum``)."""
    import httpx

    out = dict.fromkeys(STAGES, 0.0)
    for line in httpx.get(metrics_url, timeout=30).text.splitlines():
        if line.startswith("tarka_serve_stage_seconds_sum{"):
            stage = line.split('stage="')[1].split('"')[0]
            out[stage] = float(line.split()[-1])
    return out


# ---- main ------------------------------------------------------------------------------------


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default=os.path.join(os.getcwd(), "serve-load"),
                   help="the model, logs and tarka's compilation cache (built once)")
    p.add_argument("--layers", type=int, default=4, help="24 = full size")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--duration", type=float, default=60.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--engines", nargs="+", default=["tarka", "st", "infinity"],
                   choices=("tarka", "st", "infinity"))
    p.add_argument("--infinity-bin", default="infinity_emb")
    p.add_argument("--mix", default="queries:0.5,passages:0.45,long:0.05",
                   help="name:weight of cpu_encode.py's mixes")
    p.add_argument("--start-timeout", type=float, default=1800.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    mix = {k: float(v) for k, v in (item.split(":") for item in args.mix.split(","))}
    assert set(mix) <= set(MIXES), mix
    model = full_size_reference(os.path.join(args.folder, f"model-{args.layers}l"), 2048,
                                layers=args.layers)
    from tarka_jax.testing.reference import free_port
    from tarka_jax.text.tokenizer import TextTokenizer

    texts = request_stream(mix, 4096)
    tokens = [len(x) for x in TextTokenizer.from_folder(model).encode(texts)]
    procs, urls = {}, {}
    try:
        for engine in args.engines:  # one at a time: start-up is compile / load heavy
            procs[engine], urls[engine] = start(engine, model, free_port(), args)
            wait_up(procs[engine], urls[engine], engine, args.start_timeout)
            print(f"{engine} up", file=sys.stderr, flush=True)
        rows = []
        for r in range(args.rounds):
            for clients in args.clients:
                for engine in args.engines:
                    before = stage_seconds(_metrics(urls[engine])) if engine == "tarka" else None
                    row = {"engine": engine, "clients": clients, "round": r,
                           **asyncio.run(closed_loop(urls[engine], texts, tokens, clients,
                                                     args.duration))}
                    if before is not None:
                        after = stage_seconds(_metrics(urls[engine]))
                        row["stages_s"] = {k: after[k] - before[k] for k in STAGES}
                    rows.append(row)
                    print(_line(row), flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    _summary(rows, tokens, args, mix)


def _metrics(url: str) -> str:
    return url.rsplit("/v1/", 1)[0] + "/metrics"


def _line(row: dict) -> str:
    text = (f"{row['engine']:<9} clients {row['clients']:>3}  {row['requests']:>5} req  "
            f"{row['requests_per_s']:7.2f} req/s  {row['tokens_per_s']:8.0f} tok/s  "
            f"p50 {row['p50_s']:6.2f} s  p95 {row['p95_s']:6.2f} s  p99 {row['p99_s']:6.2f} s  "
            f"errors {row['errors']}")
    if "stages_s" in row:
        total = sum(v for k, v in row["stages_s"].items() if k != "queue") or 1.0
        text += "\n    stages: " + ", ".join(
            f"{k} {v:.1f} s ({v / total:.0%})" if k != "queue" else f"queue {v:.1f} s (waiting)"
            for k, v in row["stages_s"].items())
    return text


def _summary(rows: list[dict], tokens: list[int], args, mix: dict) -> None:
    import jax

    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, load average "
                       f"{os.getloadavg()[0]:.1f}", "python": sys.version.split()[0],
            "jax": jax.__version__, "layers": args.layers, "mix": mix,
            "mean_tokens_per_request": float(np.mean(tokens)), "duration_s": args.duration}
    print(json.dumps(info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["st-server"]:
        import uvicorn

        uvicorn.run(st_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[3]),
                    log_level="warning")
    else:
        main()
