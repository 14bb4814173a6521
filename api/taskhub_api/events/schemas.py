from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel

from taskhub_api.kit.schemas import PageMeta

# The one list of the public event types (webhook subscriptions validate against it).
TaskEventType = Literal[
    "task.created", "task.updated", "task.assigned", "task.deleted", "task.restored"
]
UserEventType = Literal["user.registered"]
EventType = Literal[TaskEventType, UserEventType]
TASK_EVENTS: tuple[str, ...] = get_args(TaskEventType)
USER_EVENTS: tuple[str, ...] = get_args(UserEventType)
# What a webhook may subscribe to.
PUBLIC_EVENTS = (*TASK_EVENTS, *USER_EVENTS)


class EventRead(BaseModel):
    id: uuid.UUID
    type: str
    aggregate_type: str
    aggregate_id: uuid.UUID
    occurred_at: datetime
    actor_id: uuid.UUID | None
    payload: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventRead]
    meta: PageMeta


def envelope(event: dict[str, Any]) -> dict[str, Any]:
    """The published form of an event (message body and webhook body)."""
    return {
        "id": event["id"],
        "type": event["type"],
        "aggregate_type": event["aggregate_type"],
        "aggregate_id": event["aggregate_id"],
        "occurred_at": event["occurred_at"],
        "actor_id": event["actor_id"],
        "payload": event["payload"],
    }
