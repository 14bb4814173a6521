"""The hot paths take bare asyncpg connections from SQLAlchemy's pool: a connection that
dies under them is discarded, never handed out again, and never turns into a 500; a read
that meets one is retried on another connection, a write is not; and when requests
outnumber connections, they are served in arrival order."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from taskhub_api.db import (
    Database,
    ReadEngine,
    WriteSession,
    create_engine,
    raw_connection,
)
from taskhub_api.dbhealth import DatabaseMonitor, driver_dsn
from taskhub_api.dbpool import FairQueue
from taskhub_api.kit import internals
from taskhub_api.settings import Settings
from tests.api.conftest import NewUser, create_task
from tests.api.fastpaths import fast_paths


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
    # A dead connection costs no read a 503: the pool replaces those it knows are
    # closed at checkout, and a read meeting one it did not know of runs again.
    assert statuses == [200] * 30, statuses
    # Connections this test did not reach are still dead in the pool: start the next
    # tests on a fresh one.
    await app.state.db.primary.dispose()


async def test_waiting_requests_get_connections_in_arrival_order() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    queue.put_nowait("conn")
    conn = await greenlet_spawn(queue.get)
    requests = [asyncio.create_task(greenlet_spawn(queue.get, True, 5.0)) for _ in range(3)]
    await asyncio.sleep(0)  # all three are waiting

    def release_and_ask_again() -> str:  # as a request does between its two reads
        queue.put_nowait(conn)
        return queue.get(True, 5.0)

    requests.append(asyncio.create_task(greenlet_spawn(release_and_ask_again)))
    served: list[int] = []
    while len(served) < len(requests):
        done, _ = await asyncio.wait(
            [r for i, r in enumerate(requests) if i not in served],
            timeout=2,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert len(done) == 1, "one connection, one request served at a time"
        finished = done.pop()
        served.append(requests.index(finished))
        queue.put_nowait(finished.result())
    # The returning request queued behind the three that were waiting.
    assert served == [0, 1, 2, 3]


async def test_a_waiter_that_gives_up_loses_no_connection() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, True, 0.05)
    # Cancelled while waiting: skipped when a connection comes back.
    cancelled = asyncio.create_task(greenlet_spawn(queue.get, True, 5.0))
    await asyncio.sleep(0)
    cancelled.cancel()
    queue.put_nowait("conn")
    assert await greenlet_spawn(queue.get, True, 0.5) == "conn"
    # Handed the connection, then cancelled before it could run: it passes it on.
    handed = asyncio.create_task(greenlet_spawn(queue.get, True, 5.0))
    await asyncio.sleep(0)
    queue.put_nowait("conn")
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert await greenlet_spawn(queue.get, True, 0.5) == "conn"
    assert not queue._waiters


async def test_the_pool_starves_no_request_under_contention(settings: Settings) -> None:
    """Eight times more requests than connections, each taking two connections in turn
    with work in between (the principal, then the task): no checkout waits much longer
    than its turn. With SQLAlchemy's own queue a returning request takes the connection
    past the waiters, and some wait for most of the run (here 0.8 of 0.9 s; under real
    load, seconds and the pool timeout: a 503)."""
    with fast_paths(fair_pool=True):
        engine = create_engine(
            settings.db.url,
            settings.db.model_copy(update={"pool_size": 8, "max_overflow": 0, "pool_timeout": 5.0}),
        )
    waits: list[float] = []

    async def checkout() -> None:
        started = time.perf_counter()
        async with raw_connection(engine) as conn:
            waits.append(time.perf_counter() - started)
            await conn.fetchval("SELECT 1")

    async def request() -> None:
        for _ in range(20):
            await checkout()
            sum(range(20_000))  # the request's own work between its two reads
            await checkout()

    started = time.perf_counter()
    try:
        await asyncio.gather(*(request() for _ in range(64)))
    finally:
        await engine.dispose()
    elapsed = time.perf_counter() - started
    assert max(waits) < 0.25 * elapsed, f"longest wait {max(waits):.2f} s of {elapsed:.2f} s"
    assert isinstance(internals.pool_queue(engine.pool), FairQueue)


@pytest.fixture
async def one_connection(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine of its own with a single pooled connection: the one a test kills is
    the one the next checkout gets."""
    engine = create_engine(
        settings.db.url, settings.db.model_copy(update={"pool_size": 1, "max_overflow": 0})
    )
    try:
        yield engine
    finally:
        await engine.dispose()


def _terminate_unnoticed(settings: Settings, pid: int) -> None:
    """Terminates backend ``pid`` and waits until it is gone, from psql and blocking
    this event loop meanwhile: the app's connection has not seen its end yet, as when
    a server restarts between two requests faster than the event loop looks."""
    subprocess.run(
        [
            "psql",
            driver_dsn(settings.db.url),
            "-Atqc",
            f"SELECT pg_terminate_backend({int(pid)}, 5000)",
        ],
        check=True,
        timeout=10,
        capture_output=True,
    )


def _retries() -> float:
    return REGISTRY.get_sample_value("taskhub_db_reads_total", {"target": "retry"}) or 0.0


async def _backend_pid(engine: AsyncEngine, hold: float = 0) -> int:
    async with raw_connection(engine) as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        await asyncio.sleep(hold)  # so that concurrent callers get connections of their own
        return pid


class TestDeadConnections:
    async def test_a_read_that_meets_one_is_retried_once_on_a_fresh_one(
        self, settings: Settings, one_connection: AsyncEngine
    ) -> None:
        dead = await _backend_pid(one_connection)
        _terminate_unnoticed(settings, dead)
        retries = _retries()
        monitor = DatabaseMonitor(settings.db, replica=False)
        reader = ReadEngine(one_connection, "primary", 0, None, monitor)

        pid = await reader.run(lambda conn: conn.fetchval("SELECT pg_backend_pid()"))

        assert pid != dead
        assert _retries() == retries + 1

    async def test_a_read_that_meets_several_is_retried_on_each_then_a_fresh_one(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the backends are killed or the server restarts, the pool's next idle
        connections may be dead too, and not all of them seen as closed yet (their
        backends end one after the other): the read goes on through each, as many as
        the pool held, then on a new connection, and never answers 503."""
        engine = create_engine(
            settings.db.url, settings.db.model_copy(update={"pool_size": 4, "max_overflow": 0})
        )
        try:
            async with asyncio.TaskGroup() as group:  # four idle connections in the pool
                held = [group.create_task(_backend_pid(engine, hold=0.1)) for _ in range(4)]
            dead = {task.result() for task in held}
            assert len(dead) == 4
            for pid in dead:
                _terminate_unnoticed(settings, pid)
            # None of them is known to be closed when it is checked out.
            monkeypatch.setattr(asyncpg.Connection, "is_closed", lambda self: False)
            retries = _retries()
            monitor = DatabaseMonitor(settings.db, replica=False)
            reader = ReadEngine(engine, "primary", 0, None, monitor)

            pid = await reader.run(lambda conn: conn.fetchval("SELECT pg_backend_pid()"))

            assert pid not in dead
            assert _retries() == retries + 4
        finally:
            monkeypatch.undo()
            await engine.dispose()

    async def test_a_write_that_meets_one_is_not_sent_again(
        self, settings: Settings, one_connection: AsyncEngine
    ) -> None:
        async with one_connection.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS pool_write_probe (n int)"))
            await conn.execute(text("TRUNCATE pool_write_probe"))
        sessions = async_sessionmaker(one_connection, class_=WriteSession)
        _terminate_unnoticed(settings, await _backend_pid(one_connection))

        with pytest.raises(sa_exc.DBAPIError) as failed:
            async with sessions() as session, session.begin():
                await session.execute(text("INSERT INTO pool_write_probe VALUES (1)"))
        assert failed.value.connection_invalidated  # answered 503 with Retry-After

        async with one_connection.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM pool_write_probe"))
            await conn.execute(text("DROP TABLE pool_write_probe"))
            await conn.commit()
        assert count == 0

    async def test_a_connection_closed_while_idle_is_replaced_at_checkout(
        self, settings: Settings, one_connection: AsyncEngine
    ) -> None:
        dead = await _backend_pid(one_connection)
        _terminate_unnoticed(settings, dead)
        await asyncio.sleep(0.05)  # now the event loop has seen the connection close

        # Writes too: nothing was sent on the dead connection, so nothing is at risk.
        sessions = async_sessionmaker(one_connection, class_=WriteSession)
        async with sessions() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))

        assert pid != dead
