"""task user sort indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 18:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: indexes only; the previous release's queries stay correct, and its list of a
# regular user's tasks by updated_at, due_at or priority walks them too.
#
# A regular user's list is two branches, owner and assignee, each walking a
# (user, sort key) index in order. Until now only the created_at sorts had one; the
# others read and sorted every task the user can see (2,800 rows for the bench's median
# user) for each page. Built in the migration's transaction like every revision (see
# env.py): on a large live table, where CREATE INDEX blocks writes for minutes, create
# them beforehand with CREATE INDEX CONCURRENTLY under the same names and definitions;
# IF NOT EXISTS then leaves them as they are.

INDEXES = {
    "ix_task_owner_updated": ["owner_id", "updated_at", "id"],
    "ix_task_assignee_updated": ["assignee_id", "updated_at", "id"],
    "ix_task_owner_due": ["owner_id", "due_at", "id"],
    "ix_task_assignee_due": ["assignee_id", "due_at", "id"],
    "ix_task_owner_priority": ["owner_id", "priority", "created_at", "id"],
    "ix_task_assignee_priority": ["assignee_id", "priority", "created_at", "id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(
            name,
            "task",
            columns,
            unique=False,
            postgresql_where=sa.text("deleted_at IS NULL"),
            if_not_exists=True,
        )


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(
            name, table_name="task", postgresql_where=sa.text("deleted_at IS NULL"), if_exists=True
        )
