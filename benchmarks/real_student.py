"""The Tarka recipe from a real teacher at CPU scale: inputs, a random-embedding control, scores.

The recipe's central claim: a student made by ``init-student`` (the teacher's layers and head,
a new vocabulary whose embedding rows are averaged from the teacher's rows of each token's
text) starts close to its teacher, and distillation closes the rest. This script prepares
the inputs the CLI steps take, builds the control (the same student with random embedding
rows), and scores any models against the teacher on held-out text (``real_sets.py``):

* agreement: mean cosine of each held-out text's embedding with the teacher's (queries with
  the query prompt, documents with the document prompt);
* retrieval: nDCG@10 and MRR@10 on the docstring and code sets.

    python benchmarks/real_student.py prepare RUNS                     # texts, two TOMLs
    python benchmarks/real_student.py random-embeddings STUDENT OUT    # the control
    python benchmarks/real_student.py score --teacher T --model NAME=DIR[@STEP] ... --json OUT

(the CLI steps in between are listed in BENCHMARKS.md). Everything it writes is derived
from text on the machine or from the weights: keep RUNS out of any repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_sets  # noqa: E402

_TOML = """# Distil the transplanted student from the cached real teacher (benchmarks/real_student.py).
[model]
teacher_cache = "teacher-cache"
student = "{student}"
dtype = "float32"
remat = false

[data]
train = ["train.txt"]{eval}
batch_size = {batch_size}
seed = 0
max_seq_length = 128
teacher_max_seq_length = 128
buckets = [32, 64, 128]

[data.prompt_mix]  # each text draws one (seeded), as cache-teacher --prompt-mix drew them
none = 1
query = 1
document = 1

[loss]
cosine = 1.0
kl = 1.0
mse = 0.0
temperature = 0.05

[optimizer]
learning_rate = {learning_rate}
schedule = "cosine"
warmup_steps = {warmup}
weight_decay = 0.01
clip_norm = 1.0
freeze = {freeze}

[mesh]
data = -1
fsdp = 1

[train]
steps = {steps}
log_every = 5
eval_every = {eval_every}

[checkpoint]
every = {every}
keep = 3

[logging]
tensorboard = false
progress = false
"""


#: a freeze pattern matching every parameter but the student's new embedding table
EVERYTHING_BUT_EMBEDDINGS = "^(?!encoder/embed_tokens)"


def prepare(runs: str, *, n_train: int, steps: int, batch_size: int, learning_rate: float,
            embed_learning_rate: float, freeze: str, every: int,
            with_eval: bool = False) -> None:
    """The tokenizer corpus, training and eval texts, and two runs' TOML: every layer
    trainable (``distill.toml``) and the embedding table only (``distill-embed.toml``).
    ``with_eval``: the loop also scores eval.txt at steps 0 and ``steps``, ~3 minutes each on
    the dev CPU."""
    os.makedirs(runs, exist_ok=True)
    real_sets.write_lines(real_sets.tokenizer_texts(), os.path.join(runs, "tokenizer_corpus.txt"))
    real_sets.write_lines(real_sets.train_texts(n_train), os.path.join(runs, "train.txt"))
    held = real_sets.docstring_pairs()[:100] + real_sets.code_pairs()[:100]
    real_sets.write_lines([p["document"] for p in held], os.path.join(runs, "eval.txt"))
    runs_toml = {  # file -> (learning rate, frozen-parameter patterns)
        "distill.toml": (learning_rate, [p for p in freeze.split(",") if p]),
        # the new embedding table only (docs/recipe.md: what the real teacher showed)
        "distill-embed.toml": (embed_learning_rate, [EVERYTHING_BUT_EMBEDDINGS]),
    }
    for name, (lr, patterns) in runs_toml.items():
        with open(os.path.join(runs, name), "w") as f:
            f.write(_TOML.format(student="student-init", batch_size=batch_size, steps=steps,
                                 learning_rate=lr, freeze=json.dumps(patterns),
                                 every=every, warmup=max(1, steps // 10),
                                 eval='\neval = ["eval.txt"]' if with_eval else "",
                                 eval_every=steps if with_eval else 0))
    print(f"wrote {runs}: tokenizer_corpus.txt, train.txt ({n_train}), eval.txt, "
          + ", ".join(runs_toml))


def random_embeddings(student: str, out: str, seed: int = 0) -> None:
    """``student`` with every embedding row redrawn: normal with the table's per-coordinate
    mean and standard deviation (init-student's fallback for a token it cannot map)."""
    from tarka_jax.convert import open_model
    from tarka_jax.convert.st_folder import save_sentence_transformers
    from tarka_jax.files.outputs import output_folder

    ckpt = open_model(student)
    table = ckpt.params["encoder"]["embed_tokens"]["embedding"]
    rng = np.random.default_rng(seed)
    fresh = (table.mean(0) + table.std(0) * rng.standard_normal(table.shape, np.float32))
    params = {**ckpt.params, "encoder": {**ckpt.params["encoder"],
                                         "embed_tokens": {"embedding": fresh.astype(np.float32)}}}
    with output_folder(out, sources=[student]) as tmp:
        save_sentence_transformers(tmp, ckpt.config, params, ckpt.meta, ckpt.folder)
    print(f"wrote {out}")


def _embedder(spec: str, max_seq_length: int):
    """``DIR`` or ``DIR@STEP`` (a distillation run's step) -> an Embedder."""
    from tarka_jax.recipe.evaluate import _student_embedder

    path, _, step = spec.partition("@")
    return _student_embedder(path, int(step) if step else None, "float32", max_seq_length)


def score(teacher: str, models: dict[str, str], max_seq_length: int, code_pairs: int,
          cache: str | None) -> dict:
    """Agreement with the teacher and retrieval of each model; the teacher's embeddings are
    ``real_quality.py``'s ``ours-fp32`` (shared through ``cache``)."""
    from real_quality import embed_sets

    from tarka_jax.evaluation.scores import retrieval_scores

    sets = {"docstrings": real_sets.docstring_pairs(), "code": real_sets.code_pairs(code_pairs)}
    results, reference = {}, None
    for name, spec in [("ours-fp32", teacher), *models.items()]:
        emb, seconds = embed_sets(name, lambda: _embedder(spec, max_seq_length), sets,
                                  max_seq_length, cache)
        row = {"seconds": seconds}
        flat = np.concatenate([x for s in sets for x in emb[s]])
        if reference is None:
            reference = flat
        else:
            cos = np.sum(flat * reference, axis=1) / (
                np.linalg.norm(flat, axis=1) * np.linalg.norm(reference, axis=1))
            row["cos_to_teacher_mean"], row["cos_to_teacher_min"] = float(cos.mean()), float(
                cos.min())
        for s in sets:
            m = retrieval_scores(*emb[s])
            row[s] = {"ndcg@10": m["ndcg@10"], "mrr@10": m["mrr@10"]}
        results["teacher" if name == "ours-fp32" else name] = row
        print(f"{name:22s} cos {row.get('cos_to_teacher_mean', 1.0):.4f} "
              f"(min {row.get('cos_to_teacher_min', 1.0):.4f})  " + "  ".join(
                  f"{s} nDCG@10 {row[s]['ndcg@10']:.4f} MRR@10 {row[s]['mrr@10']:.4f}"
                  for s in sets), flush=True)
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "max_seq_length": max_seq_length,
            "sets": {s: len(v) for s, v in sets.items()}, "models": results}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("runs")
    a.add_argument("--train-texts", type=int, default=2000)
    a.add_argument("--steps", type=int, default=100)
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--learning-rate", type=float, default=2e-5, help="distill.toml's")
    a.add_argument("--embed-learning-rate", type=float, default=1e-4,
                   help="distill-embed.toml's (the embedding table only)")
    a.add_argument("--freeze", default="", help="comma-separated regexps of frozen params")
    a.add_argument("--every", type=int, default=25, help="checkpoint every N steps")
    a.add_argument("--with-eval", action="store_true", help="the loop scores eval.txt too")
    b = sub.add_parser("random-embeddings")
    b.add_argument("student")
    b.add_argument("out")
    c = sub.add_parser("score")
    c.add_argument("--teacher", required=True)
    c.add_argument("--model", action="append", default=[], help="NAME=DIR or NAME=RUN@STEP")
    c.add_argument("--max-seq-length", type=int, default=256)
    c.add_argument("--code-pairs", type=int, default=300)
    c.add_argument("--cache", default=None, help="keep embeddings here (outside any repo)")
    c.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.stage == "prepare":
        prepare(args.runs, n_train=args.train_texts, steps=args.steps,
                batch_size=args.batch_size, learning_rate=args.learning_rate,
                embed_learning_rate=args.embed_learning_rate,
                freeze=args.freeze, every=args.every, with_eval=args.with_eval)
    elif args.stage == "random-embeddings":
        random_embeddings(args.student, args.out)
    else:
        models = dict(m.split("=", 1) for m in args.model)
        result = score(os.path.expanduser(args.teacher), models, args.max_seq_length,
                       args.code_pairs, args.cache)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
