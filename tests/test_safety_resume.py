"""An honest --resume: a changed learning rate is refused, or accepted and recorded, never hidden.

The run folder is written by the run's own helpers (``make_run_folder``: run.json,
student/, orbax checkpoints) without training, so nothing compiles; ``train``
then resumes it for real (loading, checking, restoring). Torch-free.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TRAIN = os.path.join(EXAMPLES, "data", "tiny_train.txt")


def _config(tmp_path, model, *, lr=3e-3, log_every=1, name="run.toml"):
    from tarka_jax.distill.config import load_config

    text = textwrap.dedent(f"""\
        [model]
        teacher = {json.dumps(model)}
        student = {json.dumps(model)}
        [data]
        train = {json.dumps([TRAIN])}
        batch_size = 4
        max_seq_length = 16
        teacher_max_seq_length = 16
        buckets = [16]
        [loss]
        cosine = 1.0
        kl = 0.0
        [optimizer]
        learning_rate = {lr}
        [train]
        steps = 4
        log_every = {log_every}
        [checkpoint]
        every = 2
        async_save = false
        [logging]
        progress = false
        """)
    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path)), text


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture
def run(jax_only_model, tmp_path, make_run_folder):
    """A run folder at step 2 of the lr=3e-3 config."""
    from tarka_jax.train.data import read_corpus

    config, _ = _config(tmp_path, jax_only_model)
    position = {"epoch": 0, "index": 2, "seed": 0, "batch_size": 4,
                "num_texts": len(read_corpus([TRAIN], "text", "data.train"))}
    return make_run_folder(jax_only_model, str(tmp_path / "run"), config.to_dict(), (2,),
                           position)


def test_resume_with_a_changed_learning_rate(jax_only_model, run, tmp_path):
    from tarka_jax.distill.run import train
    from tarka_jax.train.resume_check import ConfigChangeError, check_resume, read_changes

    run_json, config_toml = _read(os.path.join(run, "run.json")), _read(
        os.path.join(run, "config.toml"))
    changed, changed_text = _config(tmp_path, jax_only_model, lr=1e-2, name="changed.toml")
    with pytest.raises(ConfigChangeError, match=r"optimizer\.learning_rate: 0\.003 -> 0\.01"):
        train(changed, run, resume=True, config_text=changed_text)
    assert read_changes(run) == []

    # Accepted: restored and checked for real; max_steps 2 (the checkpoint) runs no step.
    result = train(changed, run, resume=True, max_steps=2, config_text=changed_text,
                   allow_config_change=True)
    assert result["step"] == 2
    # History stays as it was: run.json / config.toml describe how the run started...
    assert _read(os.path.join(run, "run.json")) == run_json
    assert _read(os.path.join(run, "config.toml")) == config_toml
    # ...and the change is recorded with the step it took effect.
    (record,) = read_changes(run)
    assert record["step"] == 2 and record["changes_math"] == ["optimizer.learning_rate"]
    assert record["changes"]["optimizer.learning_rate"] == {"old": 3e-3, "new": 1e-2}
    assert record["config_text"] == changed_text

    # The accepted rate is now the run's; a logging-only change needs no flag (recorded too).
    quiet, _ = _config(tmp_path, jax_only_model, lr=1e-2, log_every=2, name="quiet.toml")
    run_config = json.loads(run_json)["config"]
    check_resume(run, run_config, quiet.to_dict(), step=4)
    last = read_changes(run)[-1]
    assert last["step"] == 4 and last["changes_math"] == []
    assert list(last["changes"]) == ["train.log_every"]
    original, _ = _config(tmp_path, jax_only_model, name="original.toml")
    with pytest.raises(ConfigChangeError, match="optimizer.learning_rate"):
        check_resume(run, run_config, original.to_dict(), step=4)  # back to 3e-3: a change


def test_config_diff_uses_toml_names():
    from tarka_jax.train.resume_check import changes_math, diff

    old = {"optimizer": {"learning_rate": 1e-3}, "data": {"buckets": (16, 32), "eval": []},
           "logging": {"progress": True}}
    new = {"optimizer": {"learning_rate": 1e-3}, "data": {"buckets": [16, 64], "eval": ["x"]},
           "logging": {"progress": False}}
    got = diff(old, new)
    assert got == {"data.buckets": ([16, 32], [16, 64]), "data.eval": ([], ["x"]),
                   "logging.progress": (True, False)}
    assert [k for k in got if changes_math(k)] == ["data.buckets"]


def test_fresh_run_refuses_a_folder_that_is_not_a_run(jax_only_model, tmp_path):
    from tarka_jax.distill.run import train

    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text("mine\n")
    config, text = _config(tmp_path, jax_only_model)
    with pytest.raises(FileExistsError, match="not a run folder"):
        train(config, str(work), max_steps=1, config_text=text)
    assert sorted(os.listdir(work)) == ["notes.txt"]
