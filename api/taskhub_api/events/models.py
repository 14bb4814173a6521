"""Domain events: the audit log (``event``) and the outbox that publishes it.

A state change writes both rows in its own transaction. The relay publishes outbox rows
and marks them published; maintenance later deletes published outbox rows, while the
event itself stays as the resource's history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from taskhub_api.kit.model import Base

# Outbox rows are spread over this many partitions by aggregate; one relay at a time
# holds a partition, which keeps each aggregate's events in order.
PARTITIONS = 16


class Event(Base):
    __tablename__ = "event"
    __table_args__ = (Index("ix_event_aggregate", "aggregate_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Commit order per aggregate: writers lock the aggregate's row first.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), nullable=False, unique=True)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate_type: Mapped[str] = mapped_column(String(32), nullable=False)
    aggregate_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "partition",
            "seq",
            postgresql_where=text("published_at IS NULL"),
        ),
        Index(
            "ix_outbox_published_at",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
        ),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("event.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    partition: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The recording request's id and W3C trace context (taskhub_api.tracing.capture),
    # for the relay's message headers.
    trace_context: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
