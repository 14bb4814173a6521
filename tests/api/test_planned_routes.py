"""Planned routes answer exactly as FastAPI's own handler would (kit/routing.py).

Every request below is sent twice to the same app: once through the planned handler,
once with each planned route switched back to FastAPI's default handler for the same
declaration. Status, body and headers must be the same, for valid and invalid input.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Body, Cookie, Depends, FastAPI, Form, Header, Query, Request
from fastapi.routing import APIRoute, request_response
from pydantic import BaseModel

from taskhub_api.kit import routing
from taskhub_api.kit.routing import PlannedRoute, plan
from taskhub_api.main import create_app
from taskhub_api.settings import Settings
from tests.api.conftest import Actor, NewUser, create_task
from tests.api.fastpaths import fast_paths

HOT_ROUTES = {("GET", "/api/v1/tasks"), ("GET", "/api/v1/tasks/{task_id}")}
# Differ between any two responses: when, which request, how much rate is left.
VOLATILE_HEADERS = {"date", "x-request-id", "ratelimit-remaining", "ratelimit-reset"}


@pytest.fixture(scope="module")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app of this module's own that plans its routes, whatever the run's setting
    (``make test-compat`` turns planned routes off for the session's app); a small
    pool, as the session's app holds its own meanwhile."""
    small = settings.db.model_copy(update={"pool_size": 4})
    with fast_paths(planned_routes=True):
        application = create_app(settings.model_copy(update={"db": small}))
    async with LifespanManager(application):
        yield application


def _planned_routes(app: FastAPI) -> list[PlannedRoute]:
    return [r for r in app.router.routes if isinstance(r, PlannedRoute) and plan(r.dependant)]


@contextmanager
def fastapi_handlers(app: FastAPI) -> Iterator[None]:
    """Each planned route served by FastAPI's default handler, for the same route."""
    saved = [(route, route.app) for route in _planned_routes(app)]
    try:
        for route, _ in saved:
            route.app = request_response(APIRoute.get_route_handler(route))
        yield
    finally:
        for route, handler in saved:
            route.app = handler


def _shape(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    is_json = response.headers.get("content-type", "").endswith("json")
    return response.status_code, response.json() if is_json else response.content, headers


async def _same_answers(
    app: FastAPI, client: httpx.AsyncClient, requests: list[dict[str, Any]]
) -> set[int]:
    """Sends each request through the plans, then through FastAPI's handlers; both
    answer each alike. Returns the statuses seen."""
    planned = [_shape(await client.request(**r)) for r in requests]
    with fastapi_handlers(app):
        default = [_shape(await client.request(**r)) for r in requests]
    for request, mine, theirs in zip(requests, planned, default, strict=True):
        assert mine == theirs, (request["method"], request["url"], request.get("json"))
    return {status for status, _, _ in planned}


@pytest.fixture
async def actors(new_user: NewUser, client: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    owner = await new_user("user")
    viewer = await new_user("viewer")
    task = await create_task(client, owner, labels=["a", "b"], priority="high")
    for n in range(3):
        await create_task(client, owner, title=f"Task {n}", status="done")
    yield {"owner": owner, "viewer": viewer, "task": task}


def _requests(owner: Actor, viewer: Actor, task: dict[str, Any]) -> list[dict[str, Any]]:
    auth = owner.headers
    path = f"/api/v1/tasks/{task['id']}"
    etag = f'"{task["version"]}"'
    queries = [
        "",
        "?limit=2",
        "?limit=2&sort=created_at",
        "?status=todo&status=done&priority=high",
        "?label=a&label=zzz&sort=-updated_at",
        "?q=task&due_after=2020-01-01T00:00:00Z&due_before=2999-01-01T00:00:00%2B02:00",
        f"?assignee_id={owner.id}",
        "?limit=0",
        "?limit=abc&status=bogus",
        "?limit=101&sort=sideways&priority=",
        "?due_before=tomorrow",
        "?due_after=2020-01-01T00:00:00",
        "?assignee_id=not-a-uuid",
        "?unknown=1",
        "?unknown=1&unknown=2&limit=3",
        "?cursor=garbage",
        "?cursor=" + "x" * 1100,
        "?label=" + "&label=".join(f"l{n}" for n in range(21)),
        "?q=" + "w" * 300,
        "?limit=1&limit=2",
    ]
    requests: list[dict[str, Any]] = [
        {"url": "/api/v1/tasks" + q, "headers": auth} for q in queries
    ]
    requests += [
        {"url": "/api/v1/tasks?limit=abc"},  # no token: 401 before the query is checked
        {"url": "/api/v1/tasks", "headers": {"Authorization": "Bearer nope"}},
        {"url": "/api/v1/tasks", "headers": viewer.headers},
        {"url": path, "headers": auth},
        {"url": path, "headers": viewer.headers},
        {"url": path, "headers": {**auth, "If-None-Match": etag}},
        {"url": path, "headers": {**auth, "If-None-Match": '"999", ' + etag}},
        {"url": path, "headers": {**auth, "If-None-Match": "x" * 1025}},
        {"url": path, "headers": {**auth, "Consistency-Token": "0/16B3748"}},
        {"url": path, "headers": {**auth, "Consistency-Token": "x" * 65}},
        {"url": path, "headers": {**auth, "Consistency-Token": "not-a-token"}},
        {"url": "/api/v1/tasks/not-a-uuid", "headers": auth},
        {"url": "/api/v1/tasks/not-a-uuid"},
        {"url": f"/api/v1/tasks/{uuid.uuid4()}", "headers": auth},
        {
            "url": "/api/v1/tasks/not-a-uuid",
            "headers": {**auth, "If-None-Match": "x" * 1025, "Consistency-Token": "y" * 65},
        },
        {"url": "/health/live"},
        {"url": "/health/ready"},
    ]
    return [{"method": "GET", **r} for r in requests]


def test_the_hot_read_routes_are_planned(app: FastAPI) -> None:
    planned = {(m, r.path) for r in _planned_routes(app) for m in r.methods or ()}
    assert planned >= HOT_ROUTES


async def test_planned_routes_answer_as_fastapi_does(
    app: FastAPI, client: httpx.AsyncClient, actors: dict[str, Any]
) -> None:
    requests = _requests(actors["owner"], actors["viewer"], actors["task"])
    statuses = await _same_answers(app, client, requests)
    # The corpus reaches the interesting answers, not only one kind.
    assert statuses >= {200, 304, 400, 401, 404, 422}


async def test_requests_to_planned_routes_go_through_the_plan(
    client: httpx.AsyncClient, actors: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    solved: list[str] = []
    original = routing._Plan.solve

    async def spy(self: routing._Plan, request: Request, *args: Any) -> Any:
        solved.append(getattr(self.call, "__name__", type(self.call).__name__))
        return await original(self, request, *args)

    monkeypatch.setattr(routing._Plan, "solve", spy)
    task = actors["task"]
    response = await client.get(f"/api/v1/tasks/{task['id']}", headers=actors["owner"].headers)
    assert response.status_code == 200
    assert solved == ["get_task", "PrincipalResolver", "get_reads"]


def _writes(owner: Actor, viewer: Actor, task: dict[str, Any]) -> list[dict[str, Any]]:
    """Writes that are refused: both handlers leave the data as it was."""
    auth = owner.headers
    path = f"/api/v1/tasks/{task['id']}"
    json_type = {"Content-Type": "application/json"}
    bodies: list[Any] = [
        {},
        {"title": "   "},
        {"title": "x", "unknown": 1},
        {"title": "x", "labels": [f"l{n}" for n in range(21)]},
        {"title": "x", "status": "later", "priority": "meh", "due_at": "soon"},
        {"title": "x", "assignee_id": str(uuid.uuid4())},
        [],
        None,
    ]
    writes: list[dict[str, Any]] = [
        {"method": "POST", "url": "/api/v1/tasks", "json": b, "headers": auth} for b in bodies
    ]
    writes += [
        {
            "method": "POST",
            "url": "/api/v1/tasks",
            "content": b"{",
            "headers": {**auth, **json_type},
        },
        {"method": "POST", "url": "/api/v1/tasks", "content": b"", "headers": auth},
        {
            "method": "POST",
            "url": "/api/v1/tasks",
            "content": b"title=x",
            "headers": {**auth, "Content-Type": "text/plain"},
        },
        {"method": "POST", "url": "/api/v1/tasks", "json": {}},  # 401 before the body
        {"method": "POST", "url": "/api/v1/tasks", "json": {}, "headers": viewer.headers},
        {
            "method": "POST",
            "url": "/api/v1/tasks",
            "json": {"title": "x"},
            "headers": {**auth, "Idempotency-Key": "bad key"},
        },
        {"method": "PATCH", "url": path, "json": {"title": ""}, "headers": auth},
        {
            "method": "PATCH",
            "url": path,
            "json": {"title": "y"},
            "headers": {**auth, "If-Match": '"999"'},
        },
        {"method": "PATCH", "url": "/api/v1/tasks/nope", "json": {"title": "y"}, "headers": auth},
        {"method": "DELETE", "url": f"/api/v1/tasks/{uuid.uuid4()}", "headers": auth},
        {"method": "DELETE", "url": path, "headers": viewer.headers},
        {"method": "DELETE", "url": path, "headers": {**auth, "If-Match": '"999"'}},
        {"method": "POST", "url": f"{path}/restore", "headers": auth},
    ]
    return writes


async def test_refused_writes_answer_as_fastapi_does(
    app: FastAPI, client: httpx.AsyncClient, actors: dict[str, Any]
) -> None:
    writes = _writes(actors["owner"], actors["viewer"], actors["task"])
    assert await _same_answers(app, client, writes) >= {401, 403, 404, 412, 422}
    listed = await client.get("/api/v1/tasks?limit=100", headers=actors["owner"].headers)
    assert len(listed.json()["items"]) == 4  # nothing was written


async def test_a_create_answers_as_fastapi_does(
    app: FastAPI, client: httpx.AsyncClient, actors: dict[str, Any]
) -> None:
    owner = actors["owner"]
    body = {"title": " Ship it ", "labels": ["a", "a", "b"], "assignee_id": str(owner.id)}

    async def create(key: str) -> tuple[int, Any, dict[str, str]]:
        headers = {**owner.headers, "Idempotency-Key": key}
        status, created, response_headers = _shape(
            await client.post("/api/v1/tasks", json=body, headers=headers)
        )
        for fresh in ("id", "created_at", "updated_at"):
            created.pop(fresh)
        response_headers.pop("location")
        assert response_headers.pop("consistency-token")  # a WAL position: moves on
        return status, created, response_headers

    mine = await create("planned")
    with fastapi_handlers(app):
        theirs = await create("default")
    assert mine == theirs
    assert mine[0] == 201


# What is not planned keeps FastAPI's handler.


class _Filters(BaseModel):
    a: int = 0


async def _dependency_with_yield() -> AsyncIterator[int]:
    yield 1


async def _one() -> int:
    return 1


async def _body(data: Annotated[dict[str, int], Body()]) -> None: ...
async def _two_bodies(a: Annotated[int, Body()], b: Annotated[int, Body()]) -> None: ...
async def _form(a: Annotated[str, Form()]) -> None: ...
async def _yielding_with_dependency(
    value: Annotated[int, Depends(_one)],
) -> AsyncIterator[int]:
    yield value


async def _nested_yield(value: Annotated[int, Depends(_yielding_with_dependency)]) -> None: ...
def _sync_dependency_with_yield() -> Iterator[int]:
    yield 1


async def _sync_yield(value: Annotated[int, Depends(_sync_dependency_with_yield)]) -> None: ...
async def _cookie(session: Annotated[str | None, Cookie()] = None) -> None: ...
async def _yielding(value: Annotated[int, Depends(_dependency_with_yield)]) -> None: ...
async def _shared(a: Annotated[int, Depends(_one)], b: Annotated[int, Depends(_one)]) -> None: ...
async def _optional_model(f: Annotated[_Filters | None, Query()] = None) -> None: ...
async def _header_model(f: Annotated[_Filters, Header()]) -> None: ...
def _sync(x: int = 0) -> None: ...
async def _plannable(
    request: Request,
    f: Annotated[_Filters, Query()],
    x: Annotated[list[int] | None, Query()] = None,
    h: Annotated[str | None, Header(alias="X-H")] = None,
    one: Annotated[int, Depends(_one)] = 0,
) -> None: ...


@pytest.mark.parametrize(
    ("endpoint", "planned"),
    [
        (_body, True),
        (_two_bodies, False),
        (_form, False),
        (_nested_yield, False),
        (_sync_yield, False),
        (_cookie, False),
        (_yielding, True),
        (_shared, False),
        (_optional_model, False),
        (_header_model, False),
        (_sync, False),
        (_plannable, True),
    ],
)
def test_what_is_planned(endpoint: Any, planned: bool) -> None:
    route = PlannedRoute("/x", endpoint, methods=["POST"])
    assert (plan(route.dependant) is not None) is planned
