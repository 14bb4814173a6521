from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
)

from taskhub_api.kit.schemas import RFC3339, InputText, PageMeta, Schema
from taskhub_api.tasks.models import TaskPriority, TaskStatus

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("must be between 1970-01-01 and 9999-01-01") from exc
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError("must be between 1970-01-01 and 9999-01-01")
    return utc


def _dedupe(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(labels))


Timestamp = Annotated[AwareDatetime, RFC3339, AfterValidator(_in_range)]
# Input only (see InputText): titles and labels are single lines, descriptions keep
# tabs and line breaks; none takes control or bidirectional override characters.
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), InputText()
]
Description = Annotated[
    str, StringConstraints(max_length=10_000), InputText(multiline=True, blank=True)
]
Label = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), InputText()
]
Labels = Annotated[list[Label], Field(max_length=20), AfterValidator(_dedupe)]
SearchText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), InputText()
]


class TaskSort(StrEnum):
    CREATED_DESC = "-created_at"
    CREATED = "created_at"
    DUE = "due_at"
    DUE_DESC = "-due_at"
    PRIORITY = "priority"
    PRIORITY_DESC = "-priority"
    UPDATED_DESC = "-updated_at"


class TaskCreate(Schema):
    title: Title
    description: Description = ""
    status: TaskStatus = TaskStatus.TODO
    priority: TaskPriority = TaskPriority.MEDIUM
    labels: Labels = Field(default_factory=list)
    due_at: Timestamp | None = None
    assignee_id: uuid.UUID | None = None


class TaskUpdate(Schema):
    """A JSON merge patch (RFC 7396): absent fields stay, ``null`` clears the nullable
    ones (``description`` becomes empty)."""

    title: Title | None = None
    description: Description | None = None
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    labels: Labels | None = None
    due_at: Timestamp | None = None
    assignee_id: uuid.UUID | None = None

    @field_validator("title", "status", "priority", "labels", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.model_fields_set}
        if "description" in values and values["description"] is None:
            values["description"] = ""
        return values


class TaskRead(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    assignee_id: uuid.UUID | None
    title: str
    description: str
    status: TaskStatus
    priority: TaskPriority
    labels: list[str]
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class TaskPage(BaseModel):
    items: list[TaskRead]
    meta: PageMeta


class TaskListQuery(BaseModel):
    """The query of ``GET /tasks``: one model, validated in one pass."""

    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=1024)
    sort: TaskSort = TaskSort.CREATED_DESC
    status: list[TaskStatus] | None = None
    priority: list[TaskPriority] | None = None
    assignee_id: uuid.UUID | None = None
    label: list[Label] | None = Field(default=None, max_length=20)
    due_before: Timestamp | None = Field(default=None, description="due_at < this")
    due_after: Timestamp | None = Field(default=None, description="due_at >= this")
    q: SearchText | None = Field(default=None, description="Full-text search")
