"""The exactly-once ledger on its own: atomic claims, lease take-over, lost leases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import Database
from taskhub_api.jobs.ledger import Claim, JobBusy, JobContext, LeaseLost, claim
from taskhub_api.maintenance import jobs as maintenance
from taskhub_api.settings import Settings
from tests.support.users import NewUser, create_task


@pytest.fixture
def context(app: FastAPI, settings: Settings) -> JobContext:
    db: Database = app.state.db
    return JobContext(settings=settings, db=db)


async def status(db: Database, key: str) -> tuple[str, int]:
    async with db.primary.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, attempts FROM job_execution WHERE key = :k"), {"k": key}
            )
        ).one()
    return row[0], row[1]


class TestClaim:
    async def test_concurrent_claims_of_one_key_have_one_winner(self, context: JobContext) -> None:
        async def try_claim() -> Claim | None:
            try:
                return await claim(context, "test.job:1", "test.job")
            except JobBusy:
                return None

        results = await asyncio.gather(*(try_claim() for _ in range(8)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0].attempt == 1
        async with winners[0], context.db.transaction() as session:
            await winners[0].complete(session)
        assert await claim(context, "test.job:1", "test.job") is None  # done: skipped
        assert await status(context.db, "test.job:1") == ("done", 1)

    async def test_busy_until_the_lease_expires_then_taken_over(self, context: JobContext) -> None:
        first = await claim(context, "test.job:2", "test.job")
        assert first is not None
        with pytest.raises(JobBusy) as busy:
            await claim(context, "test.job:2", "test.job")
        assert 1 <= busy.value.retry_in <= context.settings.broker.job_lease_seconds + 2
        async with context.db.transaction() as session:
            await session.execute(
                text("UPDATE job_execution SET lease_expires_at = now() - interval '1 second'")
            )
        second = await claim(context, "test.job:2", "test.job")
        assert second is not None and second.attempt == 2
        # The first owner lost its lease: its completion (and its writes) roll back.
        with pytest.raises(LeaseLost):
            async with context.db.transaction() as session:
                await session.execute(
                    text("INSERT INTO job_execution (key, name, status) VALUES ('fx', 'x', 'done')")
                )
                await first.complete(session)
        async with context.db.primary.connect() as conn:
            effect = await conn.execute(text("SELECT 1 FROM job_execution WHERE key = 'fx'"))
            assert effect.first() is None
        async with second, context.db.transaction() as session:
            await second.complete(session)
        assert await status(context.db, "test.job:2") == ("done", 2)

    async def test_a_failure_releases_the_lease_for_the_retry(self, context: JobContext) -> None:
        job = await claim(context, "test.job:3", "test.job")
        assert job is not None
        with pytest.raises(ValueError, match="boom"):
            async with job:
                raise ValueError("boom")
        assert await status(context.db, "test.job:3") == ("failed", 1)
        retry = await claim(context, "test.job:3", "test.job")
        assert retry is not None and retry.attempt == 2


class TestMaintenance:
    async def test_purges_expires_and_trims_what_is_old_enough(
        self, context: JobContext, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner = await new_user()
        tasks = [await create_task(client, owner) for _ in range(3)]
        old, recent, live = tasks
        for task in (old, recent):
            response = await client.delete(f"/api/v1/tasks/{task['id']}", headers=owner.headers)
            assert response.status_code == 204
        db = context.db
        long_ago = datetime.now(UTC) - timedelta(days=90)
        async with db.transaction() as session:
            await session.execute(
                text("UPDATE task SET deleted_at = :t WHERE id = :id"),
                {"t": long_ago, "id": old["id"]},
            )
            await session.execute(
                text(
                    "UPDATE outbox SET published_at = :t WHERE seq = (SELECT min(seq) FROM outbox)"
                ),
                {"t": long_ago},
            )
            await session.execute(
                text(
                    "INSERT INTO idempotency_key (user_id, key, scope, request_hash, status_code, "
                    "response_body, response_headers, expires_at) VALUES "
                    "(:u, 'old', 's', '\\x00', 201, '', '{}', now() - interval '1 hour'), "
                    "(:u, 'new', 's', '\\x00', 201, '', '{}', now() + interval '1 hour')"
                ),
                {"u": owner.id},
            )
        await maintenance.purge_deleted_tasks(context, job_key="m:1")
        await maintenance.expire_idempotency_keys(context, job_key="m:2")
        await maintenance.trim_outbox(context, job_key="m:3")
        async with db.primary.connect() as conn:
            ids = set((await conn.execute(text("SELECT id::text FROM task"))).scalars())
            keys = set((await conn.execute(text("SELECT key FROM idempotency_key"))).scalars())
            outbox = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            events = (await conn.execute(text("SELECT count(*) FROM event"))).scalar_one()
        assert ids == {recent["id"], live["id"]}
        assert keys == {"new"}
        assert (outbox, events) == (events - 1, 5)  # the history stays; the outbox row goes
        for key in ("m:1", "m:2", "m:3"):
            assert await status(db, key) == ("done", 1)
