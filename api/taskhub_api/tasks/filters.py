"""The filters of a task list: what the router parses, the repository turns into SQL and
a cursor is bound to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskFilters:
    statuses: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    assignee_id: uuid.UUID | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None

    def canonical(self) -> dict[str, Any]:
        """What a cursor is bound to: order-insensitive, JSON-serialisable."""
        return {
            "status": sorted(self.statuses),
            "priority": sorted(self.priorities),
            "label": sorted(self.labels),
            "assignee_id": str(self.assignee_id) if self.assignee_id else None,
            "due_before": self.due_before.isoformat() if self.due_before else None,
            "due_after": self.due_after.isoformat() if self.due_after else None,
            "q": self.q,
        }
