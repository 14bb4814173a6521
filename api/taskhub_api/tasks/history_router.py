from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from taskhub_api.deps import ReadSessionDep, SettingsDep
from taskhub_api.events.schemas import EventPage, EventRead
from taskhub_api.identity.deps import CurrentPrincipal
from taskhub_api.kit.routing import planned_router
from taskhub_api.tasks.history import event_service

router = planned_router("/api/v1/tasks", "events")


@router.get("/{task_id}/events", response_model=EventPage)
async def task_events(
    task_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: ReadSessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> EventPage:
    """The task's history (audit trail): its domain events, oldest first."""
    rows, meta = await event_service.task_history(
        session, principal, task_id, settings.cursor_key, cursor, limit
    )
    return EventPage(items=[EventRead.model_validate(r) for r in rows], meta=meta)
