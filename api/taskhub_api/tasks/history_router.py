from __future__ import annotations

import uuid

from taskhub_api.deps import ReadSessionDep, SettingsDep
from taskhub_api.errors.rendering import problem_responses
from taskhub_api.events.schemas import EventPage, EventRead
from taskhub_api.identity.deps import CurrentPrincipal
from taskhub_api.kit.params import Cursor, Limit
from taskhub_api.kit.routing import planned_router
from taskhub_api.tasks.history import event_service

router = planned_router("/api/v1/tasks", "events")


@router.get(
    "/{task_id}/events",
    response_model=EventPage,
    responses=problem_responses(400, 401, 404, 422, 429, 503),
)
async def task_events(
    task_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: ReadSessionDep,
    settings: SettingsDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> EventPage:
    """The task's history (audit trail): its domain events, oldest first."""
    rows, meta = await event_service.task_history(
        session, principal, task_id, settings.cursor_key, cursor, limit
    )
    return EventPage(items=[EventRead.model_validate(r) for r in rows], meta=meta)
