"""What each published event sets in motion: the jobs to enqueue for it.

Job keys derive from the event id (and the webhook), so an event delivered twice (the
relay crashed between publishing and marking it) yields the same keys, and the job
ledger runs each once.
"""

from __future__ import annotations

import uuid
from typing import Any

from taskhub_api.db import Database
from taskhub_api.events.schemas import TASK_EVENTS, USER_EVENTS
from taskhub_api.identity.principal import Principal, Role
from taskhub_api.jobs.schemas import JobRequest
from taskhub_api.notifications.jobs import assignment_job, welcome_job
from taskhub_api.tasks.policy import can_read
from taskhub_api.webhooks.jobs import delivery_job
from taskhub_api.webhooks.repository import WebhookRepository
from taskhub_api.webhooks.service import REDELIVERY_REQUESTED


def _uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value is not None else None


def _may_see(owner: Principal, event: dict[str, Any]) -> bool:
    """A webhook gets task events of tasks its owner may read, user events if its
    owner is an admin."""
    if event["type"] in USER_EVENTS:
        return owner.is_admin
    task = event["payload"]["task"]
    return can_read(
        owner, {"owner_id": _uuid(task["owner_id"]), "assignee_id": _uuid(task["assignee_id"])}
    )


async def jobs_for(db: Database, event: dict[str, Any]) -> list[JobRequest]:
    """``event`` is the published envelope (JSON types)."""
    event_id = uuid.UUID(event["id"])
    kind = event["type"]
    if kind == REDELIVERY_REQUESTED:
        p = event["payload"]
        return [
            delivery_job(
                uuid.UUID(p["webhook_id"]), uuid.UUID(p["event_id"]), uuid.UUID(p["delivery_id"])
            )
        ]
    jobs: list[JobRequest] = []
    if kind == "user.registered":
        jobs.append(welcome_job(event_id))
    if kind == "task.assigned":
        jobs.append(assignment_job(event_id))
    if kind in TASK_EVENTS or kind in USER_EVENTS:
        async with db.read_sessions() as session:
            subscribers = await WebhookRepository(session).subscribers(kind)
        for hook in subscribers:
            owner = Principal(
                id=hook["owner_id"], username="", roles=frozenset(Role(r) for r in hook["roles"])
            )
            if _may_see(owner, event):
                jobs.append(delivery_job(hook["id"], event_id))
    return jobs
