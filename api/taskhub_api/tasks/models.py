from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Computed,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR, UUID
from sqlalchemy.orm import Mapped, mapped_column

from taskhub_api.kit.model import Base, TimestampMixin


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class TaskPriority(StrEnum):
    # Declaration order is the sort order of the PostgreSQL enum.
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


SEARCH_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, description), 'B')"
)
LIVE = text("deleted_at IS NULL")


class Task(TimestampMixin, Base):
    __tablename__ = "task"
    __table_args__ = (
        CheckConstraint(
            "char_length(title) BETWEEN 1 AND 200 AND btrim(title) <> ''", name="title_length"
        ),
        CheckConstraint("char_length(description) <= 10000", name="description_length"),
        CheckConstraint("cardinality(labels) <= 20", name="labels_count"),
        CheckConstraint("version >= 1", name="version_positive"),
        # One index per list query shape: the row-comparison keyset predicate
        # (created_at, id) < ($1, $2) walks these directly.
        Index("ix_task_owner_created", "owner_id", "created_at", "id", postgresql_where=LIVE),
        Index("ix_task_assignee_created", "assignee_id", "created_at", "id", postgresql_where=LIVE),
        # A regular user's list by each of the other sorts (one index per branch).
        Index("ix_task_owner_updated", "owner_id", "updated_at", "id", postgresql_where=LIVE),
        Index("ix_task_assignee_updated", "assignee_id", "updated_at", "id", postgresql_where=LIVE),
        Index("ix_task_owner_due", "owner_id", "due_at", "id", postgresql_where=LIVE),
        Index("ix_task_assignee_due", "assignee_id", "due_at", "id", postgresql_where=LIVE),
        Index(
            "ix_task_owner_priority",
            "owner_id",
            "priority",
            "created_at",
            "id",
            postgresql_where=LIVE,
        ),
        Index(
            "ix_task_assignee_priority",
            "assignee_id",
            "priority",
            "created_at",
            "id",
            postgresql_where=LIVE,
        ),
        Index("ix_task_created", "created_at", "id", postgresql_where=LIVE),
        Index("ix_task_updated", "updated_at", "id", postgresql_where=LIVE),
        Index("ix_task_due", "due_at", "id", postgresql_where=LIVE),
        Index("ix_task_priority", "priority", "created_at", "id", postgresql_where=LIVE),
        Index("ix_task_labels", "labels", postgresql_using="gin"),
        Index("ix_task_search", "search", postgresql_using="gin"),
        Index("ix_task_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("user.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    status: Mapped[TaskStatus] = mapped_column(
        Enum(TaskStatus, name="task_status", values_callable=_values),
        nullable=False,
        server_default=TaskStatus.TODO.value,
    )
    priority: Mapped[TaskPriority] = mapped_column(
        Enum(TaskPriority, name="task_priority", values_callable=_values),
        nullable=False,
        server_default=TaskPriority.MEDIUM.value,
    )
    labels: Mapped[list[str]] = mapped_column(
        ARRAY(String(50)), nullable=False, server_default=text("'{}'::varchar[]")
    )
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    search: Mapped[str] = mapped_column(TSVECTOR, Computed(SEARCH_VECTOR, persisted=True))
