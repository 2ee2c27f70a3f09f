"""tarka-jax embed / search, in-process through main([...]) and once as a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tarka_jax import Embedder
from tarka_jax import cli as cli_module
from tarka_jax.cli import Command, main, register

DOCS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
]
QUERY = "Which planet is known as the Red Planet?"


@pytest.fixture(scope="module")
def model(jax_only_model):
    return Embedder.from_pretrained(jax_only_model)


def test_cli_embed_json_lines_match_encode(jax_only_model, model, capsys):
    assert main(["embed", "--model", jax_only_model, "--query", QUERY, "mars"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["text"] for r in records] == [QUERY, "mars"]
    got = np.array([r["embedding"] for r in records], np.float32)
    np.testing.assert_array_equal(got, model.encode_query([QUERY, "mars"]))


def test_cli_embed_npy_and_stdin(jax_only_model, model, tmp_path, monkeypatch):
    out = tmp_path / "emb.npy"
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(DOCS) + "\n"))
    assert main(["embed", "-m", jax_only_model, "--document", "--truncate-dim", "8",
                 "--normalize", "-o", str(out), "-"]) == 0
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (3, 8)
    np.testing.assert_array_equal(
        got, model.encode_document(DOCS, truncate_dim=8, normalize_embeddings=True))
    jsonl = tmp_path / "emb.jsonl"
    assert main(["embed", "-m", jax_only_model, "--prompt-name", "STS", "-o", str(jsonl),
                 "x"]) == 0
    record = json.loads(jsonl.read_text())
    np.testing.assert_array_equal(np.float32(record["embedding"]),
                                  model.encode("x", prompt_name="STS"))


def test_cli_search_ranks_documents(jax_only_model, model, tmp_path, capsys):
    txt = tmp_path / "docs.txt"
    txt.write_text("\n".join(DOCS) + "\n\n")
    assert main(["search", "-m", jax_only_model, "--docs", str(txt), "-q", QUERY,
                 "-q", "gas giant", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"query: {QUERY}" and out[3] == "query: gas giant"
    scores = model.similarity(model.encode_query([QUERY]), model.encode_document(DOCS))[0]
    best = np.argsort(-scores)[:2]
    for line, i in zip(out[1:3], best):
        # Printed with 4 decimals; a 1e-7 difference may flip the last digit, so parse it.
        printed = float(line.split()[1])
        assert abs(printed - scores[i]) <= 6e-5 and f"[line {i + 1}]" in line


def test_cli_search_jsonl_and_directory(jax_only_model, tmp_path, capsys):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                             for i, t in enumerate(DOCS)))
    assert main(["search", "-m", jax_only_model, "--docs", str(jsonl), "-q", QUERY]) == 0
    out = capsys.readouterr().out
    assert out.count("[d") == 3  # top-k 5 capped at 3 documents
    folder = tmp_path / "dir"
    folder.mkdir()
    for i, text in enumerate(DOCS):
        (folder / f"doc{i}.{'md' if i else 'txt'}").write_text(text)
    (folder / "ignored.bin").write_text("not a document")
    assert main(["search", "-m", jax_only_model, "--docs", str(folder), "-q", QUERY,
                 "-k", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].rstrip().endswith((".txt]", ".md]"))


@pytest.mark.parametrize("argv, message", [
    (["embed", "-m", "{missing}", "x"], "model folder not found"),
    (["embed", "-m", "{model}", "--prompt-name", "nope", "x"], "unknown prompt name 'nope'"),
    (["embed", "-m", "{model}", "--dtype", "float16", "x"], "float16 is not supported"),
    (["embed", "-m", "{model}", "--truncate-dim", "999", "x"], "truncate_dim must be"),
    (["embed", "-m", "{model}", "x", "-"], "cannot be mixed"),
    (["search", "-m", "{model}", "--docs", "{missing}", "-q", "x"], "documents not found"),
    (["search", "-m", "{model}", "--docs", "{bad_jsonl}", "-q", "x"], "needs a string \"text\""),
    (["search", "-m", "{model}", "--docs", "{empty}", "-q", "x"], "no documents"),
    (["search", "-m", "{model}", "--docs", "{empty}", "-q", "x", "-k", "0"], "--top-k"),
])
def test_cli_errors_are_one_line_exit_2(jax_only_model, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    paths = {"model": jax_only_model, "missing": str(tmp_path / "missing"),
             "bad_jsonl": str(bad), "empty": str(empty)}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tarka-jax {argv[0]}: error: ")
    assert message in err and "Traceback" not in err


def test_cli_registry_adds_a_subcommand(capsys):
    def add_arguments(p):
        p.add_argument("--n", type=int, default=1)

    register(Command("hello-test", "say hello", add_arguments,
                     lambda args: print("hello " * args.n) or 0))
    try:
        assert main(["hello-test", "--n", "2"]) == 0
        assert capsys.readouterr().out.strip() == "hello hello"
        with pytest.raises(SystemExit) as exc:
            main(["--help"])
        assert exc.value.code == 0
        assert "hello-test" in capsys.readouterr().out
    finally:
        cli_module._COMMANDS.pop("hello-test")


def test_cli_subprocess_search(jax_only_model, tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_text("\n".join(DOCS))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "tarka_jax", "search", "--model", jax_only_model,
         "--docs", str(txt), "--query", QUERY, "--top-k", "3"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"query: {QUERY}" and len(lines) == 4
    bad = subprocess.run([sys.executable, "-m", "tarka_jax", "embed", "--model",
                          str(tmp_path / "nope"), "x"], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
