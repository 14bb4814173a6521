from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from taskhub_api.db import Reads, WriteSession, driver_connection
from taskhub_api.errors import (
    Conflict,
    NotFound,
    UnprocessableContent,
    field_error,
)
from taskhub_api.events.repository import record_event
from taskhub_api.idempotency.repository import IdempotencyRepository
from taskhub_api.identity.principal import Principal
from taskhub_api.kit import cursor
from taskhub_api.kit.etag import check_if_match, etag
from taskhub_api.kit.jsonenc import dumps
from taskhub_api.kit.pages import Keyset
from taskhub_api.tasks import cachekeys, repository
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.models import TaskPriority
from taskhub_api.tasks.policy import can_read, ensure_can_delete, ensure_can_edit
from taskhub_api.tasks.repository import SORTS, TaskRepository
from taskhub_api.tasks.schemas import TaskCreate, TaskUpdate
from taskhub_api.users.repository import UserRepository

CREATE_SCOPE = "tasks.create"


@dataclass(frozen=True, slots=True)
class Created:
    status_code: int
    body: bytes
    headers: dict[str, str]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class TaskDocument:
    """A task as served: its JSON and its version (for the ETag)."""

    body: bytes
    version: int

    def encode(self) -> bytes:
        return b"%d:" % self.version + self.body

    @classmethod
    def decode(cls, entry: bytes) -> TaskDocument:
        version, _, body = entry.partition(b":")
        return cls(body, int(version))


def location(task_id: uuid.UUID) -> str:
    return f"/api/v1/tasks/{task_id}"


def _not_found(task_id: uuid.UUID) -> NotFound:
    return NotFound(f"Task {task_id} does not exist.")


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in repository.COLUMNS}


async def _record(
    session: WriteSession,
    type: str,
    task: dict[str, Any],
    actor: uuid.UUID | None,
    changed: list[str],
) -> None:
    """The domain event of a change, in the change's own transaction (outbox)."""
    await record_event(
        await driver_connection(session),
        type=type,
        aggregate_type="task",
        aggregate_id=task["id"],
        actor_id=actor,
        payload={"task": task, "changed": sorted(changed)},
    )


def _cursor_values(sort: str, row: Mapping[str, Any]) -> list[Any]:
    values = [row[c] for c in SORTS[sort].columns] + [row["id"]]
    as_json: list[Any] = orjson.loads(dumps(values))  # datetimes and UUIDs as strings
    return as_json


def parse_cursor_values(sort: str, values: list[Any]) -> list[Any]:
    columns = (*SORTS[sort].columns, "id")
    if len(values) != len(columns):
        raise ValueError("wrong number of values")
    parsed: list[Any] = []
    for column, value in zip(columns, values, strict=True):
        if column == "id":
            parsed.append(uuid.UUID(value))
        elif column == "priority":
            parsed.append(TaskPriority(value).value)
        elif value is None and SORTS[sort].nullable:
            parsed.append(None)
        else:
            parsed.append(datetime.fromisoformat(value))
    return parsed


class TaskService:
    async def list(
        self,
        reads: Reads,
        principal: Principal,
        cursor_key: bytes,
        *,
        filters: TaskFilters,
        sort: str,
        after: str | None,
        limit: int,
    ) -> bytes:
        """One page as JSON: from the cache, else from the replica or the primary."""
        keyset = Keyset(cursor_key, sort, cursor.fingerprint(filters.canonical()))
        position = keyset.start(after, lambda values: parse_cursor_values(sort, values))
        scope = cachekeys.read_scope(principal)
        key = cachekeys.list_key(
            principal, {"f": filters.canonical(), "s": sort, "a": after, "l": limit}
        )
        found = await reads.cache.lookup(scope, key, reads.client_lsn)
        if found.value is not None:
            return found.value
        sql, args = repository.build_list_query(
            visible_to=None if principal.reads_all else principal.id,
            filters=filters,
            sort=SORTS[sort],
            after=position,
            limit=limit + 1,
        )
        target = reads.engine(found.floor)
        rows = await target.run(lambda conn: repository.fetch_page(conn, sql, args))
        items, meta = keyset.page(rows, limit, lambda row: _cursor_values(sort, row))
        body = dumps({"items": [dict(r) for r in items], "meta": meta.model_dump()})
        await reads.cache.put(scope, key, target.asof, found.floor, body)
        return body

    async def get(self, reads: Reads, principal: Principal, task_id: uuid.UUID) -> TaskDocument:
        scope = cachekeys.read_scope(principal)
        key = cachekeys.task_key(principal, task_id)
        found = await reads.cache.lookup(scope, key, reads.client_lsn)
        if found.value is not None:
            return TaskDocument.decode(found.value)
        target = reads.engine(found.floor)
        row = await target.run(lambda conn: repository.fetch_live(conn, task_id))
        if row is None or not can_read(principal, row):
            raise _not_found(task_id)
        document = TaskDocument(dumps(dict(row)), int(row["version"]))
        await reads.cache.put(scope, key, target.asof, found.floor, document.encode())
        return document

    async def create(
        self,
        session: WriteSession,
        principal: Principal,
        data: TaskCreate,
        *,
        idempotency_key: str | None,
        retention: timedelta,
    ) -> Created:
        keys = IdempotencyRepository(session)
        if idempotency_key is not None:
            request = orjson.dumps(
                data.model_dump(mode="json", exclude_unset=True), option=orjson.OPT_SORT_KEYS
            )
            request_hash = hashlib.sha256(request).digest()
            claimed = await keys.claim(
                principal.id, idempotency_key, CREATE_SCOPE, request_hash, retention
            )
            if not claimed:
                stored = await keys.get(principal.id, idempotency_key)
                if stored.scope != CREATE_SCOPE or stored.request_hash != request_hash:
                    raise UnprocessableContent(
                        "This Idempotency-Key was already used with a different request.",
                        errors=[field_error("Idempotency-Key", "was used for another request")],
                    )
                return Created(
                    stored.status_code, stored.response_body, stored.response_headers, True
                )
        if data.assignee_id is not None:
            await self._check_assignee(session, data.assignee_id)
        row = await TaskRepository(session).insert({**data.model_dump(), "owner_id": principal.id})
        cachekeys.touched(session, (row["owner_id"], row["assignee_id"]))
        fields = sorted(data.model_fields_set)
        await _record(session, "task.created", _public(row), principal.id, fields)
        if row["assignee_id"] is not None:
            await _record(session, "task.assigned", _public(row), principal.id, ["assignee_id"])
        body = dumps(_public(row))
        headers = {"Location": location(row["id"]), "ETag": etag(row["version"])}
        if idempotency_key is not None:
            await keys.complete(principal.id, idempotency_key, 201, body, headers)
        return Created(201, body, headers)

    async def update(
        self,
        session: WriteSession,
        principal: Principal,
        task_id: uuid.UUID,
        patch: TaskUpdate,
        if_match: str | None,
    ) -> dict[str, Any]:
        tasks = TaskRepository(session)
        row = await tasks.get_for_update(task_id)
        if row is None or not can_read(principal, row):
            raise _not_found(task_id)
        changes = patch.changes()
        ensure_can_edit(principal, row, changes.keys())
        check_if_match(if_match, row["version"])
        changes = {k: v for k, v in changes.items() if row[k] != v}
        if not changes:
            return _public(row)
        if changes.get("assignee_id") is not None:
            await self._check_assignee(session, changes["assignee_id"])
        updated = await tasks.update(task_id, changes)
        cachekeys.touched(session, (row["owner_id"], row["assignee_id"], updated["assignee_id"]))
        task = _public(updated)
        await _record(session, "task.updated", task, principal.id, list(changes))
        if changes.get("assignee_id") is not None:
            await _record(session, "task.assigned", task, principal.id, ["assignee_id"])
        return task

    async def delete(
        self, session: WriteSession, principal: Principal, task_id: uuid.UUID, if_match: str | None
    ) -> None:
        tasks = TaskRepository(session)
        row = await tasks.get_for_update(task_id)
        if row is None or not can_read(principal, row):
            raise _not_found(task_id)
        ensure_can_delete(principal, row)
        check_if_match(if_match, row["version"])
        deleted = await tasks.update(task_id, {"deleted_at": datetime.now(UTC)})
        cachekeys.touched(session, (row["owner_id"], row["assignee_id"]))
        await _record(session, "task.deleted", _public(deleted), principal.id, ["deleted_at"])

    async def restore(
        self, session: WriteSession, task_id: uuid.UUID, actor: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """Undo a soft delete (the caller is an admin)."""
        tasks = TaskRepository(session)
        row = await tasks.get_for_update(task_id, deleted=True)
        if row is None:
            if await tasks.exists(task_id):
                raise Conflict(f"Task {task_id} is not deleted.")
            raise _not_found(task_id)
        restored = await tasks.update(task_id, {"deleted_at": None})
        cachekeys.touched(session, (restored["owner_id"], restored["assignee_id"]))
        task = _public(restored)
        await _record(session, "task.restored", task, actor, ["deleted_at"])
        return task

    async def _check_assignee(self, session: WriteSession, user_id: uuid.UUID) -> None:
        if not await UserRepository(session).active_assignee_exists(user_id):
            raise UnprocessableContent(
                f"Cannot assign the task: user {user_id} does not exist or is disabled.",
                errors=[field_error("assignee_id", "must be an existing, active user")],
            )


task_service = TaskService()
