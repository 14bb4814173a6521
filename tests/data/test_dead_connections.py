"""A pooled connection that died while idle costs no read a 503: the server connections
are killed (pg_terminate_backend) or PgBouncer restarts between two requests, and the
next read succeeds; a write either succeeds or answers 503 with Retry-After, and is
never applied twice. Real processes: the API, PgBouncer, primary and replica."""

from __future__ import annotations

import uuid

import httpx

from tests.data.conftest import Actor, Server, create_task, primary_sql, sql
from tests.stack import PRIMARY_DSN, REPLICA_DSN, devstack

TASKS = "/api/v1/tasks"
# Every client backend of the database but the one asking, and wait (up to 5 s each)
# until each is gone.
KILL = (
    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_type = 'client backend'"
    " AND pid <> pg_backend_pid()"
)


async def _kill_server_connections() -> int:
    killed = 0
    for dsn in (PRIMARY_DSN, REPLICA_DSN):
        killed += int(await sql(dsn, KILL))
    return killed


async def _reads(http: httpx.AsyncClient, actor: Actor, task_id: str) -> list[int]:
    """A list and a get, each of which also looks up the principal."""
    listed = await http.get(TASKS, params={"limit": 5}, headers=actor.headers)
    got = await http.get(f"{TASKS}/{task_id}", headers=actor.with_token())
    return [listed.status_code, got.status_code]


async def _write_once(http: httpx.AsyncClient, actor: Actor) -> None:
    """A create after the connections died: 201, or 503 with Retry-After; and the
    task exists once if it was created, never twice."""
    title = f"after the kill {uuid.uuid4().hex[:8]}"
    response = await http.post(TASKS, json={"title": title}, headers=actor.headers)
    assert response.status_code in (201, 503), response.text
    count = await primary_sql("SELECT count(*) FROM task WHERE title = $1", title)
    if response.status_code == 201:
        assert count == 1
    else:
        assert int(response.headers["Retry-After"]) >= 1
        assert count <= 1
    print(f"write after the connections died: {response.status_code}, applied {count}x")


class TestTerminatedBackends:
    async def test_reads_succeed_and_writes_never_apply_twice(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice)
            for _ in range(8):  # several pooled connections, all in use at some point
                assert await _reads(http, alice, task["id"]) == [200, 200]
            for round_ in range(3):
                assert await _kill_server_connections() >= 1
                statuses = await _reads(http, alice, task["id"])
                assert statuses == [200, 200], (round_, statuses)
            assert await _kill_server_connections() >= 1
            await _write_once(http, alice)
            assert await _reads(http, alice, task["id"]) == [200, 200]


class TestPgBouncerRestarted:
    async def test_reads_succeed_and_writes_never_apply_twice(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice)
            assert await _reads(http, alice, task["id"]) == [200, 200]
            for round_ in range(2):
                devstack("restart", "pgbouncer")  # every client connection of the API dies
                statuses = await _reads(http, alice, task["id"])
                assert statuses == [200, 200], (round_, statuses)
            devstack("restart", "pgbouncer")
            await _write_once(http, alice)
            assert await _reads(http, alice, task["id"]) == [200, 200]
