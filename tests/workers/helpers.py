from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from taskhub_api.jobs.schemas import JobRequest
from taskhub_api.settings import Settings
from taskhub_workers.app import create_app
from tests.support.users import Actor


async def create_webhook(
    client: httpx.AsyncClient, owner: Actor, url: str, events: list[str], **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/webhooks", json={"url": url, "events": events, **extra}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()
    return hook


async def event_id(pg: asyncpg.Connection, aggregate_id: Any, type: str) -> uuid.UUID:
    value = await pg.fetchval(
        "SELECT id FROM event WHERE aggregate_id = $1 AND type = $2",
        uuid.UUID(str(aggregate_id)),
        type,
    )
    assert value is not None
    return uuid.UUID(str(value))


async def enqueue(settings: Settings, job: JobRequest, copies: int = 1) -> None:
    """Publishes ``copies`` identical messages of one job, from as many threads at once."""
    app = create_app(settings)

    def send() -> None:
        app.send_task(job.name, kwargs=job.kwargs, task_id=job.key)

    await asyncio.gather(*(asyncio.to_thread(send) for _ in range(copies)))
