from __future__ import annotations

import uuid
from typing import Any

from taskhub_api.db import ReadSession, WriteSession
from taskhub_api.errors import NotFound
from taskhub_api.events.repository import EventRepository
from taskhub_api.identity.principal import Principal
from taskhub_api.kit import cursor
from taskhub_api.kit.pages import Keyset
from taskhub_api.kit.schemas import PageMeta
from taskhub_api.tasks.policy import can_read
from taskhub_api.tasks.repository import TaskRepository

_SORT = "seq"


def _seq(values: list[Any]) -> int:
    (seq,) = values
    if not isinstance(seq, int):
        raise TypeError("the position is an event's seq")
    return seq


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
        keyset = Keyset(cursor_key, _SORT, cursor.fingerprint({"task": str(task_id)}))
        position = keyset.start(after, _seq)
        rows = await EventRepository(session).history(task_id, position, limit + 1)
        return keyset.page(rows, limit, lambda row: [row["seq"]])


event_service = EventService()
