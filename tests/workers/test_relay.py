"""The outbox relay against a real broker: parallel relays, a crash between publish and
mark, and a broker restart in the middle of a stream of changes."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import pytest

from taskhub_api.db import Database, driver_connection
from taskhub_api.events.repository import OutboxRepository, record_event
from taskhub_workers.relay import Relay
from tests.support.broker import Broker
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


def _restart(broker: Broker) -> None:
    broker.stop()
    broker.start()


async def _ready(value: bool) -> bool:
    return value
