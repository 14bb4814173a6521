from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import Header, Query, Response, status

from taskhub_api.deps import ReadsDep, SettingsDep, WriteSessionDep
from taskhub_api.errors.rendering import problem_responses
from taskhub_api.identity.deps import AdminPrincipal, CurrentPrincipal, WriterPrincipal
from taskhub_api.kit.etag import etag, if_none_match_hit
from taskhub_api.kit.responses import JSONBytes
from taskhub_api.kit.routing import planned_router
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.schemas import TaskCreate, TaskListQuery, TaskPage, TaskRead, TaskUpdate
from taskhub_api.tasks.service import task_service

router = planned_router("/api/v1/tasks", "tasks")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Replays the original response for a repeated request (kept 24 h).",
    ),
]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=1024)]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match", max_length=1024)]


def _task_response(task: dict[str, object], status_code: int = 200) -> JSONBytes:
    return JSONBytes(task, status_code=status_code, headers={"ETag": etag(int(task["version"]))})  # type: ignore[call-overload]


@router.get("", response_model=TaskPage, responses=problem_responses(400, 401, 422, 429, 503))
async def list_tasks(
    principal: CurrentPrincipal,
    reads: ReadsDep,
    settings: SettingsDep,
    query: Annotated[TaskListQuery, Query()],
) -> JSONBytes:
    """Tasks the caller may read, one keyset page at a time."""
    filters = TaskFilters(
        statuses=tuple(s.value for s in query.status or ()),
        priorities=tuple(p.value for p in query.priority or ()),
        labels=tuple(query.label or ()),
        assignee_id=query.assignee_id,
        due_before=query.due_before,
        due_after=query.due_after,
        q=query.q,
    )
    page = await task_service.list(
        reads,
        principal,
        settings.cursor_key,
        filters=filters,
        sort=query.sort.value,
        after=query.cursor,
        limit=query.limit,
    )
    return JSONBytes(page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskRead,
    responses=problem_responses(400, 401, 403, 409, 413, 422, 429, 503),
)
async def create_task(
    data: TaskCreate,
    principal: WriterPrincipal,
    session: WriteSessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONBytes:
    """Create a task owned by the caller."""
    created = await task_service.create(
        session,
        principal,
        data,
        idempotency_key=idempotency_key,
        retention=timedelta(hours=settings.idempotency.retention_hours),
    )
    headers = dict(created.headers)
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONBytes(created.body, status_code=created.status_code, headers=headers)


@router.get(
    "/{task_id}",
    response_model=TaskRead,
    responses={
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(400, 401, 404, 422, 429, 503),
    },
)
async def get_task(
    task_id: uuid.UUID,
    principal: CurrentPrincipal,
    reads: ReadsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One task, with its ETag."""
    task = await task_service.get(reads, principal, task_id)
    if if_none_match_hit(if_none_match, task.version):
        return Response(status_code=304, headers={"ETag": etag(task.version)})
    return JSONBytes(task.body, headers={"ETag": etag(task.version)})


@router.patch(
    "/{task_id}",
    response_model=TaskRead,
    responses=problem_responses(400, 401, 403, 404, 409, 412, 413, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/merge-patch+json": {
                    "schema": {"$ref": "#/components/schemas/TaskUpdate"}
                }
            }
        }
    },
)
async def update_task(
    task_id: uuid.UUID,
    patch: TaskUpdate,
    principal: WriterPrincipal,
    session: WriteSessionDep,
    if_match: IfMatch = None,
) -> JSONBytes:
    """Change a task (JSON merge patch). A stale `If-Match` gives 412."""
    return _task_response(await task_service.update(session, principal, task_id, patch, if_match))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(400, 401, 403, 404, 412, 422, 429, 503),
)
async def delete_task(
    task_id: uuid.UUID,
    principal: WriterPrincipal,
    session: WriteSessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Soft-delete a task; it then reads as 404 until an admin restores it."""
    await task_service.delete(session, principal, task_id, if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{task_id}/restore",
    response_model=TaskRead,
    responses=problem_responses(401, 403, 404, 409, 422, 429, 503),
)
async def restore_task(
    task_id: uuid.UUID, admin: AdminPrincipal, session: WriteSessionDep
) -> JSONBytes:
    """Undo a soft delete (admin only)."""
    return _task_response(await task_service.restore(session, task_id, actor=admin.id))
