"""The hot paths take bare asyncpg connections from SQLAlchemy's pool: a connection that
dies under them is discarded, never handed out again, and never turns into a 500."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from fastapi import FastAPI

from taskhub_api.db import Database
from tests.api.conftest import NewUser, create_task


async def _kill_pooled_connections(app: FastAPI) -> int:
    """Terminates, from another session, every backend of the app's pool."""
    db: Database = app.state.db
    url = db.primary.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        killed: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'taskhub' "
            "AND pid <> pg_backend_pid()"
        )
        return killed
    finally:
        await conn.close()


async def test_dead_pooled_connections_are_discarded(
    app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
) -> None:
    owner = await new_user("user")
    task = await create_task(client, owner)
    path = f"/api/v1/tasks/{task['id']}"
    # Fill the pool with several idle connections, then kill them all.
    warm = await asyncio.gather(*(client.get(path, headers=owner.headers) for _ in range(8)))
    assert {r.status_code for r in warm} == {200}
    assert await _kill_pooled_connections(app) >= 1

    statuses = []
    for _ in range(30):
        response = await client.get(path, headers=owner.headers)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "1"
    # A dead connection costs at most the request that found it (503, retry), and
    # each is found once: afterwards every read succeeds on fresh connections.
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-10:] == [200] * 10, statuses
    assert statuses.count(503) <= 8, statuses
    # Connections this test did not reach are still dead in the pool: start the next
    # tests on a fresh one.
    await app.state.db.primary.dispose()
