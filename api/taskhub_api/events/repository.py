"""All SQL of the event log and the outbox."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.db import DriverStatement
from taskhub_api.events.models import PARTITIONS
from taskhub_api.kit.jsonenc import dumps
from taskhub_api.tracing import capture

NOTIFY_CHANNEL = "taskhub_outbox"
# Advisory-lock namespace of the relay's partition locks (any constant int4).
RELAY_LOCK_NAMESPACE = 0x7A5C

# The event, its outbox row and the relay's wake-up, in one round trip (PostgreSQL runs
# data-modifying WITH clauses once, whether or not the main query reads them; the
# notification is delivered only if the transaction commits).
_RECORD = DriverStatement.compile(
    text(
        """
    WITH e AS (
        INSERT INTO event (id, type, aggregate_type, aggregate_id, actor_id, payload)
        VALUES (:id, :type, :aggregate_type, :aggregate_id, :actor_id, CAST(:payload AS jsonb))
        RETURNING id, seq
    ), o AS (
        INSERT INTO outbox (event_id, seq, partition, trace_context)
        SELECT id, seq, :partition, CAST(:trace_context AS jsonb) FROM e
    )
    SELECT pg_notify(:channel, '')
    """
    )
)
_COLUMNS = (
    "e.id, e.seq, e.type, e.aggregate_type, e.aggregate_id, e.occurred_at, e.actor_id, e.payload"
)


def partition_of(aggregate_id: uuid.UUID) -> int:
    return aggregate_id.int % PARTITIONS


async def record_event(
    conn: asyncpg.Connection,
    *,
    type: str,
    aggregate_type: str,
    aggregate_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    payload: Mapping[str, Any],
) -> uuid.UUID:
    """Writes the event and its outbox row in the transaction open on ``conn``; the
    relay is woken when (and only if) that transaction commits. The one way to record
    an event: in a session's transaction, ``conn`` is ``await driver_connection(session)``
    (the driver statement skips SQLAlchemy's per-execution work on the hot create path)."""
    event_id = uuid.uuid4()
    trace_context = capture()
    values = {
        "id": event_id,
        "type": type,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "actor_id": actor_id,
        "payload": dumps(payload).decode(),
        "partition": partition_of(aggregate_id),
        "trace_context": dumps(trace_context).decode() if trace_context else None,
        "channel": NOTIFY_CHANNEL,
    }
    await conn.execute(_RECORD.sql, *_RECORD.args(values))
    return event_id


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        row = (
            (
                await self.session.execute(
                    text(f"SELECT {_COLUMNS} FROM event e WHERE e.id = :id"),  # noqa: S608
                    {"id": event_id},
                )
            )
            .mappings()
            .one_or_none()
        )
        return dict(row) if row is not None else None

    async def history(
        self, aggregate_id: uuid.UUID, after_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """The aggregate's events, oldest first."""
        rows = await self.session.execute(
            text(
                f"SELECT {_COLUMNS} FROM event e WHERE e.aggregate_id = :aggregate_id "  # noqa: S608
                "AND e.seq > :after ORDER BY e.seq LIMIT :limit"
            ),
            {"aggregate_id": aggregate_id, "after": after_seq or 0, "limit": limit},
        )
        return [dict(r) for r in rows.mappings()]


class OutboxRepository:
    """What the relay and maintenance need."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def pending_partitions(self) -> list[int]:
        rows = await self.session.execute(
            text("SELECT DISTINCT partition FROM outbox WHERE published_at IS NULL")
        )
        return sorted(rows.scalars())

    async def lock_partition(self, partition: int) -> bool:
        """Takes the partition for this transaction, unless another relay has it."""
        got = await self.session.execute(
            text("SELECT pg_try_advisory_xact_lock(:ns, :partition)"),
            {"ns": RELAY_LOCK_NAMESPACE, "partition": partition},
        )
        return bool(got.scalar_one())

    async def pending(self, partition: int, limit: int) -> list[dict[str, Any]]:
        """The partition's unpublished events in commit order. Runs after
        ``lock_partition``, so its snapshot sees what the previous holder marked."""
        rows = await self.session.execute(
            text(
                f"SELECT {_COLUMNS}, o.trace_context "  # noqa: S608
                "FROM outbox o JOIN event e ON e.id = o.event_id "
                "WHERE o.partition = :partition AND o.published_at IS NULL "
                "ORDER BY o.seq LIMIT :limit FOR UPDATE OF o"
            ),
            {"partition": partition, "limit": limit},
        )
        return [dict(r) for r in rows.mappings()]

    async def mark_published(self, event_ids: Sequence[uuid.UUID]) -> None:
        await self.session.execute(
            text("UPDATE outbox SET published_at = now() WHERE event_id = ANY(:ids)"),
            {"ids": list(event_ids)},
        )

    async def pending_count(self) -> int:
        """Unpublished rows (the partial index on pending rows answers it)."""
        value = await self.session.execute(
            text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        )
        return int(value.scalar_one())

    async def oldest_pending(self) -> datetime | None:
        value = await self.session.execute(
            text(
                "SELECT min(e.occurred_at) FROM outbox o JOIN event e ON e.id = o.event_id "
                "WHERE o.published_at IS NULL"
            )
        )
        result: datetime | None = value.scalar_one()
        return result
