"""Housekeeping SQL over several domains' tables."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


class MaintenanceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _delete(self, sql: str, age: timedelta | None = None, limit: int = 0) -> int:
        params = {"age": age, "limit": limit}
        result = await self.session.execute(text(sql), {k: v for k, v in params.items() if v})
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def purge_deleted_tasks(self, older_than: timedelta, limit: int) -> int:
        """Hard-deletes tasks soft-deleted more than ``older_than`` ago (a batch)."""
        return await self._delete(
            "DELETE FROM task WHERE id IN (SELECT id FROM task "
            "WHERE deleted_at < now() - CAST(:age AS interval) "
            "ORDER BY deleted_at LIMIT :limit FOR UPDATE SKIP LOCKED)",
            older_than,
            limit,
        )

    async def expire_idempotency_keys(self) -> int:
        return await self._delete("DELETE FROM idempotency_key WHERE expires_at <= now()")

    async def trim_published_outbox(self, older_than: timedelta) -> int:
        return await self._delete(
            "DELETE FROM outbox WHERE published_at < now() - CAST(:age AS interval)", older_than
        )

    async def trim_finished_jobs(self, older_than: timedelta) -> int:
        return await self._delete(
            "DELETE FROM job_execution "
            "WHERE status = 'done' AND updated_at < now() - CAST(:age AS interval)",
            older_than,
        )
