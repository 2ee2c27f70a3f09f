"""``tarka-jax mteb`` on a local task module: table, result files, unreachable data."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("mteb")

TASK_MODULE = textwrap.dedent('''
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    ARGS = dict(description="d", reference="https://example.org", category="t2t",
                eval_splits=["test"], eval_langs=["eng-Latn"], date=("2026-01-01", "2026-01-01"),
                dialect=["Written"], domains=[], task_subtypes=[], license="cc-by-4.0",
                annotations_creators="derived", modalities=["text"], sample_creation="found",
                bibtex_citation="", main_score="cosine_spearman", type="STS")


    class CliLocalSTS(AbsTaskSTS):
        metadata = TaskMetadata(name="CliLocalSTS", dataset={"path": "NA", "revision": "NA"},
                                **ARGS)
        min_score, max_score = 0, 5

        def load_data(self, num_proc=None, **kwargs):
            s1 = ["the red planet", "a gas giant", "light of the sun", "rings of saturn"]
            s2 = ["mars is red", "jupiter is a gas giant", "the moon", "a star"]
            self.dataset = DatasetDict({"test": Dataset.from_dict(
                {"sentence1": s1, "sentence2": s2, "score": [5.0, 4.0, 1.0, 0.0]})})
            self.data_loaded = True


    class CliUnreachableSTS(AbsTaskSTS):  # default load_data: the hub, which is offline
        metadata = TaskMetadata(name="CliUnreachableSTS",
                                dataset={"path": "tarka-jax-tests/no-such-dataset",
                                         "revision": "0" * 40}, **ARGS)
''')


def _run(argv):
    from tarka_jax import cli

    cli.register_lazy("mteb", "run MTEB tasks", "tarka_jax.mteb.cli:COMMAND")
    return cli.main(argv)


def test_cli_mteb_local_tasks(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    module = tmp_path / "tasks.py"
    module.write_text(TASK_MODULE)
    out = tmp_path / "out"
    rc = _run(["mteb", "--model", "builtin:demo-mini", "--task-module", str(module),
               "--output-folder", str(out), "--batch-size", "4"])
    printed = capsys.readouterr().out
    assert rc == 1  # one task could not load its data
    assert "CliLocalSTS" in printed and "cosine_spearman" in printed
    assert "CliUnreachableSTS  FAILED: data not reachable" in printed
    assert "tarka-jax-tests/no-such-dataset" in printed and "offline mode is on" in printed
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["tasks"]
    assert row["task"] == "CliLocalSTS" and -1.0 <= row["value"] <= 1.0
    assert set(summary["failed"]) == {"CliUnreachableSTS"}
    result_file = out / "builtin__demo-mini" / summary["revision"] / "CliLocalSTS.json"
    saved = json.loads(result_file.read_text())
    assert saved["task_name"] == "CliLocalSTS"
    assert saved["scores"]["test"][0]["main_score"] == pytest.approx(row["value"])

    # --tasks selects among the module's tasks; the unreachable one left out -> status 0.
    rc = _run(["mteb", "--model", "builtin:demo-mini", "--task-module", str(module),
               "--tasks", "CliLocalSTS", "--output-folder", str(out)])
    assert rc == 0 and "FAILED" not in capsys.readouterr().out


def test_cli_mteb_errors(tmp_path, capsys):
    rc = _run(["mteb", "--model", "builtin:demo-mini", "--task-module",
               str(tmp_path / "missing.py"), "--output-folder", str(tmp_path)])
    assert rc == 2 and "task module not found" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    rc = _run(["mteb", "--model", "builtin:demo-mini", "--task-module", str(empty),
               "--output-folder", str(tmp_path)])
    assert rc == 2 and "defines no mteb task class" in capsys.readouterr().err
    rc = _run(["mteb", "--model", "builtin:demo-mini", "--output-folder", str(tmp_path)])
    assert rc == 2 and "give --tasks, --benchmark or --task-module" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "summary.json")


def test_docstring_task_module_follows_its_rules():
    """examples/mteb_docstring_tasks.py (the README's and the benchmark's tasks) loads offline."""
    from tarka_jax.mteb.cli import load_task_module
    from tarka_jax.testing.demo import load_corpus

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tasks = {t.metadata.name: t for t in load_task_module(
        os.path.join(root, "examples", "mteb_docstring_tasks.py"))}
    assert set(tasks) == {"DocstringRetrieval", "DocstringSTS", "DocstringClassification",
                          "DocstringClustering", "DocstringPairClassification"}
    held = load_corpus().split("heldout")
    body_of = {p["body"]: p for p in held}
    sts = tasks["DocstringSTS"]
    sts.load_data()
    test = sts.dataset["test"]
    for s1, s2, gold in zip(test["sentence1"], test["sentence2"], test["score"]):
        a = next(p for p in held if p["summary"] == s1)
        b = body_of[s2]
        same_module = a["source"].split(".")[0] == b["source"].split(".")[0]
        assert gold == (5.0 if a is b else 2.0 if same_module else 0.0)
    retrieval = tasks["DocstringRetrieval"]
    retrieval.load_data()
    split = retrieval.dataset["default"]["test"]
    assert len(split["queries"]) == len(split["corpus"]) == len(held)
    clf = tasks["DocstringClassification"]
    clf.load_data()
    assert set(clf.dataset["test"]["label"]) <= set(clf.dataset["train"]["label"])
    assert len(set(clf.dataset["test"]["label"])) >= 5


def test_cli_mteb_never_overwrites_a_users_summary(tmp_path, capsys, monkeypatch):
    """The output folder is shared: a summary.json tarka-jax did not write is refused (and
    kept), before any evaluation. (One it wrote is replaced: test_cli_mteb_local_tasks.)"""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = tmp_path / "tasks.py"
    module.write_text(TASK_MODULE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": true}\n')
    argv = ["mteb", "--model", "builtin:demo-mini", "--task-module", str(module), "--tasks",
            "CliLocalSTS", "--output-folder", str(out)]
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert "already holds summary.json (not listed in the marker)" in err, err
    assert (out / "summary.json").read_text() == '{"mine": true}\n'
    assert sorted(os.listdir(out)) == ["summary.json"]  # nothing else written, lock released
