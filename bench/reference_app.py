"""The reference the API is measured against: the same work per request, minimal FastAPI.

A minimal FastAPI app on an asyncpg pool, served by uvicorn with the API's options.
Three routes, each taking only the ``Request`` and parsing what it needs by hand. Per
request it does what the real endpoints do, with TaskHub's own code wherever that code
is not the framework:

- the bearer token is checked by ``TokenVerifier`` (pyjwt, same claims), then the
  user row is read with ``fetch_principal_row`` on a connection of its own, released
  before the endpoint takes its connection (as the API's ``PrincipalResolver`` does);
- list runs ``build_list_query`` and ``fetch_page``, get runs ``fetch_live``; create runs
  the API's own driver statements in one transaction: BEGIN, [``ACTIVE_USER``, the
  assignee check], ``INSERT``, the event(s) of ``record_event`` (event, outbox row
  and pg_notify in one statement each), COMMIT; then reads the commit's WAL position
  on a second checkout for the ``Consistency-Token`` header;
- bodies are serialised with ``taskhub_api.kit.jsonenc.dumps``, in the same shape,
  with the same ETag, Location and status codes; cursors are the same signed cursors;
  errors are the same problem+json documents.

FastAPI's routing, request and response handling and Starlette's default middleware
stack are in both, so they are not what is measured. What it leaves out is: TaskHub's
dependency graph, its Pydantic request and response models (the create body is checked
by hand against the same rules), its middlewares, SQLAlchemy's pool and session, and
the service layer. It has no Redis cache and no rate limiter: the benchmark runs the
API with both disabled. It reads the same ``TASKHUB_*`` settings as the API, so both
have the same database, pool and key.

    .venv/bin/python bench/reference_app.py --port 8102
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from taskhub_api.db import COMMIT_LSN_SQL
from taskhub_api.deps import CONSISTENCY_TOKEN
from taskhub_api.errors import (
    AppError,
    BadRequest,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableContent,
    field_error,
)
from taskhub_api.events.repository import record_event
from taskhub_api.identity.principal import Principal, Role
from taskhub_api.identity.repository import fetch_principal_row
from taskhub_api.identity.verifier import TokenVerifier
from taskhub_api.kit import cursor, heap, lsn
from taskhub_api.kit.etag import etag, if_none_match_hit
from taskhub_api.kit.jsonenc import dumps
from taskhub_api.settings import Settings
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.models import TaskPriority, TaskStatus
from taskhub_api.tasks.policy import can_read
from taskhub_api.tasks.repository import (
    COLUMNS,
    INSERT,
    SORTS,
    build_list_query,
    fetch_live,
    fetch_page,
)
from taskhub_api.tasks.service import parse_cursor_values
from taskhub_api.users.repository import ACTIVE_USER

PREFIX = "/api/v1/tasks"
JSON = "application/json"
PROBLEM = "application/problem+json"
STATUSES = frozenset(s.value for s in TaskStatus)
PRIORITIES = frozenset(p.value for p in TaskPriority)
CREATE_FIELDS = frozenset(
    ("title", "description", "status", "priority", "labels", "due_at", "assignee_id")
)
EMPTY_FILTERS = TaskFilters()
FINGERPRINT = cursor.fingerprint(EMPTY_FILTERS.canonical())


def _invalid(field: str, message: str) -> UnprocessableContent:
    return UnprocessableContent(f"{field}: {message}", errors=[field_error(field, message)])


def _text(data: dict[str, Any], field: str, default: str | None, limit: int) -> str:
    value = data.get(field, default)
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    if "\x00" in value:
        raise _invalid(field, "must not contain NUL characters")
    if len(value) > limit:
        raise _invalid(field, f"must have at most {limit} characters")
    return value


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise _invalid(field, "must be an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise _invalid(field, "must have a timezone")
    parsed = parsed.astimezone(UTC)
    if not 1970 <= parsed.year < 9999:
        raise _invalid(field, "must be between 1970-01-01 and 9999-01-01")
    return parsed


def parse_create(body: bytes) -> dict[str, Any]:
    """The rules of ``TaskCreate``, checked by hand."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid("body", "must be valid JSON") from exc
    if not isinstance(data, dict):
        raise _invalid("body", "must be an object")
    if unknown := data.keys() - CREATE_FIELDS:
        raise _invalid(sorted(unknown)[0], "is not a known field")
    title = _text(data, "title", None, 10_000).strip()
    if not 1 <= len(title) <= 200:
        raise _invalid("title", "must have 1 to 200 characters")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or len(labels) > 20:
        raise _invalid("labels", "must be a list of at most 20 labels")
    cleaned = []
    for label in labels:
        if not isinstance(label, str) or not 1 <= len(label.strip()) <= 50 or "\x00" in label:
            raise _invalid("labels", "each label must have 1 to 50 characters")
        cleaned.append(label.strip())
    status = data.get("status", TaskStatus.TODO.value)
    if status not in STATUSES:
        raise _invalid("status", "is not a known status")
    priority = data.get("priority", TaskPriority.MEDIUM.value)
    if priority not in PRIORITIES:
        raise _invalid("priority", "is not a known priority")
    assignee = data.get("assignee_id")
    if assignee is not None:
        try:
            assignee = uuid.UUID(assignee)
        except (TypeError, ValueError, AttributeError) as exc:
            raise _invalid("assignee_id", "must be a UUID") from exc
    return {
        "fields": sorted(data),  # what the client set, as the event records it
        "title": title,
        "description": _text(data, "description", "", 10_000),
        "status": status,
        "priority": priority,
        "labels": list(dict.fromkeys(cleaned)),
        "due_at": _timestamp(data.get("due_at"), "due_at"),
        "assignee_id": assignee,
    }


async def _no_reset(_: asyncpg.Connection) -> None:
    """asyncpg's default reset costs a round trip per release (RESET ALL, UNLISTEN ...).
    SQLAlchemy's pool only rolls back an open transaction, which asyncpg's pool does
    anyway before calling this, so both pools do the same work on release."""


class Resources:
    """What the endpoints share: the settings, the token verifier and the asyncpg pool."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.verifier = TokenVerifier(self.settings.auth)
        self.cursor_key = self.settings.cursor_key
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        db = self.settings.db
        self.pool = await asyncpg.create_pool(
            db.url.replace("+asyncpg", ""),
            min_size=db.pool_size,
            max_size=db.pool_size + db.max_overflow,
            timeout=db.connect_timeout,
            command_timeout=db.command_timeout,
            statement_cache_size=db.statement_cache_size,
            server_settings={"application_name": "taskhub-reference"},
            reset=_no_reset,
        )

    async def close(self) -> None:
        await self.verifier.aclose()
        if self.pool is not None:
            await self.pool.close()

    def acquire(self) -> Any:
        """A pooled connection; waits at most ``pool_timeout`` (then 503, as the API)."""
        assert self.pool is not None
        return self.pool.acquire(timeout=self.settings.db.pool_timeout)

    async def principal(self, request: Request) -> Principal:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("A bearer token is required.")
        claims = await self.verifier.verify(token)
        async with self.acquire() as conn:
            row = await fetch_principal_row(conn, claims.subject)
        if row is None or row["disabled"]:
            raise Unauthorized("The account is disabled or no longer exists.")
        return Principal(
            id=claims.subject,
            username=row["username"],
            roles=frozenset(Role(role) for role in row["roles"]),
        )


resources = Resources()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await resources.open()
    # The API's garbage-collector settings (a server-process setting, not app code).
    heap.settle(resources.settings.gc_gen0_threshold)
    try:
        yield
    finally:
        await resources.close()


def _problem(exc: AppError, path: str) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": exc.title,
        "status": exc.status_code,
        "detail": exc.detail,
        "instance": path,
    }
    if exc.errors:
        body["errors"] = exc.errors
    return Response(
        content=dumps(body), status_code=exc.status_code, headers=exc.headers, media_type=PROBLEM
    )


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return _problem(exc, request.scope["path"])


async def _unavailable(request: Request, _: Exception) -> Response:
    unavailable = ServiceUnavailable("The database is unavailable; retry shortly.")
    return _problem(unavailable, request.scope["path"])


app = FastAPI(
    lifespan=lifespan,
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
    # As the API: FastAPI's OpenTelemetry hooks off.
    telemetry={"tracing": False, "metrics": False, "logs": False},
)
app.add_exception_handler(AppError, _app_error)
for _error in (TimeoutError, OSError, asyncpg.PostgresConnectionError):
    app.add_exception_handler(_error, _unavailable)


@app.get(PREFIX)
async def list_tasks(request: Request) -> Response:
    principal = await resources.principal(request)
    params = dict(parse_qsl(request.scope["query_string"].decode("latin-1")))
    try:
        limit = int(params.get("limit", "20"))
    except ValueError as exc:
        raise _invalid("limit", "must be an integer") from exc
    if not 1 <= limit <= 100:
        raise _invalid("limit", "must be between 1 and 100")
    sort = params.get("sort", "-created_at")
    if sort not in SORTS:
        raise _invalid("sort", "is not a known sort")
    position = None
    if "cursor" in params:
        values = cursor.decode(resources.cursor_key, params["cursor"], sort, FINGERPRINT)
        try:
            position = parse_cursor_values(sort, values)
        except (ValueError, TypeError, AttributeError) as exc:
            raise BadRequest("The cursor is malformed.") from exc
    sql, args = build_list_query(
        visible_to=None if principal.reads_all else principal.id,
        filters=EMPTY_FILTERS,
        sort=SORTS[sort],
        after=position,
        limit=limit + 1,
    )
    async with resources.acquire() as conn:
        rows = await fetch_page(conn, sql, args)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        values = orjson.loads(dumps([last[c] for c in SORTS[sort].columns] + [last["id"]]))
        next_cursor = cursor.encode(resources.cursor_key, sort, FINGERPRINT, values)
    meta = {"limit": limit, "has_more": has_more, "next_cursor": next_cursor}
    body = dumps({"items": [dict(r) for r in rows], "meta": meta})
    return Response(content=body, status_code=200, media_type=JSON)


@app.get(PREFIX + "/{task_id}")
async def get_task(request: Request) -> Response:
    try:
        task_id = uuid.UUID(request.path_params["task_id"])
    except ValueError as exc:
        raise _invalid("task_id", "must be a UUID") from exc
    principal = await resources.principal(request)
    async with resources.acquire() as conn:
        row = await fetch_live(conn, task_id)
    if row is None or not can_read(principal, row):
        raise NotFound(f"Task {task_id} does not exist.")
    tag = etag(row["version"])
    if if_none_match_hit(request.headers.get("if-none-match"), row["version"]):
        return Response(content=b"", status_code=304, headers={"etag": tag})
    return Response(
        content=dumps(dict(row)), status_code=200, headers={"etag": tag}, media_type=JSON
    )


@app.post(PREFIX)
async def create_task(request: Request) -> Response:
    data = parse_create(await request.body())
    principal = await resources.principal(request)
    values = {**data, "owner_id": principal.id}
    del values["fields"]
    async with resources.acquire() as conn, conn.transaction():
        if data["assignee_id"] is not None:
            found = await conn.fetchrow(ACTIVE_USER.sql, data["assignee_id"])
            if found is None:
                raise _invalid("assignee_id", "must be an existing, active user")
        row = await conn.fetchrow(INSERT.sql, *INSERT.args(values))
        # The domain events and their outbox rows, in the same transaction.
        task = {name: row[name] for name in COLUMNS}
        for kind, changed in (("task.created", data["fields"]), ("task.assigned", None)):
            if changed is None and row["assignee_id"] is None:
                continue
            await record_event(
                conn,
                type=kind,
                aggregate_type="task",
                aggregate_id=row["id"],
                actor_id=principal.id,
                payload={"task": task, "changed": changed or ["assignee_id"]},
            )
    headers = {"location": f"{PREFIX}/{row['id']}", "etag": etag(row["version"])}
    # The consistency token: the primary's WAL position after the commit.
    async with resources.acquire() as conn:
        position = lsn.parse(await conn.fetchval(COMMIT_LSN_SQL))
    headers[CONSISTENCY_TOKEN.lower()] = lsn.format_lsn(position)
    body = dumps({name: row[name] for name in COLUMNS})
    return Response(content=body, status_code=201, headers=headers, media_type=JSON)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the minimal FastAPI reference app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    args = parser.parse_args()
    # The same server options as `taskhub api` (uvloop, httptools, no access log).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )


if __name__ == "__main__":
    main()
