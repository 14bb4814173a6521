"""The outbox relay: publishes committed events to ``taskhub.events`` with publisher
confirms, then marks them published.

Several relays may run at once. The outbox is split into partitions by aggregate; a
relay takes a partition with a transaction-scoped advisory lock and publishes that
partition's pending rows in commit order. So no two relays publish the same row, and
an aggregate's events leave in order. A crash after publishing but before the mark
commits republishes the batch: consumers dedupe by event id (and jobs by key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from sqlalchemy.engine import make_url

from taskhub_api.db import Database
from taskhub_api.events.repository import NOTIFY_CHANNEL, OutboxRepository
from taskhub_api.events.schemas import envelope
from taskhub_api.kit.jsonenc import dumps
from taskhub_api.settings import Settings
from taskhub_api.tracing import message_headers
from taskhub_workers import topology
from taskhub_workers.relay_metrics import RELAY_CONFIRM, RELAY_FAILED, RELAY_PUBLISHED

log = logging.getLogger("taskhub.relay")
PUBLISH_TIMEOUT = 10.0


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Relay:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def connect(self) -> None:
        connection = await aio_pika.connect(self.settings.broker.url, timeout=10)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                topology.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            # The dispatcher's queue exists before the first event is published, so
            # no event finds the exchange without a queue.
            await declare_dispatch_queue(channel)
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel, self._exchange = connection, channel, exchange  # type: ignore[assignment]

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = self._exchange = None

    async def _publish(self, event: dict[str, Any]) -> None:
        assert self._exchange is not None  # noqa: S101 - connect() first
        message = aio_pika.Message(
            body=dumps(envelope(event)),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(event["id"]),
            type=event["type"],
            timestamp=event["occurred_at"],
            headers={
                "aggregate_id": str(event["aggregate_id"]),
                "seq": event["seq"],
                # traceparent (with tracing on in the API) and x-request-id
                **message_headers(event.get("trace_context")),
            },
        )
        # Returns once the broker confirmed (publisher confirms); raises on a nack.
        started = time.perf_counter()
        try:
            await self._exchange.publish(
                message, routing_key=event["type"], timeout=PUBLISH_TIMEOUT
            )
        except Exception:
            RELAY_FAILED.inc()
            raise
        RELAY_CONFIRM.observe(time.perf_counter() - started)
        RELAY_PUBLISHED.inc()

    async def drain(self) -> int:
        """Publishes every pending event; the number published."""
        if self._exchange is None:
            await self.connect()
        async with self.db.read_sessions() as session:
            partitions = await OutboxRepository(session).pending_partitions()
        # Relays starting together should not all queue for the same partition first.
        random.shuffle(partitions)
        published = 0
        batch = self.settings.broker.relay_batch_size
        for partition in partitions:
            while True:
                async with self.db.transaction() as session:
                    outbox = OutboxRepository(session)
                    if not await outbox.lock_partition(partition):
                        break  # another relay has it
                    rows = await outbox.pending(partition, batch)
                    for row in rows:
                        await self._publish(row)
                    await outbox.mark_published([row["id"] for row in rows])
                published += len(rows)
                if len(rows) < batch:
                    break
        return published

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until ``stop`` is set: woken by NOTIFY on commit, polling as a
        fallback, reconnecting to the broker and the database after failures."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake, stop))
        delay = 0.5
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    count = await self.drain()
                    if count:
                        log.info("published %s events", count)
                    delay = 0.5
                except Exception as exc:
                    log.warning("relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay)
                    await self.close()
                    await _wait_any(stop, None, delay)
                    delay = min(delay * 2, 10.0)
                    continue
                await _wait_any(stop, wake, self.settings.broker.relay_poll_seconds)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self.close()

    async def _listen(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        """Wakes the relay on every commit's NOTIFY, on ``db.listen_url`` (the primary
        itself: through PgBouncer in transaction mode no notification arrives). While
        it cannot connect the relay still runs, on its poll."""
        url = self.settings.db.listen_url or self.settings.db.url
        parsed = make_url(url)
        where = f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"  # no password
        failing = False
        while not stop.is_set():
            try:
                conn = await _listening(asyncpg_dsn(url), lambda *_: wake.set())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if not failing:  # once per outage, not every retry
                    log.warning(
                        "relay: cannot LISTEN on %s (%s: %s); polling every %.1fs",
                        where,
                        type(exc).__name__,
                        exc,
                        self.settings.broker.relay_poll_seconds,
                    )
                failing = True
                await _wait_any(stop, None, 2.0)
                continue
            log.info("relay: listening for NOTIFY %s on %s", NOTIFY_CHANNEL, where)
            failing = False
            wake.set()  # commits made while no one listened
            try:
                while not stop.is_set() and not conn.is_closed():
                    await _wait_any(stop, None, 5.0)
                if not stop.is_set():
                    log.warning("relay: lost the LISTEN connection to %s", where)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()


async def _listening(dsn: str, callback: Any) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.add_listener(NOTIFY_CHANNEL, callback)
    except BaseException:
        await conn.close()
        raise
    return conn


async def declare_dispatch_queue(channel: AbstractChannel) -> aio_pika.abc.AbstractQueue:
    dlx = await channel.declare_exchange(
        topology.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(
        topology.DISPATCH_QUEUE + topology.DLQ_SUFFIX,
        durable=True,
        arguments=topology.DLQ_ARGUMENTS,
    )
    await dlq.bind(dlx, routing_key=topology.DISPATCH_QUEUE)
    queue = await channel.declare_queue(
        topology.DISPATCH_QUEUE,
        durable=True,
        arguments=topology.work_queue_arguments(topology.DISPATCH_QUEUE),
    )
    await queue.bind(topology.EVENTS_EXCHANGE, routing_key="#")
    return queue


async def _wait_any(stop: asyncio.Event, other: asyncio.Event | None, seconds: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if other is not None:
        waiters.append(asyncio.create_task(other.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
