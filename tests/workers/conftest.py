"""Harness of the async-layer tests: the project's own RabbitMQ node (started here,
stopped at the end, so tests may restart it), a vhost per test, a real SMTP server
(aiosmtpd), a real HTTP receiver, and real worker and relay processes. The app, client,
users and cleaning come from tests/conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from taskhub_api.settings import (
    BrokerSettings,
    DatabaseSettings,
    RedisSettings,
    Settings,
    WebhookSettings,
)
from tests.conftest import ROOT, started_app
from tests.support.broker import Broker
from tests.support.net import free_port

TASKHUB = str(ROOT / ".venv" / "bin" / "taskhub")


# SMTP and HTTP receivers


class MailSink:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server. Each path answers with ``status[path]`` (default 200) after
    ``delay[path]`` seconds, or once ``gate[path]`` opens."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    gate: dict[str, threading.Event] = field(default_factory=dict)
    answered: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Received(self.path, dict(self.headers.items()), body)
            state.requests.append(request)
            if self.path in state.gate:
                state.gate[self.path].wait(30)
            time.sleep(state.delay.get(self.path, 0))
            self.send_response(state.status.get(self.path, 200))
            self.send_header("Content-Length", "0")
            self.end_headers()
            state.answered.append(request)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()


# The API in-process, with loopback webhooks allowed (the receiver is local)


@pytest.fixture(scope="session")
def settings(settings: Settings) -> Settings:
    webhooks = WebhookSettings(allowed_networks=["127.0.0.0/8", "::1/128"])  # type: ignore[list-item]
    return settings.model_copy(update={"webhooks": webhooks})


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """This package's own app (tests/conftest.py's fixture, on these settings)."""
    async with started_app(settings) as application:
        yield application


@pytest.fixture(autouse=True)
def cleaned(clean_database: None) -> None:
    """Every test starts on empty tables."""


# Worker and relay processes


@dataclass
class Stack:
    """Settings and processes of one test, all on the test's own vhost."""

    broker_url: str
    env: dict[str, str]
    logs: Path
    processes: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def settings(self, database_url: str) -> Settings:
        return Settings(
            db=DatabaseSettings(url=database_url),
            redis=RedisSettings(
                url=self.env["TASKHUB_REDIS__URL"], key_prefix=self.env["TASKHUB_REDIS__KEY_PREFIX"]
            ),
            broker=BrokerSettings(url=self.broker_url, retry_backoff_seconds=1),
            log_json=False,
        )

    def spawn(self, *args: str, ready: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{args[0]}-{len(self.processes)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [TASKHUB, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        self.processes.append((process, log))
        deadline = time.monotonic() + 60
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{args} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return process

    def worker(
        self, queues: str = "notifications,webhooks,maintenance", metrics_port: int = 0
    ) -> subprocess.Popen[bytes]:
        return self.spawn(
            "worker",
            "--pool=solo",
            f"--metrics-port={metrics_port}",
            f"--queues={queues}",
            ready=" ready.",
        )

    def relay(self, metrics_port: int = 0) -> subprocess.Popen[bytes]:
        return self.spawn("relay", f"--metrics-port={metrics_port}", ready="relay started")

    def api(self, redis_url: str) -> str:
        """The API as a process of its own (``taskhub api``); its base URL. Tokens of
        ``settings`` are valid there."""
        assert self.env["TASKHUB_REDIS__URL"] == redis_url
        port = free_port()
        self.spawn(
            "api",
            "--host=127.0.0.1",
            f"--port={port}",
            "--metrics-port=0",
            ready="Application startup complete",
        )
        return f"http://127.0.0.1:{port}"

    def log_lines(self, command: str) -> list[dict[str, Any]]:
        """The JSON log lines of the ``command`` processes (with TASKHUB_LOG_JSON=true)."""
        lines = []
        for _, log in self.processes:
            if not log.name.startswith(f"{command}-"):
                continue
            for line in log.read_text(errors="replace").splitlines():
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # Celery's banner, exported spans (console exporter)
                if isinstance(entry, dict) and "logger" in entry:
                    lines.append(entry)
        return lines

    def log_text(self) -> str:
        return "\n".join(
            f"== {log.name}\n{log.read_text(errors='replace')}" for _, log in self.processes
        )

    def stop_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


@pytest.fixture
def stack(
    broker: Broker,
    database_url: str,
    smtp: tuple[MailSink, int],
    tmp_path: Path,
    settings: Settings,
) -> Iterator[Stack]:
    url = broker.new_vhost()
    env = {
        # Tracing is off unless a test turns it on.
        **{k: v for k, v in os.environ.items() if not k.startswith(("TASKHUB_", "OTEL_"))},
        "TASKHUB_DB__URL": database_url,
        "TASKHUB_REDIS__URL": settings.redis.url,
        "TASKHUB_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "TASKHUB_AUTH__SECRET_KEY": settings.auth.secret_key.get_secret_value(),
        "TASKHUB_BROKER__URL": url,
        "TASKHUB_BROKER__RETRY_BACKOFF_SECONDS": "1",
        "TASKHUB_BROKER__JOB_LEASE_SECONDS": "6",
        "TASKHUB_BROKER__RELAY_POLL_SECONDS": "0.5",
        "TASKHUB_SMTP__HOST": "127.0.0.1",
        "TASKHUB_SMTP__PORT": str(smtp[1]),
        "TASKHUB_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8","::1/128"]',
        "TASKHUB_WEBHOOKS__TIMEOUT": "5",
        "TASKHUB_LOG_JSON": "false",
        "TASKHUB_LOG_LEVEL": "INFO",
    }
    running = Stack(url, env, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


async def job_state(pg: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await pg.fetchrow(
        "SELECT status, attempts, last_error FROM job_execution WHERE key = $1", key
    )
