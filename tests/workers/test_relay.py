"""The outbox relay against a real broker: parallel relays, a crash between publish and
mark, a broker restart in the middle of a stream of changes, and its NOTIFY wake-up on
the test data stack (primary and PgBouncer in transaction mode)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
from alembic import command

from taskhub_api.db import Database, driver_connection
from taskhub_api.events.repository import OutboxRepository, record_event
from taskhub_api.schema import alembic_config
from taskhub_api.settings import BrokerSettings, DatabaseSettings, Settings
from taskhub_workers.relay import Relay
from tests import stack as data_stack
from tests.support.broker import Broker
from tests.support.db import CLEAN, asyncpg_dsn
from tests.support.users import NewUser
from tests.support.wait import eventually
from tests.workers.conftest import MailSink, Receiver, Stack, job_state
from tests.workers.helpers import create_webhook


@asynccontextmanager
async def tap(url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message published to ``taskhub.events`` while the block runs (a queue of
    the test's own, bound before anything is published)."""
    seen: list[dict[str, Any]] = []
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("taskhub.events", "topic", durable=True)
    queue = await channel.declare_queue(f"tap-{uuid.uuid4().hex[:6]}", exclusive=True)
    await queue.bind(exchange, "#")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append({"message_id": message.message_id, **orjson.loads(message.body)})
        await message.ack()

    await queue.consume(on_message)
    try:
        yield seen
    finally:
        await connection.close()


async def record_backlog(db: Database, aggregates: int, per_aggregate: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(aggregates)]
    for n in range(per_aggregate):
        for aggregate in ids:
            async with db.transaction() as session:
                await record_event(
                    await driver_connection(session),
                    type="task.updated",
                    aggregate_type="task",
                    aggregate_id=aggregate,
                    actor_id=None,
                    payload={"n": n},
                )
    return ids


class TestRelay:
    async def test_parallel_relays_publish_each_event_once_in_order_per_aggregate(
        self, stack: Stack, db: Database, database_url: str
    ) -> None:
        await record_backlog(db, aggregates=12, per_aggregate=25)
        settings = stack.settings(database_url).model_copy(deep=True)
        settings.broker.relay_batch_size = 7  # many small transactions interleave
        relays = [Relay(settings, db) for _ in range(3)]
        async with tap(stack.broker_url) as seen:
            counts = await asyncio.gather(*(relay.drain() for relay in relays))
            await eventually(lambda: _ready(len(seen) >= 300), 30, "300 events")
            await asyncio.sleep(0.5)
        for relay in relays:
            await relay.close()
        assert sum(counts) == 300
        assert sum(1 for c in counts if c) >= 2  # the relays really shared the work
        assert len(seen) == 300
        assert len({m["id"] for m in seen}) == 300
        by_aggregate: dict[str, list[int]] = defaultdict(list)
        for message in seen:
            by_aggregate[message["aggregate_id"]].append(message["payload"]["n"])
        assert all(ns == list(range(25)) for ns in by_aggregate.values())
        async with db.read_sessions() as session:
            assert await OutboxRepository(session).pending_partitions() == []

    async def test_crash_between_publish_and_mark_repeats_the_event_but_not_its_effect(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        db: Database,
        database_url: str,
        smtp: tuple[MailSink, int],
        pg: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        response = await client.post(
            "/api/v1/auth/register",
            json={"username": "crashy", "email": "crashy@example.com", "password": "pw-long-42x"},
        )
        assert response.status_code == 201
        settings = stack.settings(database_url)
        stack.worker(queues="notifications")
        async with tap(stack.broker_url) as seen:

            async def crash(self: OutboxRepository, ids: Any) -> None:
                raise SystemExit("relay killed after publishing, before marking")

            with monkeypatch.context() as patch:
                patch.setattr(OutboxRepository, "mark_published", crash)
                crashed = Relay(settings, db)
                with pytest.raises(SystemExit):
                    await crashed.drain()
                await crashed.close()
            async with db.read_sessions() as session:
                assert await OutboxRepository(session).pending_partitions() != []
            stack.relay()  # a fresh relay (and the dispatcher) resumes
            await eventually(lambda: _ready(len(seen) == 2), 30, "the event twice")
        assert seen[0]["message_id"] == seen[1]["message_id"]
        key = f"notifications.welcome_email:{seen[0]['id']}"

        async def done() -> bool:
            state = await job_state(pg, key)
            return state is not None and state["status"] == "done"

        await eventually(done, 30, "the welcome mail job")
        await eventually(
            lambda: _ready("already done" in stack.log_text()), 30, "the duplicate to be dropped"
        )
        sink, _ = smtp
        assert len(sink.to("crashy@example.com")) == 1, stack.log_text()


class TestBrokerRestart:
    async def test_every_event_is_delivered_once_across_a_broker_restart(
        self,
        stack: Stack,
        broker: Broker,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
    ) -> None:
        path = "/restart-stream"
        owner = await new_user()
        await create_webhook(client, owner, receiver.url(path), ["task.created"])
        stack.worker(queues="webhooks")
        stack.relay()
        created: list[str] = []

        async def produce(count: int) -> None:
            for n in range(count):
                response = await client.post(
                    "/api/v1/tasks", json={"title": f"stream {n}"}, headers=owner.headers
                )
                assert response.status_code == 201
                created.append(response.json()["id"])
                await asyncio.sleep(0.05)

        await produce(15)
        restart = asyncio.create_task(asyncio.to_thread(_restart, broker))
        await produce(30)  # while the broker is down and coming back
        await restart
        await produce(15)

        def task_ids() -> list[str]:
            return [orjson.loads(r.body)["payload"]["task"]["id"] for r in receiver.at(path)]

        await eventually(
            lambda: _ready(set(task_ids()) == set(created)), 120, "every event", interval=0.5
        )
        await asyncio.sleep(2)
        deliveries = {r.headers["X-TaskHub-Delivery"] for r in receiver.at(path)}
        assert len(created) == 60
        assert len(deliveries) == 60, stack.log_text()  # one delivery (idempotency key) each
        assert sorted(set(task_ids())) == sorted(created)
        # The outage was real: the relay lost the broker and reconnected.
        assert "retrying in" in stack.log_text()


@pytest.fixture(scope="module")
def stack_database() -> Iterator[None]:
    """The test data stack's primary and PgBouncer (transaction mode), migrated."""
    data_stack.devstack("start", "primary")
    data_stack.devstack("start", "pgbouncer")
    command.upgrade(alembic_config(data_stack.PRIMARY_URL), "head")
    yield


@pytest.fixture
async def bouncer_db(stack_database: None) -> AsyncIterator[Database]:
    """The stack's database through PgBouncer, as the API and relay use it in
    `make dev` and in the chart; empty tables."""
    conn = await asyncpg.connect(asyncpg_dsn(data_stack.PRIMARY_URL))
    try:
        await conn.execute(CLEAN)
    finally:
        await conn.close()
    database = Database(
        DatabaseSettings(url=data_stack.BOUNCER_URL, statement_cache_size=0, warm_up_seconds=0)
    )
    try:
        yield database
    finally:
        await database.dispose()


class TestWakeUp:
    """A commit's NOTIFY wakes the relay at once, but only when it LISTENs on the
    primary: with a poll of 30 s, an event published within seconds was woken."""

    @asynccontextmanager
    async def running(
        self, broker: Broker, db: Database, listen_url: str | None, poll: float = 30.0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        settings = Settings(
            db=DatabaseSettings(
                url=data_stack.BOUNCER_URL, statement_cache_size=0, listen_url=listen_url
            ),
            broker=BrokerSettings(url=broker.new_vhost(), relay_poll_seconds=poll),
            log_json=False,
        )
        stop = asyncio.Event()
        async with tap(settings.broker.url) as seen:
            run = asyncio.create_task(Relay(settings, db).run(stop))
            try:
                yield seen
            finally:
                stop.set()
                await asyncio.wait_for(run, 15)

    async def listening(self, caplog: pytest.LogCaptureFixture, where: str) -> None:
        def logged() -> bool:
            return any(
                "listening for NOTIFY" in r.getMessage() and where in r.getMessage()
                for r in caplog.records
            )

        await eventually(lambda: _ready(logged()), 15, f"the listener on {where}")
        await asyncio.sleep(0.5)  # the relay's first drains are over: it waits on its poll

    async def record(self, db: Database) -> uuid.UUID:
        async with db.transaction() as session:
            return await record_event(
                await driver_connection(session),
                type="task.updated",
                aggregate_type="task",
                aggregate_id=uuid.uuid4(),
                actor_id=None,
                payload={},
            )

    async def test_a_notify_on_the_primary_wakes_the_relay_before_its_poll(
        self, broker: Broker, bouncer_db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "taskhub.relay")
        async with self.running(broker, bouncer_db, data_stack.PRIMARY_URL) as seen:
            await self.listening(caplog, f"127.0.0.1:{data_stack.PRIMARY_PORT}/")
            for _ in range(3):
                started = time.monotonic()
                event_id = str(await self.record(bouncer_db))
                await eventually(
                    lambda event_id=event_id: _ready(any(m["id"] == event_id for m in seen)),
                    5,
                    "the event",
                    interval=0.02,
                )
                assert time.monotonic() - started < 2.0

    async def test_through_pgbouncer_alone_no_notify_arrives(
        self, broker: Broker, bouncer_db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "taskhub.relay")
        # listen_url unset: the relay LISTENs on db.url, PgBouncer in transaction mode.
        async with self.running(broker, bouncer_db, None) as seen:
            await self.listening(caplog, f"127.0.0.1:{data_stack.PGBOUNCER_PORT}/")
            await self.record(bouncer_db)
            await asyncio.sleep(3)
            assert seen == []  # only the poll, 30 s away, would publish it

    async def test_a_listener_that_cannot_connect_leaves_the_relay_polling(
        self, broker: Broker, bouncer_db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        closed = "postgresql+asyncpg://postgres:hunter2-secret@127.0.0.1:1/taskhub"
        async with self.running(broker, bouncer_db, closed, poll=0.5) as seen:
            await self.record(bouncer_db)
            await eventually(lambda: _ready(len(seen) == 1), 10, "the polled event")
        messages = [r.getMessage() for r in caplog.records if r.name == "taskhub.relay"]
        assert any("cannot LISTEN on 127.0.0.1:1/taskhub" in m for m in messages), messages
        assert not any("hunter2" in m for m in messages)


def _restart(broker: Broker) -> None:
    broker.stop()
    broker.start()


async def _ready(value: bool) -> bool:
    return value
