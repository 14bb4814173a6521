"""outbox trace context

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: a nullable column; the previous release neither writes nor reads it.


def upgrade() -> None:
    # {"traceparent": ..., "request_id": ...} of the request that recorded the event,
    # carried on by the relay in the message headers.
    op.add_column(
        "outbox",
        sa.Column("trace_context", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("outbox", "trace_context")
