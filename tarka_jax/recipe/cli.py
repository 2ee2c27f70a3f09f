"""The recipe's subcommands: ``tarka-jax train-tokenizer``, ``init-student``, ``cache-teacher``
and ``evaluate``.

Argument parsing only; the work is :func:`~tarka_jax.recipe.init_student.init_student`,
:func:`~tarka_jax.recipe.teacher_cache.build_cache` and
:func:`~tarka_jax.recipe.evaluate.evaluate`.
"""

from __future__ import annotations

import argparse
import itertools
import json

from tarka_jax.errors import UsageError
from tarka_jax.recipe.bpe_tokenizer import DEFAULT_VOCAB_SIZE
from tarka_jax.runtime.command import Command


def _add_init_student_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True,
                   help="teacher checkpoint of our architecture (folder or hub id)")
    p.add_argument("--tokenizer", required=True,
                   help="folder (or hub id) with the student's tokenizer.json "
                        "(+ tokenizer_config.json)")
    p.add_argument("--out", required=True, help="output folder (sentence-transformers layout)")
    p.add_argument("--reinit-layers", default="",
                   help="comma-separated encoder layer indices to re-initialise (e.g. 0,23)")
    p.add_argument("--output-dim", type=int, default=0,
                   help="replace the last Dense layer to embed to this many dims (0 = keep)")
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="the student's max_seq_length (default: the teacher's)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random row / layer")
    p.add_argument("--force", action="store_true",
                   help="replace an --out folder tarka-jax wrote (never one with other files)")


def _run_init_student(args) -> int:
    from tarka_jax.recipe.init_student import init_student

    layers = [int(x) for x in args.reinit_layers.split(",") if x.strip()]
    report = init_student(args.teacher, args.tokenizer, args.out, reinit=layers,
                          output_dim=args.output_dim, seed=args.seed,
                          max_seq_length=args.max_seq_length, force=args.force)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


INIT_STUDENT = Command(
    "init-student", "a student from a teacher + a new tokenizer (embedding transplant)",
    _add_init_student_arguments, _run_init_student,
    description="Copy a teacher's layers and Dense head, build an embedding table for a "
                "new tokenizer by averaging the teacher's embeddings of each token's text "
                "(random rows where a token maps to nothing; their count is printed), "
                "optionally re-initialise layers or change the output width, and write a "
                "sentence-transformers folder with the new tokenizer and the teacher's "
                "prompts.")


def _add_train_tokenizer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True,
                   help=".txt (a text per line), .jsonl or .parquet files or glob patterns")
    p.add_argument("--text-field", default="text", help=".jsonl / .parquet text field")
    p.add_argument("--out", required=True, help="output folder (tokenizer.json + config)")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--min-frequency", type=int, default=2,
                   help="a merge must occur at least this often")
    p.add_argument("--max-texts", type=int, default=None, help="train on the first N texts")
    p.add_argument("--max-length", type=int, default=2048,
                   help="model_max_length written to tokenizer_config.json")
    p.add_argument("--force", action="store_true",
                   help="replace an --out folder tarka-jax wrote (never one with other files)")


def _run_train_tokenizer(args) -> int:
    from tarka_jax.corpus.reader import expand_inputs, iter_records
    from tarka_jax.recipe.bpe_tokenizer import train_bpe

    paths = expand_inputs(args.input)
    if args.max_texts is not None and args.max_texts < 1:
        raise UsageError(f"--max-texts must be positive; got {args.max_texts}")
    texts = (record[1] for record in iter_records(paths, args.text_field))
    report = train_bpe(itertools.islice(texts, args.max_texts), args.out,
                       vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                       max_length=args.max_length, sources=paths, force=args.force)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


TRAIN_TOKENIZER = Command(
    "train-tokenizer", "train a byte-level BPE vocabulary for a student (tokenizers' trainer)",
    _add_train_tokenizer_arguments, _run_train_tokenizer,
    description="Train a byte-level BPE tokenizer (the kind Tarka's LFM2 vocabulary is) on "
                "text files with the tokenizers library's BpeTrainer, with Gemma's special "
                "tokens and <bos> ... <eos> framing; the output folder is what "
                "`tarka-jax init-student --tokenizer` takes.")


def _add_cache_teacher_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True,
                   help="teacher: a tarka-jax/our-architecture checkpoint, or any "
                        "sentence-transformers model (folder or hub id)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--train", nargs="+", required=True,
                   help="corpus files (.txt/.jsonl/.parquet), as the run's data.train lists them")
    p.add_argument("--eval", nargs="*", default=[], help="held-out files (the run's data.eval)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--prompt-mix", default="",
                   help="NAME=WEIGHT,... as the run's [data.prompt_mix] (none = no prompt); "
                        "empty = no prompts")
    p.add_argument("--seed", type=int, default=0, help="the run's data.seed (prompt draw)")
    p.add_argument("--backend", choices=("auto", "jax", "torch"), default="auto",
                   help="jax: our Embedder; torch: sentence-transformers (optional extra); "
                        "auto: jax when the teacher is our architecture")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing cache folder (only one tarka-jax wrote)")


def _run_cache_teacher(args) -> int:
    from tarka_jax.recipe.teacher_cache import build_cache

    m = build_cache(args.out, args.teacher, args.train, args.eval, text_field=args.text_field,
                    prompt_mix=parse_mix(args.prompt_mix), seed=args.seed, backend=args.backend,
                    dtype=args.dtype, max_seq_length=args.max_seq_length,
                    batch_size=args.batch_size, device=args.device, force=args.force)
    counts = ", ".join(f"{k} {v['count']}" for k, v in m["splits"].items())
    print(f"cached {counts} embeddings of dim {m['dim']} ({m['backend']} backend) in {args.out}")
    return 0


CACHE_TEACHER = Command(
    "cache-teacher", "compute teacher embeddings once for a corpus",
    _add_cache_teacher_arguments, _run_cache_teacher,
    description="Embed a corpus (and held-out texts) with a teacher once -- our "
                           "JAX model or any sentence-transformers model through PyTorch -- "
                           "and write a cache folder that `tarka-jax distill` reads as the "
                           "teacher ([model] teacher_cache = DIR).")


def _add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="student: a checkpoint folder / hub id, or a distill run folder")
    p.add_argument("--step", type=int, default=None, help="run folder: the saved step "
                   "(default: the latest)")
    p.add_argument("--teacher", default=None, help="teacher model (our architecture)")
    p.add_argument("--teacher-cache", default=None,
                   help="a cache-teacher folder (its eval split)")
    p.add_argument("--texts", nargs="*", default=[],
                   help="held-out files (.txt/.jsonl/.parquet) compared with the teacher; "
                        "default: the cache's eval files, or the --pairs texts")
    p.add_argument("--text-field", default="text")
    p.add_argument("--prompt-mix", default="", help="NAME=WEIGHT,... (with --teacher)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=None,
                   help="cosine on the first DIM coordinates (default: full, equal widths)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pairs", default=None,
                   help='held-out .jsonl of {"query", "document"[, "score"]}: nDCG@10, MRR, '
                        "recall@k, STS Spearman (needs no teacher)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_evaluate(args) -> int:
    from tarka_jax.recipe.evaluate import evaluate

    result = evaluate(args.model, args.texts, teacher=args.teacher,
                      teacher_cache=args.teacher_cache, step=args.step,
                      text_field=args.text_field, prompt_mix=parse_mix(args.prompt_mix),
                      seed=args.seed, dim=args.dim, dtype=args.dtype,
                      max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                      pairs=args.pairs)
    if args.json:
        print(json.dumps(result))
    else:
        print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in result.items()))
    return 0


EVALUATE = Command(
    "evaluate", "a model on held-out pairs (retrieval, STS) and/or against its teacher",
    _add_evaluate_arguments, _run_evaluate,
    description="Retrieval (nDCG@10, MRR, recall@k) and STS Spearman of a checkpoint, or "
                           "any saved step of a distill run folder, on held-out --pairs; "
                           "and/or its mean cosine to a teacher and nearest-neighbour "
                           "(top-1) agreement on held-out texts (the teacher is a model or "
                           "a cache-teacher folder).")


def parse_mix(text: str) -> dict[str, float]:
    """"none=2,query=1,document=1" -> {"none": 2.0, "query": 1.0, "document": 1.0}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        if not sep:
            raise UsageError(f"--prompt-mix entries are NAME=WEIGHT, got {part!r}")
        out[name.strip()] = float(weight)
    return out
