"""Hot write statements run on the asyncpg connection under the write session
(``driver_connection``): in the session's own transaction, committed and rolled back
with it, before and after a commit. This holds the contract with SQLAlchemy's asyncpg
adapter (its lazily begun transaction) to the pinned version."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from taskhub_api.db import Database, WriteSession, driver_connection
from taskhub_api.events.repository import record_event
from taskhub_api.tasks.repository import TaskRepository
from tests.api.conftest import NewUser


class Rollback(Exception):
    pass


async def _events_of(db: Database, aggregate_id: uuid.UUID) -> int:
    async with db.transaction() as session:
        found = await session.execute(
            text("SELECT count(*) FROM event WHERE aggregate_id = :id"), {"id": aggregate_id}
        )
        return int(found.scalar_one())


async def _txid(session: WriteSession) -> int:
    return int((await session.execute(text("SELECT txid_current()"))).scalar_one())


async def _record(session: WriteSession, aggregate_id: uuid.UUID) -> None:
    await record_event(
        await driver_connection(session),
        type="test.driver",
        aggregate_type="test",
        aggregate_id=aggregate_id,
        actor_id=None,
        payload={},
    )


async def test_driver_statements_share_the_session_transaction(app: FastAPI) -> None:
    db: Database = app.state.db
    async with db.transaction() as session:
        # First statement of the transaction on the driver: BEGIN is sent for it.
        conn = await driver_connection(session)
        driver_txid = int(await conn.fetchval("SELECT txid_current()"))
        assert await _txid(session) == driver_txid
        assert (await driver_connection(session)) is conn


async def test_driver_statements_roll_back_with_the_session(app: FastAPI) -> None:
    db: Database = app.state.db
    aggregate = uuid.uuid4()
    with pytest.raises(Rollback):
        async with db.transaction() as session:
            await _record(session, aggregate)
            await session.execute(text("SELECT 1"))
            await _record(session, aggregate)
            raise Rollback
    assert await _events_of(db, aggregate) == 0


async def test_after_a_commit_the_next_transaction_is_begun_again(app: FastAPI) -> None:
    db: Database = app.state.db
    committed, rolled_back = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(Rollback):
        async with db.transaction() as session:
            await _record(session, committed)
            await session.commit()  # as the refresh-token reuse path does mid-request
            await _record(session, rolled_back)
            raise Rollback
    assert await _events_of(db, committed) == 1
    assert await _events_of(db, rolled_back) == 0


async def test_task_insert_returns_the_row_as_the_api_serves_it(
    app: FastAPI, new_user: NewUser
) -> None:
    db: Database = app.state.db
    owner = await new_user("user")
    values = {
        "owner_id": owner.id,
        "assignee_id": None,
        "title": "driver",
        "description": "",
        "status": "todo",
        "priority": "high",
        "labels": ["a"],
        "due_at": None,
    }
    async with db.transaction() as session:
        row = await TaskRepository(session).insert(values)
    assert {k: row[k] for k in values} == values
    assert row["version"] == 1
    assert isinstance(row["id"], uuid.UUID)


async def test_a_connection_lost_before_begin_is_discarded_and_reported_as_lost(
    app: FastAPI,
) -> None:
    db: Database = app.state.db
    url = db.primary.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with pytest.raises(sa_exc.DBAPIError) as lost:
        async with db.transaction() as session:
            await session.connection()  # checked out; nothing sent yet
            killer = await asyncpg.connect(url)
            try:
                killed = await killer.fetch(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'taskhub' "
                    "AND state = 'idle' AND pid <> pg_backend_pid()"
                )
                # Every idle connection of the warm pool dies, as in a server restart.
                # Once their backends are gone, the pool sees them closed.
                pids = [row["pid"] for row in killed]
                for _ in range(100):
                    gone = not await killer.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", pids
                    )
                    await asyncio.sleep(0.05 if not gone else 0.2)
                    if gone:
                        break
            finally:
                await killer.close()
            await driver_connection(session)
    # What the app's handler answers with 503, and the next unit of work gets a
    # working connection.
    assert lost.value.connection_invalidated
    aggregate = uuid.uuid4()
    async with db.transaction() as session:
        await _record(session, aggregate)
    assert await _events_of(db, aggregate) == 1
