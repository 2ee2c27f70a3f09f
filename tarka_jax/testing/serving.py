"""Live ``tarka-jax serve`` servers for tests and benchmarks: loopback only, bounded waits.

:func:`start_server` runs the real command line in a subprocess on 127.0.0.1 and a free port
and waits (at most ``timeout`` seconds) for ``/health`` to say ready; :func:`in_process`
runs the same app under uvicorn on a thread of this process, for tests that need to hold the
engine (a gate on its forward passes) to make timing deterministic. :func:`prompted_copy`
gives a copy of a model folder with task prompts, for ``prompt_name``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from tarka_jax.testing.reference import free_port

DEMO_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def prompted_copy(folder: str, out: str, prompts: dict[str, str] = DEMO_PROMPTS) -> str:
    """``folder`` copied to ``out`` with ``prompts`` in its sentence-transformers config."""
    shutil.copytree(folder, out)
    path = os.path.join(out, "config_sentence_transformers.json")
    with open(path) as f:
        config = json.load(f)
    config["prompts"] = dict(prompts)
    with open(path, "w") as f:
        json.dump(config, f)
    return out


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/health`` until 200; fail on timeout or if ``proc`` exits first."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{_output(proc)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def _output(proc: subprocess.Popen) -> str:
    with contextlib.suppress(Exception):
        return proc.communicate(timeout=5)[0] or ""
    return ""


@contextlib.contextmanager
def start_server(model: str, *args: str, timeout: float = 300.0, env: dict | None = None):
    """Yield ``(url, process)`` of ``tarka-jax serve --model model *args`` once ready;
    terminated (then killed) on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "tarka_jax", "serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout, proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def in_process(service, timeout: float = 300.0):
    """Yield the URL of ``service``'s app served by uvicorn on a thread of this process."""
    import uvicorn

    from tarka_jax.serve.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(60)


__all__ = ["DEMO_PROMPTS", "in_process", "prompted_copy", "start_server", "wait_ready"]
