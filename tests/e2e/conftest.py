"""A real uvicorn process serving the app on the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from taskhub_api.settings import Settings
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="session")
def live_server(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "uvicorn.log"
    env = {
        **os.environ,
        "TASKHUB_DB__URL": settings.db.url,
        "TASKHUB_REDIS__URL": settings.redis.url,
        "TASKHUB_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "TASKHUB_AUTH__SECRET_KEY": settings.auth.secret_key.get_secret_value(),
        "TASKHUB_LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskhub_api.cli",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",  # none: a second port to collide on, unused here
                "0",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {log.read_text()}")
        time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"uvicorn did not become ready: {log.read_text()}")
    yield LiveServer(url, process, log)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
