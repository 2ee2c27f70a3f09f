"""CPU throughput of ``encode_document``: tarka-jax vs the engines a CPU user would pick.

Engines (``--engines``; each runs in its own subprocess, one at a time, so its peak RSS is
its own and two engines' peaks never add up):

  st-torch    sentence-transformers on PyTorch (the reference: max |diff| is against its
              float32 embeddings)
  tarka       tarka-jax's Embedder (packed, the default)
  onnx        sentence-transformers ``backend="onnx"`` (ONNX Runtime, float32)
  onnx-int8   the same after ``export_dynamic_quantized_onnx_model(model, "avx2")``
              (dynamic int8 quantisation of the linear layers)

The ONNX engines need ``optimum-onnx[onnxruntime]`` (``pip install -c ci/constraints-onnx.txt
".[onnx]"``), in this Python or in another one given by ``--onnx-python``. Their exports
are written under ``--export-dir`` (default ``~/.cache/tarka-jax-bench/onnx``), never into
the model folder or this repository, and reused by later runs.

Model: a random Tarka-shaped sentence-transformers checkpoint (full size: 24 layers,
hidden 768, vocab 64,400; ``--layers`` for a quick look), built once under ``--folder``;
or ``--model DIR``, a real folder (e.g. google/embeddinggemma-300m): then the texts are
real text too, from the Python standard library (queries: held-out docstring summaries;
the other mixes: slices of stdlib source at the mix's token counts). Mixes (token counts):

  queries     5-30        passages   100-300
  long        800-2048    loguniform 5-2048 (log-uniform)

``--rounds`` runs every engine that many times, interleaved (the engine order rotates each
round), each run ``--repeats`` timed calls after one untimed first call; the table gives the
median tokens/s over all timed calls, the CPU model and its vector extensions, the load
average, the peak RSS per engine and max |diff| per engine vs sentence-transformers
float32. ``--profile`` adds, in the tarka run, where the time goes for the mix's widest pass.

    python benchmarks/cpu_encode.py [--engines st-torch tarka onnx onnx-int8] [--rounds 3]
        [--mixes queries long] [--texts-per-mix 32] [--layers 6] [--model DIR]
        [--dtypes float32 bfloat16] [--batch-size 32] [--profile] [--json OUT]

XLA CPU flags must be set before jax starts: pass them in XLA_FLAGS (the subprocesses
inherit the environment).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MIXES = {"queries": (5, 30, "uniform"), "passages": (100, 300, "uniform"),
         "long": (800, 2048, "uniform"), "loguniform": (5, 2048, "log")}
ENGINES = ("st-torch", "tarka", "onnx", "onnx-int8")
ONNX_ENGINES = ("onnx", "onnx-int8")
INT8_FILE = "onnx/model_quint8_avx2.onnx"  # the "avx2" config: uint8 activations, int8 weights
# The vector extensions worth naming (from /proc/cpuinfo's flags).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
                "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_bf16", "amx_int8")


def full_size_reference(folder: str, max_seq_length: int, layers: int = 24):
    """Build (once) a random Tarka-shaped sentence-transformers folder with the torch stack."""
    from tarka_jax.nn.config import layer_types_pattern
    from tarka_jax.testing.reference import TinySpec, build_reference_model

    layer_types = layer_types_pattern(layers, 6)
    spec = TinySpec(vocab_size=64_400, hidden_size=768, intermediate_size=1152,
                    num_layers=layers, num_heads=3, num_kv_heads=1, head_dim=256,
                    query_pre_attn_scalar=256, sliding_window=512, layer_types=layer_types,
                    dense=(3072, 768), max_seq_length=max_seq_length)
    if not os.path.exists(os.path.join(folder, "modules.json")):
        build_reference_model(folder, spec)
    return folder


def cpu_info() -> dict:
    """The CPU's model name and the vector extensions it reports (Linux: /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": name, "cpus": os.cpu_count(),
            "vector_extensions": [f for f in VECTOR_FLAGS if f in flags],
            "avx512": any(f.startswith("avx512") for f in flags)}


def _token_counts(name: str, n: int, seed: int) -> np.ndarray:
    lo, hi, kind = MIXES[name]
    rng = np.random.default_rng(seed)
    if kind == "log":
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return rng.uniform(lo, hi, n)


def mix_texts(name: str, n: int, tokens_per_word: float, seed: int = 0) -> list[str]:
    """``n`` random-word texts whose token counts follow the mix (approximately: words are scaled)."""
    from tarka_jax.testing.reference import long_text

    words = np.maximum(1, np.round(_token_counts(name, n, seed) / tokens_per_word)).astype(int)
    return [long_text(int(w), seed=i) for i, w in enumerate(words)]


def _stdlib_source() -> str:
    """Held-out stdlib modules' source, concatenated (real text; nothing model-derived)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import real_sets

    parts = []
    for rel, path in real_sets._stdlib_files():
        if real_sets.is_heldout_module(rel):
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
    return "\n\n".join(parts)


def real_mix_texts(name: str, n: int, count, seed: int = 0) -> list[str]:
    """``n`` real texts for the mix: docstring summaries (queries), else stdlib source slices
    cut to the mix's token counts (``count(texts)`` gives token counts, prompt included)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import real_sets

    rng = np.random.default_rng(seed)
    if name == "queries":
        pool = [p["query"] for p in real_sets.docstring_pairs()]
        return [pool[i] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
    source = _stdlib_source()
    targets = _token_counts(name, n, seed)
    probe = source[:200_000]
    chars_per_token = len(probe) / max(count([probe])[0], 1)
    out = []
    for target in targets:
        size = max(8, int(target * chars_per_token))
        start = int(rng.integers(0, len(source) - size))
        text = source[start:start + size]
        for _ in range(4):  # scale the slice towards the target (code tokenises unevenly)
            got = count([text])[0]
            if abs(got - target) <= max(2, 0.05 * target):
                break
            size = max(8, int(size * target / max(got, 1)))
            text = source[start:start + size]
        out.append(text)
    return out


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(dtype: str = "float32") -> dict:
    """GEMM throughput this process reaches in ``dtype`` (the practical peak): XLA and torch.

    One 2048 x 768 @ 768 x 3072 product (the MLP's shape at a 2048-wide row), best of 5.
    """
    import jax
    import jax.numpy as jnp
    import torch

    flops = 2 * 2048 * 768 * 3072
    a = jnp.ones((2048, 768), dtype)
    b = jnp.ones((768, 3072), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    xla_s = timed(lambda: f(a, b).block_until_ready(), 5)
    # nn.Linear's call (what sentence-transformers runs): weight [out, in]. torch.matmul on
    # bfloat16 takes a far slower path on this CPU (1 GFLOP/s against linear's ~20).
    ta = torch.ones((2048, 768), dtype=getattr(torch, dtype))
    tw = torch.ones((3072, 768), dtype=getattr(torch, dtype))
    torch.nn.functional.linear(ta, tw)
    torch_s = timed(lambda: torch.nn.functional.linear(ta, tw), 5)
    return {"xla": flops / xla_s / 1e9, "torch": flops / torch_s / 1e9}


def profile(ours, shape, dtype: str) -> dict:
    """Time one forward at ``shape`` and the attention alone at that shape, every layer."""
    import jax
    import jax.numpy as jnp

    from tarka_jax.inference.batching import SlotCost
    from tarka_jax.inference.passes import _embed_jit
    from tarka_jax.kernels import attention

    rows, width, segments = shape
    cfg = ours.config
    seg = jnp.ones((rows, width), jnp.int32)
    batch = {"input_ids": jnp.ones((rows, width), jnp.int32), "segment_ids": seg,
             "positions": jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (rows, width))}
    fwd = lambda: _embed_jit(ours.params, batch, cfg, dtype=dtype,
                             attention=ours.attention, segments_per_row=segments)
    fwd().block_until_ready()
    forward_s = timed(lambda: fwd().block_until_ready(), 2)
    q = jnp.ones((rows, width, cfg.num_heads, cfg.head_dim), dtype)
    kv = jnp.ones((rows, width, cfg.num_kv_heads, cfg.head_dim), dtype)
    attn_s = 0.0
    windows = [cfg.window_for(i) for i in range(cfg.num_layers)]
    for window in set(windows):
        f = jax.jit(lambda q, kv, window=window: attention(q, kv, kv, seg, window=window,
                                                           implementation=ours.attention))
        f(q, kv).block_until_ready()
        attn_s += windows.count(window) * timed(lambda: f(q, kv).block_until_ready(), 2)
    per_token = SlotCost.of(cfg).dense  # FLOPs per token outside attention, every layer
    dense_gflops = per_token * rows * width / max(forward_s - attn_s, 1e-9) / 1e9
    return {"shape": list(shape), "forward_s": forward_s, "attention_s": attn_s,
            "attention_share": attn_s / forward_s, "dense_gflops": dense_gflops}


# --- the engines (each runs in a worker subprocess) -------------------------------------


def onnx_export_dir(folder: str, export_dir: str | None) -> str:
    """Where ``folder``'s ONNX exports live: outside the folder and the repository."""
    root = export_dir or os.path.join(os.path.expanduser("~"), ".cache", "tarka-jax-bench", "onnx")
    weights = os.path.join(folder, "model.safetensors")
    stamp = f"{os.path.abspath(folder)}:{os.path.getmtime(weights) if os.path.exists(weights) else 0}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return os.path.join(root, f"{os.path.basename(os.path.abspath(folder))}-{key}")


def _transformers4_view(folder: str, view: str) -> str:
    """``folder`` as transformers 4.x / sentence-transformers 5.x (what optimum-onnx needs) read
    it, in a new folder of links: a transformers-5 ``tokenizer_class`` and ``rope_parameters``,
    and sentence-transformers-6 module paths, written the older way."""
    rewritten = ("config.json", "tokenizer_config.json", "modules.json")
    os.makedirs(view)
    for name in os.listdir(folder):
        if name not in rewritten:
            os.symlink(os.path.abspath(os.path.join(folder, name)), os.path.join(view, name))
    for name in rewritten:
        if not os.path.exists(os.path.join(folder, name)):
            continue
        with open(os.path.join(folder, name)) as f:
            data = json.load(f)
        if name == "modules.json":  # e.g. sentence_transformers.base.modules.dense.Dense
            data = [{**m, "type": "sentence_transformers.models." + m["type"].rsplit(".", 1)[1]}
                    for m in data]
        elif data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
        rope = data.get("rope_parameters") or {} if name == "config.json" else {}
        if "rope_theta" not in data and "full_attention" in rope:
            data["rope_theta"] = rope["full_attention"]["rope_theta"]
            data["rope_local_base_freq"] = rope.get("sliding_attention", {}).get("rope_theta")
        with open(os.path.join(view, name), "w") as f:
            json.dump(data, f, indent=2)
    return view


def _load_onnx(job: dict):
    """The exported float32 (or int8) ONNX model: exported on first use, then reused."""
    from sentence_transformers import SentenceTransformer

    out = onnx_export_dir(job["folder"], job.get("export_dir"))
    if not os.path.exists(os.path.join(out, "onnx", "model.onnx")):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        source = tempfile.mkdtemp(prefix=".source-", dir=os.path.dirname(out))
        view = _transformers4_view(job["folder"], os.path.join(source, "model"))
        model = SentenceTransformer(view, device="cpu", backend="onnx")
        tmp = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(out))
        model.save_pretrained(tmp)  # a fresh folder of ours, renamed into place when complete
        os.rename(tmp, out)
        shutil.rmtree(source)  # the folder of links this call made
    if job["engine"] == "onnx-int8" and not os.path.exists(os.path.join(out, INT8_FILE)):
        from sentence_transformers import export_dynamic_quantized_onnx_model

        model = SentenceTransformer(out, device="cpu", backend="onnx")
        export_dynamic_quantized_onnx_model(model, "avx2", out)
    name = INT8_FILE if job["engine"] == "onnx-int8" else "onnx/model.onnx"
    return SentenceTransformer(out, device="cpu", backend="onnx",
                               model_kwargs={"file_name": name})


def worker(job_path: str) -> None:
    """Run one engine over every mix of the job; write times, embeddings and peak RSS."""
    with open(job_path) as f:
        job = json.load(f)
    engine, dtype, bs = job["engine"], job["dtype"], job["batch_size"]
    start = time.perf_counter()
    extra = {}
    if engine == "tarka":
        from tarka_jax.inference.embedder import Embedder

        model = Embedder.from_pretrained(job["folder"], dtype=dtype, attention=job["attention"],
                                         max_seq_length=job["max_seq_length"])
        encode = lambda texts: model.encode_document(texts, batch_size=bs, pack=job["pack"])
        if job["profile"]:
            extra["matmul_peak_gflops"] = matmul_peak_gflops(dtype)
    else:
        import torch

        if engine == "st-torch":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(job["folder"], device="cpu").to(getattr(torch, dtype))
        else:
            model = _load_onnx(job)
        model.max_seq_length = job["max_seq_length"]

        def encode(texts):
            with torch.inference_mode():
                return model.encode_document(texts, batch_size=bs)
    load_s = time.perf_counter() - start
    rows, embeddings = {}, {}
    for mix, texts in job["mixes"].items():
        shapes = set(getattr(model, "compiled_shapes", ()))
        t0 = time.perf_counter()
        embeddings[mix] = np.asarray(encode(texts), np.float32)
        first_s = time.perf_counter() - t0
        times = []
        for _ in range(job["repeats"]):
            t0 = time.perf_counter()
            encode(texts)
            times.append(time.perf_counter() - t0)
        row = {"first_s": first_s, "times_s": times}
        if engine == "tarka":
            new = model.compiled_shapes - shapes
            row["new_shapes"] = len(new)
            if job["profile"]:
                row["profile"] = profile(model, max(new or model.compiled_shapes,
                                                    key=lambda s: s[0] * s[1]), dtype)
        rows[mix] = row
    np.savez(job["out"] + ".npz", **embeddings)
    with open(job["out"] + ".json", "w") as f:
        json.dump({"load_s": load_s, "rows": rows, **extra, "peak_rss_gib":
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}, f)


def run_engine(job: dict, python: str, workdir: str) -> tuple[dict, dict]:
    """One engine run in a fresh subprocess; (its result, its embeddings per mix)."""
    name = f"{job['engine']}-{job['dtype']}-{job['round']}"
    path = os.path.join(workdir, name + ".job.json")
    job = {**job, "out": os.path.join(workdir, name)}
    with open(path, "w") as f:
        json.dump(job, f)
    done = subprocess.run([python, os.path.abspath(__file__), "--worker", path])
    if done.returncode != 0:
        raise SystemExit(f"{job['engine']} ({python}) exited {done.returncode}")
    with open(job["out"] + ".json") as f:
        result = json.load(f)
    with np.load(job["out"] + ".npz") as z:
        return result, {k: z[k] for k in z.files}


def _python_has(python: str, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def _versions(python: str, modules: tuple[str, ...]) -> dict:
    code = ("import importlib.metadata as m, json; out = {}\n"
            f"for n in {list(modules)!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--engines", nargs="+", default=["st-torch", "tarka"], choices=ENGINES)
    p.add_argument("--rounds", type=int, default=1, help="runs per engine, interleaved")
    p.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    p.add_argument("--texts-per-mix", type=int, default=64)
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=("float32", "bfloat16"),
                   help="st-torch and tarka (the ONNX engines run float32 / int8 only)")
    p.add_argument("--layers", type=int, default=24, help="24 = full size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2, help="timed calls per run")
    p.add_argument("--attention", default=None, help="implementation (None: the default)")
    p.add_argument("--unpacked", action="store_true", help="pack=False (one text per row)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--folder", default=None, help="where the random checkpoint is built")
    p.add_argument("--model", default=None, help="a real model folder (then real text too)")
    p.add_argument("--onnx-python", default=None,
                   help="the Python that runs the ONNX engines (default: this one)")
    p.add_argument("--export-dir", default=None, help="where ONNX exports are cached")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)

    from tarka_jax import __version__
    from tarka_jax.text.tokenizer import TextTokenizer

    folder = args.model or full_size_reference(
        args.folder or f"/tmp/tarka_jax_bench_{args.layers}l", args.max_seq_length, args.layers)
    onnx_python = args.onnx_python or sys.executable
    if any(e in ONNX_ENGINES for e in args.engines) and not _python_has(onnx_python, "onnxruntime"):
        raise SystemExit(f"the ONNX engines need onnxruntime and optimum-onnx in {onnx_python}: "
                         "pip install -c ci/constraints-onnx.txt '.[onnx]' (or --onnx-python)")
    tokenizer = TextTokenizer.from_folder(folder, args.max_seq_length)
    with open(os.path.join(folder, "config_sentence_transformers.json")) as f:
        prompt = (json.load(f).get("prompts") or {}).get("document")
    count = lambda texts: [len(x) for x in tokenizer.encode(texts, prompt=prompt)]
    untruncated = TextTokenizer.from_folder(folder, args.max_seq_length)
    untruncated.set_max_seq_length(None)  # sizes texts; `count` counts what the models see
    if args.model:
        texts = {m: real_mix_texts(m, args.texts_per_mix, lambda t: [
            len(x) for x in untruncated.encode(t, prompt=prompt)]) for m in args.mixes}
    else:
        from tarka_jax.testing.reference import long_text

        per_word = len(untruncated.encode([long_text(1000)])[0]) / 1000
        texts = {m: mix_texts(m, args.texts_per_mix, per_word) for m in args.mixes}
    tokens = {m: int(sum(count(t))) for m, t in texts.items()}
    lengths = {m: [int(min(count(t))), int(max(count(t)))] for m, t in texts.items()}

    cpu = cpu_info()
    modules = ("jax", "jaxlib", "torch", "sentence-transformers", "transformers")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": cpu, "python": sys.version.split()[0],
        "versions": {**_versions(sys.executable, modules), "tarka_jax": __version__},
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "model": folder,
        "real": bool(args.model), "layers": None if args.model else args.layers,
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "texts_per_mix": args.texts_per_mix, "rounds": args.rounds, "repeats": args.repeats,
        "pack": not args.unpacked, "tokens": tokens, "token_range": lengths, "engines": {},
        "load_average": [],
    }
    if any(e in ONNX_ENGINES for e in args.engines):
        results["versions_onnx"] = _versions(
            onnx_python, ("onnxruntime", "optimum", "optimum-onnx", "onnx", "torch",
                          "sentence-transformers", "transformers"))
    runs = [(e, d) for d in args.dtypes for e in args.engines
            if not (e in ONNX_ENGINES and d != "float32")]
    if ("st-torch", "float32") not in runs:
        runs.insert(0, ("st-torch", "float32"))  # the reference for max |diff|
    base = dict(folder=folder, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                repeats=args.repeats, attention=args.attention, pack=not args.unpacked,
                profile=args.profile, export_dir=args.export_dir, mixes=texts)
    collected = {run: [] for run in runs}
    embeddings = {}
    with tempfile.TemporaryDirectory(prefix="cpu_encode-") as workdir:
        for r in range(args.rounds):
            order = runs[r % len(runs):] + runs[:r % len(runs)]  # rotate: no engine always first
            for engine, dtype in order:
                python = onnx_python if engine in ONNX_ENGINES else sys.executable
                results["load_average"].append(os.getloadavg())
                result, emb = run_engine({**base, "engine": engine, "dtype": dtype, "round": r},
                                         python, workdir)
                collected[engine, dtype].append(result)
                embeddings.setdefault((engine, dtype), emb)
                print(f"  round {r + 1}/{args.rounds} {engine} {dtype}: peak RSS "
                      f"{result['peak_rss_gib']:.2f} GiB, load {os.getloadavg()[0]:.1f}",
                      flush=True)
    reference = embeddings["st-torch", "float32"]
    rows = []
    for (engine, dtype), results_ in collected.items():
        summary = {"engine": engine, "dtype": dtype,
                   "peak_rss_gib": max(x["peak_rss_gib"] for x in results_),
                   "load_s": statistics.median(x["load_s"] for x in results_), "mixes": {}}
        if "matmul_peak_gflops" in results_[0]:
            summary["matmul_peak_gflops"] = results_[0]["matmul_peak_gflops"]
        for mix in args.mixes:
            times = [t for x in results_ for t in x["rows"][mix]["times_s"]]
            row = {"tokens_per_s": tokens[mix] / statistics.median(times),
                   "tokens_per_s_range": [tokens[mix] / max(times), tokens[mix] / min(times)],
                   "first_s": statistics.median(x["rows"][mix]["first_s"] for x in results_),
                   "max_abs_diff_vs_st_fp32": float(np.abs(
                       embeddings[engine, dtype][mix] - reference[mix]).max())}
            for key in ("new_shapes", "profile"):
                if key in results_[0]["rows"][mix]:
                    row[key] = results_[0]["rows"][mix][key]
            summary["mixes"][mix] = row
        rows.append(summary)
    results["engines"] = rows
    print_tables(results, args.mixes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def print_tables(results: dict, mixes) -> None:
    cpu, load = results["cpu"], results["load_average"]
    print(f"\nCPU: {cpu['model']}, {cpu['cpus']} cpus; vector extensions: "
          f"{' '.join(cpu['vector_extensions']) or 'none found'}"
          f"{'' if cpu['avx512'] else ' (no AVX-512)'}")
    print(f"model: {results['model']} ({'real' if results['real'] else 'random'}), "
          f"max_seq_length {results['max_seq_length']}, batch {results['batch_size']}, "
          f"{results['rounds']} round(s) x {results['repeats']} timed calls; load average "
          f"(1 min) at each engine start: {min(x[0] for x in load):.1f}-{max(x[0] for x in load):.1f}")
    by_key = {(r["engine"], r["dtype"]): r for r in results["engines"]}
    ours = {d: by_key.get(("tarka", d)) for d in ("float32", "bfloat16")}
    print(f"{'mix':11s}{'tokens':>7s} {'range':>10s} {'engine':10s}{'dtype':9s}{'tok/s':>7s}"
          f"{'min-max':>12s}{'ours/x':>7s}{'first s':>8s}{'max|diff|':>10s}")
    for mix in mixes:
        lo, hi = results["token_range"][mix]
        for r in results["engines"]:
            m = r["mixes"][mix]
            mine = ours.get(r["dtype"]) or ours["float32"]
            ratio = (mine["mixes"][mix]["tokens_per_s"] / m["tokens_per_s"]) if mine else float("nan")
            span = f"{m['tokens_per_s_range'][0]:.0f}-{m['tokens_per_s_range'][1]:.0f}"
            dtype = "int8" if r["engine"] == "onnx-int8" else r["dtype"]
            print(f"{mix:11s}{results['tokens'][mix]:7d} {f'{lo}-{hi}':>10s} {r['engine']:10s}"
                  f"{dtype:9s}{m['tokens_per_s']:7.0f}{span:>12s}{ratio:7.2f}"
                  f"{m['first_s']:8.1f}{m['max_abs_diff_vs_st_fp32']:10.1e}")
            if "profile" in m:
                prof, peak = m["profile"], r.get("matmul_peak_gflops", {})
                print(f"  profile {prof['shape']}: forward {prof['forward_s']:.2f} s, attention "
                      f"{prof['attention_share']:.0%}, dense layers {prof['dense_gflops']:.0f} "
                      f"GFLOP/s; a lone GEMM: XLA {peak.get('xla', 0):.0f}, torch "
                      f"{peak.get('torch', 0):.0f} GFLOP/s")
    print("peak RSS per engine (its own process): " + ", ".join(
        f"{r['engine']} {r['dtype']} {r['peak_rss_gib']:.2f} GiB" for r in results["engines"]))


if __name__ == "__main__":
    main()
