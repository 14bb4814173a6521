"""Real processes: the project's own primary, replica, PgBouncer and Redis
(scripts/devstack.sh) and the API served by `taskhub api` (uvicorn) in front of them.
Tests stop and start those processes for real; every wait is bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from prometheus_client.parser import text_string_to_metric_families

from taskhub_api.schema import alembic_config
from tests.stack import (
    BOUNCER_RO_URL,
    BOUNCER_URL,
    PGBOUNCER_PORT,
    PRIMARY_DSN,
    PRIMARY_PORT,
    REDIS_PORT,
    REDIS_URL,
    REPLICA_DSN,
    REPLICA_PORT,
    ROOT,
    devstack,
)
from tests.support.net import free_port, listening
from tests.support.wait import eventually

PASSWORD = "correct-horse-42"
SECRET = "data-tests-secret-key-long-enough-for-hs256"
TOKEN_HEADER = "Consistency-Token"
STACK_PORTS = (PRIMARY_PORT, REPLICA_PORT, PGBOUNCER_PORT, REDIS_PORT)


async def sql(dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def primary_sql(query: str, *args: Any) -> Any:
    return await sql(PRIMARY_DSN, query, *args)


async def replica_sql(query: str, *args: Any) -> Any:
    return await sql(REPLICA_DSN, query, *args)


@pytest.fixture(scope="session")
def stack() -> Iterator[None]:
    """A fresh primary + replica + PgBouncer + Redis, migrated through PgBouncer."""
    devstack("purge")
    devstack("up")
    command.upgrade(alembic_config(BOUNCER_URL), "head")
    yield
    devstack("purge")


@dataclass
class Actor:
    id: str
    username: str
    headers: dict[str, str]
    token: str | None = None  # the consistency token of its last write

    def with_token(self) -> dict[str, str]:
        return {**self.headers, TOKEN_HEADER: self.token} if self.token else self.headers


@dataclass
class Server:
    """`taskhub api` on its own port, with its own settings."""

    base_url: str
    metrics_url: str  # `taskhub api --metrics-port`: the API's own port has no /metrics
    log: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, timeout: float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.metrics_url)).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    async def signup(self, role: str = "user") -> Actor:
        name = f"{role}-{uuid.uuid4().hex[:10]}"
        async with self.client() as http:
            body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            created = await http.post("/api/v1/auth/register", json=body)
            assert created.status_code == 201, created.text
            if role != "user":
                await primary_sql(
                    'UPDATE "user" SET roles = $1 WHERE id = $2',
                    [role],
                    uuid.UUID(created.json()["id"]),
                )
            login = await http.post(
                "/api/v1/auth/token", data={"username": name, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        return Actor(created.json()["id"], name, {"Authorization": f"Bearer {token}"})

    async def ready(self) -> bool:
        async with self.client(timeout=3) as http:
            return (await http.get("/health/ready")).status_code == 200

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def spawn_server(tmp: Path, overrides: dict[str, str]) -> Server:
    """A `taskhub api` process on the test stack, not waited for (readiness tests watch
    it from its first instant); ``overrides`` are environment variables."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "TASKHUB_DB__URL": BOUNCER_URL,
        "TASKHUB_DB__REPLICA_URL": BOUNCER_RO_URL,
        "TASKHUB_DB__STATEMENT_CACHE_SIZE": "0",
        "TASKHUB_REDIS__URL": REDIS_URL,
        "TASKHUB_REDIS__KEY_PREFIX": f"taskhub-{uuid.uuid4().hex[:8]}:",
        "TASKHUB_AUTH__SECRET_KEY": SECRET,
        "TASKHUB_LOG_LEVEL": "WARNING",
        "TASKHUB_LOG_JSON": "false",
        **overrides,
    }
    log = tmp / f"api-{port}.log"
    taskhub = Path(sys.executable).parent / "taskhub"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(taskhub),
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", log, process, env
    )


def _start_server(tmp: Path, overrides: dict[str, str]) -> Server:
    server = spawn_server(tmp, overrides)
    process = server.process
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"taskhub api exited:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.base_url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"taskhub api did not become ready:\n{server.log_text()}")


StartServer = Callable[..., Server]


@pytest.fixture(scope="session")
def start_server(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Starts (once per distinct settings) an API server; all stop at the end."""
    servers: dict[tuple[tuple[str, str], ...], Server] = {}
    tmp = tmp_path_factory.mktemp("api")

    def start(**overrides: str) -> Server:
        key = tuple(sorted(overrides.items()))
        if key not in servers:
            servers[key] = _start_server(tmp, overrides)
        return servers[key]

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def server(start_server: StartServer) -> Server:
    """Default settings (cache on, generous rate limits)."""
    return start_server()


async def _restore(server: Server) -> None:
    # devstack.sh starts what is down; when every part listens there is nothing to start.
    if not all(listening(port) for port in STACK_PORTS):
        devstack("up")
    if await replica_sql("SELECT pg_is_wal_replay_paused()"):
        await replica_sql("SELECT pg_wal_replay_resume()")
    await eventually(server.ready, within=30)


@pytest.fixture(autouse=True)
async def healthy_stack(server: Server) -> AsyncIterator[None]:
    """Each test starts and ends with every process up and replay running."""
    await _restore(server)
    yield
    await _restore(server)


async def create_task(http: httpx.AsyncClient, actor: Actor, **fields: Any) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/tasks", json={"title": "A task", **fields}, headers=actor.with_token()
    )
    assert response.status_code == 201, response.text
    actor.token = response.headers[TOKEN_HEADER]
    task: dict[str, Any] = response.json()
    return task
