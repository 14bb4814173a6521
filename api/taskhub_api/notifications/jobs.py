"""Mail jobs: a welcome mail on registration, a notice to a task's new assignee."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from taskhub_api.events.repository import EventRepository
from taskhub_api.jobs.ledger import JobContext, claim
from taskhub_api.jobs.schemas import JobRequest
from taskhub_api.notifications.email import compose, send
from taskhub_api.users.repository import UserRepository

log = logging.getLogger("taskhub.notifications")
WELCOME = "notifications.welcome_email"
ASSIGNMENT = "notifications.assignment_email"


def welcome_job(event_id: uuid.UUID) -> JobRequest:
    return JobRequest(WELCOME, f"{WELCOME}:{event_id}", {"event_id": str(event_id)})


def assignment_job(event_id: uuid.UUID) -> JobRequest:
    return JobRequest(ASSIGNMENT, f"{ASSIGNMENT}:{event_id}", {"event_id": str(event_id)})


async def _recipient(
    context: JobContext, event_id: str, pick: str
) -> tuple[dict[str, Any], str, str] | None:
    """(event, username, email) of the user the mail goes to, or None when the event
    or an enabled recipient is gone."""
    async with context.db.transaction() as session:
        event = await EventRepository(session).get(uuid.UUID(event_id))
        if event is None:
            return None
        payload = event["payload"]
        user_id = payload["user"]["id"] if pick == "user" else payload["task"]["assignee_id"]
        if user_id is None:
            return None
        user = await UserRepository(session).get(uuid.UUID(user_id))
        if user is None or user.disabled:
            return None
        return event, user.username, user.email


async def welcome_email(context: JobContext, *, job_key: str, event_id: str) -> None:
    job = await claim(context, job_key, WELCOME)
    if job is None:
        return
    async with job:
        found = await _recipient(context, event_id, "user")
        if found is not None:
            _, username, email = found
            await send(
                context.settings.smtp,
                compose(
                    context.settings.smtp,
                    to=email,
                    subject="Welcome to TaskHub",
                    body=f"Hello {username},\n\nyour TaskHub account is ready.\n",
                    job_key=job_key,
                ),
            )
        async with context.db.transaction() as session:
            await job.complete(session)


async def assignment_email(context: JobContext, *, job_key: str, event_id: str) -> None:
    job = await claim(context, job_key, ASSIGNMENT)
    if job is None:
        return
    async with job:
        found = await _recipient(context, event_id, "assignee")
        if found is not None:
            event, username, email = found
            task = event["payload"]["task"]
            await send(
                context.settings.smtp,
                compose(
                    context.settings.smtp,
                    to=email,
                    subject="Assigned to you: " + " ".join(str(task["title"]).split()),
                    body=(
                        f'Hello {username},\n\nthe task "{task["title"]}" '
                        f"({task['id']}) was assigned to you.\n"
                    ),
                    job_key=job_key,
                ),
            )
        async with context.db.transaction() as session:
            await job.complete(session)
