from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from taskhub_api.kit.model import Base


class JobExecution(Base):
    """The exactly-once ledger: one row per deterministic job key.

    ``running`` with a live lease: a worker owns the job. ``failed``: the last attempt
    failed and the lease was released. ``dead``: retries exhausted (the message is in
    its DLQ). ``done``: finished; later deliveries of the key are acknowledged unrun.
    """

    __tablename__ = "job_execution"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'failed', 'dead', 'done')", name="status_known"),
        Index("ix_job_execution_finished", "updated_at", postgresql_where=text("status = 'done'")),
    )

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # Who holds the lease: unique per claim, so a late worker cannot complete a job
    # that another took over.
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
