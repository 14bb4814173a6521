"""Readiness means ready to serve: a freshly started `taskhub api` opens its connection
pools (and so PgBouncer's server connections) before /health/ready says ok, within a
bound, without holding up liveness; with the database down it starts all the same and
reports why it is not ready. Real processes: the API, PgBouncer, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.data.conftest import Actor, Server, create_task, spawn_server
from tests.stack import (
    HOST,
    PGBOUNCER_PORT,
    devstack,
)

TASKS = "/api/v1/tasks"
WARMING = "warming up: opening the connection pools"
UNAVAILABLE = "unavailable: the primary does not answer its probe"
POOL_SIZE = 20  # DatabaseSettings.pool_size's default, which these servers keep


Launch = Callable[..., Server]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """`taskhub api` processes watched from their first instant (the shared fixtures
    hand a server over only once it is ready), logging at INFO."""
    started: list[Server] = []

    def start(**overrides: str) -> Server:
        server = spawn_server(tmp_path, {"TASKHUB_LOG_LEVEL": "INFO", **overrides})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class Poll:
    at: float
    status: int
    database: str


async def _poll_until_ready(api: Server, within: float = 60) -> list[Poll]:
    """Every answer of /health/ready from the first one the process gives until the
    first 200 (bounded)."""
    polls: list[Poll] = []
    started = time.monotonic()
    async with api.client(timeout=3) as http:
        while time.monotonic() - started < within:
            assert api.process.poll() is None, api.log.read_text(errors="replace")
            try:
                response = await http.get("/health/ready")
            except httpx.HTTPError:  # not listening yet
                await asyncio.sleep(0.02)
                continue
            polls.append(Poll(time.monotonic(), response.status_code, _database(response)))
            if response.status_code == 200:
                return polls
            await asyncio.sleep(0.05)
    raise AssertionError(f"not ready within {within} s: {polls[-3:]}")


async def _poll_until_answered(api: Server, within: float = 60) -> list[Poll]:
    """The first answer of /health/ready (and any before it, none): bounded."""
    deadline = time.monotonic() + within
    async with api.client(timeout=5) as http:
        while time.monotonic() < deadline:
            assert api.process.poll() is None, api.log.read_text(errors="replace")
            try:
                response = await http.get("/health/ready")
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            return [Poll(time.monotonic(), response.status_code, _database(response))]
    raise AssertionError(f"no answer within {within} s")


def _database(response: httpx.Response) -> str:
    database: str = response.json()["checks"]["database"]
    return database


def _bouncer_servers() -> dict[str, int]:
    """PgBouncer's server connections per database (its admin console)."""
    out = subprocess.run(
        ["psql", "-h", HOST, "-p", str(PGBOUNCER_PORT), "-U", "postgres", "-Atc", "SHOW SERVERS"],
        env={**os.environ, "PGDATABASE": "pgbouncer"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.startswith("S|")]
    return {db: sum(1 for r in rows if r[2] == db) for db in ("taskhub", "taskhub_ro")}


@pytest.fixture
async def reader(server: Server) -> AsyncIterator[Actor]:
    """A user with a few tasks, made through the shared server before the cold start."""
    actor = await server.signup()
    async with server.client() as http:
        for i in range(3):
            await create_task(http, actor, title=f"warm {i}")
    actor.token = None  # reads may go to the replica
    yield actor


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


class TestWarmUp:
    async def test_ready_once_warm_then_a_burst_gets_no_503(
        self, launch: Launch, reader: Actor
    ) -> None:
        devstack("restart", "pgbouncer")  # no server connections: a cold start
        api = launch()
        # Made now: creating 16 clients takes long enough to blur the first second.
        clients = [api.client() for _ in range(16)]
        try:
            polls = await _poll_until_ready(api)
            servers = _bouncer_servers()
            # Warm before ready: PgBouncer holds a pool's worth of server connections
            # to each node (the API's pools then hold as many client connections).
            assert servers["taskhub"] >= POOL_SIZE, (servers, polls)
            assert servers["taskhub_ro"] >= POOL_SIZE, (servers, polls)
            unready = {p.database for p in polls if p.status != 200}
            assert unready <= {UNAVAILABLE, WARMING}, polls

            async def client(http: httpx.AsyncClient, i: int) -> list[tuple[int, float]]:
                results = []
                for j in range(12):
                    started = time.perf_counter()
                    # Distinct pages: cache misses, so every request reads the database.
                    response = await http.get(TASKS, params={"limit": 1 + (i * 12 + j) % 90})
                    results.append((response.status_code, time.perf_counter() - started))
                return results

            for http in clients:
                http.headers.update(reader.headers)
            outcomes = [
                r
                for rs in await asyncio.gather(*(client(h, i) for i, h in enumerate(clients)))
                for r in rs
            ]
        finally:
            for http in clients:
                await http.aclose()
        statuses = [status for status, _ in outcomes]
        latencies = [took for _, took in outcomes]
        print(
            f"cold start: ready after {polls[-1].at - polls[0].at:.2f} s of polling "
            f"({len(polls) - 1} unready answers), PgBouncer servers {servers}; burst of "
            f"{len(outcomes)}: p99 {_p99(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms"
        )
        assert statuses == [200] * len(outcomes), statuses

    async def test_warming_is_bounded_and_never_blocks_liveness(self, launch: Launch) -> None:
        # More connections than PgBouncer will open for one pool (20 + a reserve it
        # only grants after 5 s): the warm-up cannot complete and must give up.
        api = launch(TASKHUB_DB__POOL_SIZE="30", TASKHUB_DB__WARM_UP_SECONDS="3")
        polls = await _poll_until_ready(api)
        warming = [p for p in polls if p.database == WARMING]
        assert warming, polls
        assert polls[-1].status == 200
        async with api.client(timeout=3) as http:
            assert (await http.get("/health/live")).status_code == 200
        # Held until the bound, then let go: within the bound plus a connect and a
        # statement timeout.
        took = polls[-1].at - warming[0].at
        print(f"pool larger than PgBouncer's: ready {took:.2f} s after the first poll")
        assert 2 < took < 3 + 2 + 3 + 2, took


class TestDatabaseDownAtStart:
    async def test_starts_unready_with_a_reason_and_gets_ready_when_it_is_back(
        self, launch: Launch, reader: Actor
    ) -> None:
        devstack("stop", "replica")
        devstack("stop", "primary")
        api = launch()
        polls = await _poll_until_answered(api)
        assert {p.status for p in polls} == {503}
        assert {p.database for p in polls} == {UNAVAILABLE}, polls
        async with api.client(timeout=5) as http:
            # Not a crash loop: it goes on answering, alive and unready.
            await asyncio.sleep(2)
            assert api.process.poll() is None
            assert (await http.get("/health/live")).status_code == 200
            assert (await http.get("/health/ready")).status_code == 503

            devstack("start", "primary")
            devstack("start", "replica")
            polls = await _poll_until_ready(api, within=30)
            assert polls[-1].status == 200
            servers = _bouncer_servers()
            assert servers["taskhub"] >= POOL_SIZE, servers  # warmed once it was back
            got = await http.get(TASKS, params={"limit": 5}, headers=reader.headers)
            assert got.status_code == 200, got.text
            assert len(got.json()["items"]) == 3
