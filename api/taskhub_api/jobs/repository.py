"""All SQL of the job ledger (``job_execution``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_CLAIM = text(
    """
    INSERT INTO job_execution AS j (key, name, status, owner, lease_expires_at, attempts)
    VALUES (:key, :name, 'running', :owner, now() + CAST(:lease AS interval), 1)
    ON CONFLICT (key) DO UPDATE
       SET status = 'running', owner = excluded.owner,
           lease_expires_at = excluded.lease_expires_at,
           attempts = j.attempts + 1, updated_at = now()
     WHERE j.status IN ('failed', 'dead')
        OR (j.status = 'running' AND j.lease_expires_at <= now())
    RETURNING attempts
    """
)


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, key: str, name: str, owner: str, lease: timedelta) -> int | None:
        """The attempt number when this caller now owns the key (new, failed before,
        or its previous owner's lease ran out); None when it is done or leased.

        Atomic: two claimers of one new key serialise on the primary key, and the
        second sees the first's row through ``ON CONFLICT``.
        """
        row = await self.session.execute(
            _CLAIM, {"key": key, "name": name, "owner": owner, "lease": lease}
        )
        attempts = row.scalar_one_or_none()
        return int(attempts) if attempts is not None else None

    async def state(self, key: str) -> tuple[str, datetime | None, datetime] | None:
        """(status, lease expiry, database now) of the key."""
        row = (
            await self.session.execute(
                text("SELECT status, lease_expires_at, now() FROM job_execution WHERE key = :key"),
                {"key": key},
            )
        ).one_or_none()
        return (row[0], row[1], row[2]) if row is not None else None

    async def complete(self, key: str, owner: str) -> bool:
        """Marks the job done if this owner still holds it (False: the lease was lost)."""
        row = await self.session.execute(
            text(
                "UPDATE job_execution SET status = 'done', completed_at = now(), "
                "updated_at = now(), lease_expires_at = NULL, last_error = NULL "
                "WHERE key = :key AND owner = :owner AND status = 'running' RETURNING 1"
            ),
            {"key": key, "owner": owner},
        )
        return row.first() is not None

    async def release(self, key: str, owner: str, status: str, error: str) -> None:
        """Records a failed attempt (``failed``) or exhausted retries (``dead``)."""
        await self.session.execute(
            text(
                "UPDATE job_execution SET status = :status, last_error = :error, "
                "lease_expires_at = NULL, updated_at = now() "
                "WHERE key = :key AND owner = :owner AND status = 'running'"
            ),
            {"key": key, "owner": owner, "status": status, "error": error[:4000]},
        )

    async def mark_dead(self, key: str, error: str) -> None:
        await self.session.execute(
            text(
                "UPDATE job_execution SET status = 'dead', last_error = :error, "
                "lease_expires_at = NULL, updated_at = now() "
                "WHERE key = :key AND status <> 'done'"
            ),
            {"key": key, "error": error[:4000]},
        )
