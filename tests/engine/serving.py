"""Helpers that start ``python -m engine.serve`` in a subprocess (a real HTTP server) for the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "POLICYOPS_SERVE_API_KEY"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(args: list[str], port: int, env: dict[str, str], log: Path, name: str,
                   start_timeout_s: float) -> Iterator[str]:
    """Run ``args`` (a server listening on ``port``) until the block ends; yields its ``/v1`` URL once
    ``/health`` answers. Fails with the server's output when it dies or never answers; stops it after."""
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = log.read_text()[-4000:]
                raise AssertionError(f"{name} did not answer in {start_timeout_s} s:\n{tail}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def engine_server(model: str, *args: str, api_key: str | None = None, log: Path | None = None,
                  start_timeout_s: float = 120.0) -> Iterator[str]:
    """Run ``python -m engine.serve --model MODEL ARGS`` on a free port until the block ends; yields its
    ``/v1`` URL once ``/health`` answers. Fails with the server's output when it dies or never answers."""
    port = free_port()
    env = {**os.environ, KEY_ENV: api_key or "", "OMP_NUM_THREADS": "1"}
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"engine-serve-{port}.log"
    command = [sys.executable, "-m", "engine.serve", "--model", model, "--port", str(port), *args]
    with server_process(command, port, env, log, "engine.serve", start_timeout_s) as url:
        yield url


@contextmanager
def thread_server(engine: Any, **config: Any) -> Iterator[tuple[str, Any]]:
    """``engine.serve``'s app on the in-process ``engine`` (``config``: ServeConfig's fields), served by
    uvicorn in a thread until the block ends; yields its ``/v1`` URL and the app."""
    import uvicorn

    from engine.serve import ServeConfig, create_app

    app = create_app(engine, ServeConfig(**config))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
