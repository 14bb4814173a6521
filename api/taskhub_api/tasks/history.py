from __future__ import annotations

import uuid
from typing import Any

from taskhub_api.db import ReadSession, WriteSession
from taskhub_api.errors import BadRequest, NotFound, field_error
from taskhub_api.events.repository import EventRepository
from taskhub_api.identity.principal import Principal
from taskhub_api.kit import cursor
from taskhub_api.kit.schemas import PageMeta
from taskhub_api.tasks.policy import can_read
from taskhub_api.tasks.repository import TaskRepository

_SORT = "seq"


class EventService:
    async def task_history(
        self,
        session: ReadSession | WriteSession,
        principal: Principal,
        task_id: uuid.UUID,
        cursor_key: bytes,
        after: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], PageMeta]:
        """The task's events, oldest first, for whoever may read the task (a deleted
        task's history: admins only)."""
        task = await TaskRepository(session).get_any(task_id)
        if (
            task is None
            or (task["deleted_at"] is not None and not principal.is_admin)
            or not can_read(principal, task)
        ):
            raise NotFound(f"Task {task_id} does not exist.")
        bound_to = cursor.fingerprint({"task": str(task_id)})
        position = None
        if after is not None:
            values = cursor.decode(cursor_key, after, _SORT, bound_to)
            if len(values) != 1 or not isinstance(values[0], int):
                raise BadRequest(
                    "The cursor is malformed.", errors=[field_error("cursor", "is malformed")]
                )
            position = values[0]
        rows = await EventRepository(session).history(task_id, position, limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            cursor.encode(cursor_key, _SORT, bound_to, [rows[-1]["seq"]]) if has_more else None
        )
        return rows, PageMeta(limit=limit, has_more=has_more, next_cursor=next_cursor)


event_service = EventService()
