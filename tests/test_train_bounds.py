"""Hostile sizes in a training config are refused (or bounded) before anything is allocated.

One child process, under a 3 GiB address-space rlimit and a timeout, runs the command line
on each config in turn, so a regression fails here instead of exhausting the machine's
memory or hanging CI: a bucket or ``max_seq_length`` of 10**9 tokens would pad every row to
it, a ``student_output_dim`` of 10**9 would allocate a [hidden, 10**9] Dense, and an
``eval_batch_size`` of 10**12 would pad the held-out batch to 10**12 rows (bounded: a pass
never takes more rows than the texts need). Torch-free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tarka_jax.testing.run_configs import distill_tables, finetune_tables, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "data", "tiny_train.txt")
PAIRS = os.path.join(ROOT, "examples", "data", "stdlib", "pairs.jsonl.gz")
LIMIT = 3 << 30  # bytes of address space
TIMEOUT = 400

DRIVER = textwrap.dedent("""\
    import contextlib, io, json, sys
    from tarka_jax.cli import main
    for line in sys.stdin:
        argv = json.loads(line)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv)
        print(json.dumps([rc, err.getvalue()]), flush=True)
    """)


def _distill(folder, path, name, data=None, **sections) -> str:
    return write_config(folder / f"{name}.toml", distill_tables(
        path, path, [TRAIN], data={"batch_size": 4, **(data or {})}, loss={"kl": 0.0},
        train={"steps": 1}, **sections))


def test_hostile_sizes_are_refused_or_bounded_before_allocation(jax_only_model, tmp_path):
    sts = tmp_path / "sts.jsonl"
    sts.write_text("".join(json.dumps({"sentence1": f"text {i}", "sentence2": f"other {i}",
                                       "score": float(i)}) + "\n" for i in range(6)))
    ft = write_config(tmp_path / "ft.toml", finetune_tables(
        jax_only_model, [PAIRS], data={"max_seq_length": 10**12}, train={"steps": 1}))
    m = jax_only_model
    cases = [  # (config, expected exit status, what stderr must say)
        (_distill(tmp_path, m, "buckets", {"buckets": [16, 10**9]}), 2,
         "data.buckets = [16, 1000000000] exceeds the 2048 positions"),
        (_distill(tmp_path, m, "length", {"max_seq_length": 10**12}), 2,
         "data.max_seq_length = 1000000000000 exceeds the 2048 positions of student"),
        (_distill(tmp_path, m, "teacher", {"teacher_max_seq_length": 10**6}), 2,
         "data.teacher_max_seq_length = 1000000 exceeds the 2048 positions of teacher"),
        (_distill(tmp_path, m, "dim", model={"student_output_dim": 10**9}), 2,
         "model.student_output_dim must be in 0..65536"),
        (ft, 2, "data.max_seq_length = 1000000000000 exceeds the 2048 positions of model"),
        (_distill(tmp_path, m, "eval", {"eval_sts": [str(sts)], "eval_batch_size": 10**12}),
         0, "step 1: "),
    ]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    commands = "".join(json.dumps(["finetune" if c.endswith("ft.toml") else "distill",
                                   "--config", c, "--workdir", str(tmp_path / f"w{i}")]) + "\n"
                       for i, (c, _, _) in enumerate(cases))
    # The shell sets the limit (no preexec_fn: this process runs JAX threads).
    limited = ["/bin/sh", "-c", f'ulimit -v {LIMIT >> 10} && exec "$0" "$@"', sys.executable,
               str(script)]
    proc = subprocess.run(limited, input=commands, capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp_path, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(results) == len(cases), proc.stdout[-2000:]
    for (config, status, needle), (rc, err) in zip(cases, results):
        assert rc == status, (config, err[-2000:])
        if status:
            assert needle in err and len(err.strip().splitlines()) == 1, (config, err)
    assert "step 1:" in proc.stdout  # the bounded held-out pass ran and logged
