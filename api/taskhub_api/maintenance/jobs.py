"""Periodic housekeeping, scheduled by Celery beat. Each job is idempotent and keyed
by its schedule slot, so two beats (or a duplicate message) run it once per slot."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from taskhub_api.db import WriteSession
from taskhub_api.jobs.ledger import JobContext, claim
from taskhub_api.maintenance.repository import MaintenanceRepository

log = logging.getLogger("taskhub.maintenance")
PURGE_DELETED_TASKS = "maintenance.purge_deleted_tasks"
EXPIRE_IDEMPOTENCY_KEYS = "maintenance.expire_idempotency_keys"
TRIM_OUTBOX = "maintenance.trim_outbox"
_PURGE_BATCH = 1000


def slot_key(name: str, interval_seconds: float, now: float | None = None) -> str:
    slot = int((time.time() if now is None else now) // interval_seconds)
    return f"{name}:{slot}"


async def _run(
    context: JobContext,
    job_key: str | None,
    name: str,
    work: Callable[[WriteSession], Awaitable[str]],
) -> None:
    key = job_key or slot_key(name, context.settings.maintenance.interval_seconds)
    job = await claim(context, key, name)
    if job is None:
        return
    async with job, context.db.transaction() as session:
        outcome = await work(session)
        await job.complete(session)
    log.info("%s: %s", name, outcome)


async def purge_deleted_tasks(context: JobContext, *, job_key: str | None = None) -> None:
    retention = timedelta(days=context.settings.maintenance.deleted_task_retention_days)

    async def work(session: WriteSession) -> str:
        repo = MaintenanceRepository(session)
        total = 0
        while (purged := await repo.purge_deleted_tasks(retention, _PURGE_BATCH)) > 0:
            total += purged
        return f"purged {total} tasks deleted more than {retention} ago"

    await _run(context, job_key, PURGE_DELETED_TASKS, work)


async def expire_idempotency_keys(context: JobContext, *, job_key: str | None = None) -> None:
    async def work(session: WriteSession) -> str:
        return f"expired {await MaintenanceRepository(session).expire_idempotency_keys()} keys"

    await _run(context, job_key, EXPIRE_IDEMPOTENCY_KEYS, work)


async def trim_outbox(context: JobContext, *, job_key: str | None = None) -> None:
    settings = context.settings.maintenance

    async def work(session: WriteSession) -> str:
        repo = MaintenanceRepository(session)
        rows = await repo.trim_published_outbox(
            timedelta(hours=settings.published_outbox_retention_hours)
        )
        jobs = await repo.trim_finished_jobs(timedelta(days=settings.finished_job_retention_days))
        return f"trimmed {rows} published outbox rows and {jobs} finished job records"

    await _run(context, job_key, TRIM_OUTBOX, work)
