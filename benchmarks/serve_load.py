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

    python benchmarks/serve_load.py [--layers 4 | --model FOLDER] [--clients 1 8 64]
        [--duration 30] [--engines tarka st infinity]
        [--infinity-bin .venv-infinity/bin/infinity_emb] [--json OUT] [--markdown OUT]

The model is a random Tarka-shaped sentence-transformers folder built once with the torch
stack (cpu_encode.full_size_reference: hidden 768, vocab 64,400; ``--layers`` of them, 24 =
full size), or ``--model`` (e.g. the real EmbeddingGemma folder). Every engine truncates at
``--max-seq-length`` (tarka: ``--auto-truncate``; sentence-transformers and infinity always
do). Besides latency and throughput, each cell records the CPU seconds the server process and
the load generator used (``/proc``: on a 2-core machine the client's share is not free) and
the load average at its start.
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


def st_app(model_folder: str, max_seq_length: int):
    """The minimal FastAPI endpoint people write around sentence-transformers."""
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_folder, device="cpu")
    model.max_seq_length = max_seq_length
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


def st3_copy(folder: str, max_seq_length: int) -> str:
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
               "--log-level", "warning", "--auto-truncate",
               "--max-input-tokens", str(args.max_seq_length),
               "--max-batch-tokens", str(max(args.max_batch_tokens, args.max_seq_length))]
        path = "/v1/embeddings"
    elif engine == "st":
        cmd = [sys.executable, os.path.abspath(__file__), "st-server", model, str(port),
               str(args.max_seq_length)]
        path = "/v1/embeddings"
    else:
        cmd = [args.infinity_bin, "v2", "--model-id", st3_copy(model, args.max_seq_length),
               "--port", str(port), "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu",
               "--batch-size", "32", "--no-bettertransformer", "--url-prefix", "",
               "--served-model-name", "m", "--no-model-warmup"]
        env["DO_NOT_TRACK"] = "1"  # no telemetry (infinity asks for it)
        env["INFINITY_ANONYMOUS_USAGE_STATS"] = "0"
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
            r = httpx.post(url, json={"input": ["warm up"], "model": "m"}, timeout=600)
            if r.status_code == 200:
                return
            if 400 <= r.status_code < 500 and r.status_code != 429:
                raise RuntimeError(f"{engine} refused the warm-up request: {r.text[:300]}")
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{engine} not up after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (and waited-for children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
    ``duration`` has passed (requests already sent are waited for and counted). Every cell
    sends the same stream, from its start."""
    import httpx

    records, cursor = [], [0]
    stop_at = time.perf_counter() + duration

    async def worker(client):
        while time.perf_counter() < stop_at:
            i = cursor[0] % len(texts)
            cursor[0] += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json={"input": [texts[i]], "model": "m",
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


def scrape(metrics_url: str) -> dict[str, float]:
    """The server's counters that say where its time went: summed seconds and counts per
    stage (``tarka_serve_stage_seconds``), passes and their real tokens and padding."""
    import httpx

    out = {}
    for line in httpx.get(metrics_url, timeout=30).text.splitlines():
        if line.startswith("tarka_serve_stage_seconds_sum{"):
            out["s:" + line.split('stage="')[1].split('"')[0]] = float(line.split()[-1])
        elif line.startswith("tarka_serve_stage_seconds_count{"):
            out["n:" + line.split('stage="')[1].split('"')[0]] = float(line.split()[-1])
        elif line.startswith(("tarka_serve_pass_tokens_sum ", "tarka_serve_pass_tokens_count ",
                              "tarka_serve_pass_texts_sum ", "tarka_serve_pass_padding_share_sum ",
                              "tarka_serve_compile_events_total{phase=\"serving\"}")):
            out[line.split()[0]] = float(line.split()[-1])
    return out


def where_time_went(before: dict, after: dict, seconds: float) -> dict:
    """Per stage: seconds summed over the cell and per wall second (the engine thread's stages
    -- plan, dispatch, device, scatter -- add up to at most 1 per wall second; tokenize and
    serialize are summed over requests running side by side; queue is waiting)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    stages = {k: {"seconds": round(d.get("s:" + k, 0.0), 3),
                  "per_wall_s": round(d.get("s:" + k, 0.0) / seconds, 3),
                  "count": int(d.get("n:" + k, 0))} for k in STAGES}
    passes = d.get("tarka_serve_pass_tokens_count", 0.0)
    return {"stages": stages, "passes": int(passes),
            "tokens_per_pass": round(d.get("tarka_serve_pass_tokens_sum", 0.0) / passes, 1)
            if passes else None,
            "texts_per_pass": round(d.get("tarka_serve_pass_texts_sum", 0.0) / passes, 2)
            if passes else None,
            "padding_share": round(d.get("tarka_serve_pass_padding_share_sum", 0.0) / passes, 3)
            if passes else None,
            "compiles_while_serving": int(
                d.get('tarka_serve_compile_events_total{phase="serving"}', 0))}


# ---- main ------------------------------------------------------------------------------------


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default=os.path.join(os.getcwd(), "serve-load"),
                   help="the model, logs and tarka's compilation cache (built once)")
    p.add_argument("--model", default=None,
                   help="serve this model folder instead of building a random one")
    p.add_argument("--layers", type=int, default=4, help="of the random model; 24 = full size")
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="tarka's (its default)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--engines", nargs="+", default=["tarka", "st", "infinity"],
                   choices=("tarka", "st", "infinity"))
    p.add_argument("--infinity-bin", default="infinity_emb")
    p.add_argument("--mix", default="queries:0.5,passages:0.45,long:0.05",
                   help="name:weight of cpu_encode.py's mixes")
    p.add_argument("--start-timeout", type=float, default=1800.0)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None, help="also write the table here")
    args = p.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    mix = {k: float(v) for k, v in (item.split(":") for item in args.mix.split(","))}
    if not set(mix) <= set(MIXES):
        p.error(f"--mix: known mixes are {sorted(MIXES)}")
    if args.model:
        model = args.model
    else:
        model = full_size_reference(
            os.path.join(args.folder, f"model-{args.layers}l-{args.max_seq_length}"),
            args.max_seq_length, layers=args.layers)
    from tarka_jax.testing.reference import free_port
    from tarka_jax.text.tokenizer import TextTokenizer

    texts = request_stream(mix, 4096)
    tokenizer = TextTokenizer.from_folder(model, max_seq_length=args.max_seq_length)
    tokens = [len(x) for x in tokenizer.encode(texts)]
    procs, urls, failed = {}, {}, {}
    rows = []
    try:
        for engine in args.engines:  # one at a time: start-up is compile / load heavy
            t0 = time.perf_counter()
            procs[engine], urls[engine] = start(engine, model, free_port(), args)
            try:
                wait_up(procs[engine], urls[engine], engine, args.start_timeout)
            except (RuntimeError, TimeoutError) as e:  # the others still run; the log says why
                failed[engine] = f"{e}: {_tail(os.path.join(args.folder, engine + '.log'))}"
                print(f"{engine} failed to start: {failed[engine]}", file=sys.stderr, flush=True)
                procs.pop(engine).kill()
                continue
            print(f"{engine} up in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        for r in range(args.rounds):
            for clients in args.clients:
                for engine in procs:
                    before = scrape(_metrics(urls[engine])) if engine == "tarka" else None
                    load = os.getloadavg()[0]
                    cpu0, own0 = cpu_seconds(procs[engine].pid), _own_cpu()
                    row = {"engine": engine, "clients": clients, "round": r,
                           "load_avg_1m": round(load, 2),
                           **asyncio.run(closed_loop(urls[engine], texts, tokens, clients,
                                                     args.duration))}
                    row["server_cpu_s"] = round(cpu_seconds(procs[engine].pid) - cpu0, 1)
                    row["client_cpu_s"] = round(_own_cpu() - own0, 1)
                    if before is not None:
                        row["tarka"] = where_time_went(before, scrape(_metrics(urls[engine])),
                                                       row["seconds"])
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
    _summary(rows, tokens, args, mix, model, failed)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _metrics(url: str) -> str:
    return url.rsplit("/v1/", 1)[0] + "/metrics"


def _line(row: dict) -> str:
    text = (f"{row['engine']:<9} clients {row['clients']:>3}  {row['requests']:>5} req  "
            f"{row['requests_per_s']:7.2f} req/s  {row['tokens_per_s']:8.0f} tok/s  "
            f"p50 {row['p50_s']:6.2f} s  p95 {row['p95_s']:6.2f} s  p99 {row['p99_s']:6.2f} s  "
            f"errors {row['errors']}  cpu server {row['server_cpu_s']} s client "
            f"{row['client_cpu_s']} s  load {row['load_avg_1m']}")
    if "tarka" in row:
        t = row["tarka"]
        text += "\n    per wall second: " + ", ".join(
            f"{k} {v['per_wall_s']:.2f}" for k, v in t["stages"].items())
        text += (f"\n    {t['passes']} passes, {t['tokens_per_pass']} real tokens and "
                 f"{t['texts_per_pass']} texts per pass, padding {t['padding_share']}, "
                 f"{t['compiles_while_serving']} compiles while serving")
    return text


def per_cpu_second(row: dict) -> float:
    """Tokens embedded per CPU second of the server process: on a shared machine an engine
    with more runnable threads gets a larger share of the cores, so this is the fairer
    comparison of how much work each one does with what it gets."""
    return row["tokens_per_s"] * row["seconds"] / max(row["server_cpu_s"], 1e-9)


def markdown(rows: list[dict]) -> str:
    lines = ["| clients | engine | req/s | tokens/s | p50 s | p95 s | p99 s | errors | "
             "server CPU s | tokens per server CPU s | client CPU s | load (1 min) |",
             "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row in sorted(rows, key=lambda x: (x["clients"], x["round"])):
        lines.append(
            f"| {row['clients']} | {row['engine']} | {row['requests_per_s']:.2f} | "
            f"{row['tokens_per_s']:.0f} | {row['p50_s']:.2f} | {row['p95_s']:.2f} | "
            f"{row['p99_s']:.2f} | {row['errors']} | {row['server_cpu_s']} | "
            f"{per_cpu_second(row):.0f} | "
            f"{row['client_cpu_s']} | {row['load_avg_1m']} |")
    return "\n".join(lines) + "\n"


def _tail(path: str, n: int = 1500) -> str:
    with open(path, errors="replace") as f:
        return " ".join(f.read()[-n:].split())


def _summary(rows: list[dict], tokens: list[int], args, mix: dict, model: str,
             failed: dict) -> None:
    import jax

    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0], "jax": jax.__version__,
            "model": model if args.model else f"random, {args.layers} layers",
            "max_seq_length": args.max_seq_length, "mix": mix,
            "mean_tokens_per_request": round(float(np.mean(tokens)), 1),
            "duration_s": args.duration, "failed_to_start": failed}
    print(json.dumps(info))
    table = markdown(rows)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    if sys.argv[1:2] == ["st-server"]:
        import uvicorn

        uvicorn.run(st_app(sys.argv[2], int(sys.argv[4])), host="127.0.0.1",
                    port=int(sys.argv[3]), log_level="warning")
    else:
        main()
