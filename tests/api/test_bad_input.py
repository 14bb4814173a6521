"""Malformed requests get a precise 4xx problem+json naming the field, never a 500."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest

from taskhub_api.main import create_app
from taskhub_api.observability import _new_request_id
from taskhub_api.settings import Settings
from tests.support.users import NewUser, create_task

TASKS = "/api/v1/tasks"


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"title": ', "body"),
        (b"[1, 2]", "body"),
        (b'"just a string"', "body"),
        (b'{"title": "x", "colour": "red"}', "colour"),
        (b'{"title": "a\\u0000b"}', "title"),
        (b'{"title": "\\ud800"}', "title"),
        (b'{"title": "a\\u001b[31mb"}', "title"),
        (b'{"title": "\\u202eevil"}', "title"),
        (b'{"title": "\\u200b"}', "title"),
        (b'{"title": "x", "labels": ["ok", "\\u0007"]}', "labels[1]"),
        (b'{"title": "x", "description": "\\u009b2J"}', "description"),
        (b'{"title": 5}', "title"),
        (b'{"title": "x", "labels": "ops"}', "labels"),
        (b'{"title": "x", "due_at": "tomorrow"}', "due_at"),
        (b'{"title": "x", "due_at": 1700000000}', "due_at"),
        (b'{"title": "x", "due_at": "0001-01-01T00:30:00+01:00"}', "due_at"),
        (b'{"title": "x", "assignee_id": "not-a-uuid"}', "assignee_id"),
        (b"\xff\xfe", "body"),
    ],
)
async def test_malformed_create_bodies(
    client: httpx.AsyncClient, new_user: NewUser, content: bytes, field: str
) -> None:
    alice = await new_user()
    response = await client.post(
        TASKS, content=content, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "title"}, "sort"),
        ({"status": "blocked"}, "status[0]"),
        ({"assignee_id": "123"}, "assignee_id"),
        ({"due_before": "2027-01-01"}, "due_before"),
        ({"due_after": "2027-01-01T00:00:00"}, "due_after"),
        ({"due_before": "0.5"}, "due_before"),  # not Unix time: RFC 3339 only
        ({"q": ""}, "q"),
        ({"q": "a\x00b"}, "q"),
        ({"q": "a\x1bb"}, "q"),
        ({"q": "\u200b"}, "q"),
        ({"label": "\u202eops"}, "label[0]"),
        ({"label": "x" * 51}, "label[0]"),
        ({"cursor": "x" * 2000}, "cursor"),
    ],
)
async def test_malformed_list_queries(
    client: httpx.AsyncClient, new_user: NewUser, params: dict[str, object], field: str
) -> None:
    alice = await new_user()
    response = await client.get(TASKS, params=params, headers=alice.headers)
    assert_problem(response, 422, field)


async def test_bad_path_ids(client: httpx.AsyncClient, new_user: NewUser) -> None:
    alice = await new_user()
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, f"{TASKS}/42", headers=alice.headers, json={})
        assert_problem(response, 422, "task_id")


async def test_oversized_bodies_are_413(client: httpx.AsyncClient, new_user: NewUser) -> None:
    alice = await new_user()
    big = b'{"title": "x", "description": "' + b"a" * (1024 * 1024) + b'"}'
    declared = await client.post(
        TASKS, content=big, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_problem(declared, 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = await client.post(
        TASKS, content=chunks(), headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_problem(streamed, 413)


async def test_patch_body_must_be_an_object(client: httpx.AsyncClient, new_user: NewUser) -> None:
    alice = await new_user()
    task = await create_task(client, alice)
    for content in (b"[]", b"null", b'{"version": 3}', b'{"owner_id": null}'):
        response = await client.patch(
            f"{TASKS}/{task['id']}",
            content=content,
            headers={**alice.headers, "Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code == 422, content


async def test_unknown_routes_and_methods(client: httpx.AsyncClient, new_user: NewUser) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404)
    # Allow lists every method of the path, whichever route serves each.
    put = await client.put("/api/v1/tasks")
    assert_problem(put, 405)
    assert put.headers["allow"] == "GET, POST"
    task = await client.options(f"{TASKS}/{uuid.uuid4()}")
    assert_problem(task, 405)
    assert task.headers["allow"] == "DELETE, GET, PATCH"
    # "me" is no user id: the path has no PATCH (not a 422 for a malformed id).
    alice = await new_user()
    me = await client.patch("/api/v1/users/me", json={}, headers=alice.headers)
    assert_problem(me, 405)
    assert me.headers["allow"] == "GET"


async def test_malformed_authorization(client: httpx.AsyncClient) -> None:
    for value in ("Bearer", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer " + "x" * 5000):
        response = await client.get(TASKS, headers={"Authorization": value})
        assert_problem(response, 401)


async def test_token_form_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/token", data={"username": "a"})
    assert_problem(response, 422, "password")
    response = await client.post("/api/v1/auth/token", json={"username": "a", "password": "b"})
    assert response.status_code == 422


class TestOperationalEndpoints:
    async def test_health(self, client: httpx.AsyncClient) -> None:
        live = await client.get("/health/live")
        assert live.json() == {"status": "ok"}
        for path in ("/health/ready", "/health"):
            ready = await client.get(path)
            assert ready.status_code == 200
            checks = ready.json()["checks"]
            assert (checks["database"], checks["schema"], checks["redis"]) == ("ok", "ok", "ok")

    async def test_request_id_is_echoed_or_generated(self, client: httpx.AsyncClient) -> None:
        given = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        hostile = await client.get("/health/live", headers={"X-Request-ID": "a b\tc"})
        assert hostile.headers["x-request-id"] != "a b\tc"
        assert len(hostile.headers["x-request-id"]) == 32
        generated = [(await client.get("/health/live")).headers["x-request-id"] for _ in range(3)]
        assert len({*generated, hostile.headers["x-request-id"]}) == 4

    def test_a_forked_process_generates_other_request_ids(self) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next id, to the parent
            os.write(write, _new_request_id().encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(read, 64).decode()
        os.close(read)
        os.close(write)
        mine = _new_request_id()
        assert len(child) == len(mine) == 32
        assert child[:16] != mine[:16]  # another per-process prefix

    async def test_metrics_use_route_templates(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice)
        await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)
        text = generate_latest(REGISTRY).decode()  # what the metrics port serves
        assert 'route="/api/v1/tasks/{task_id}",status="200"' in text
        assert task["id"] not in text
        assert "taskhub_http_request_duration_seconds_bucket" in text


class TestUnparsableBodies:
    """FastAPI cannot even parse these: 400, with the body named in ``errors[]``."""

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
            (b'{"title": "caf\xe9"}', "not valid UTF-8"),
            (b'{"title": "x", "priority": ' + b"9" * 5000 + b"}", "cannot be parsed"),
        ],
        ids=["deep", "latin-1", "long-number"],
    )
    async def test_400_with_errors(
        self, client: httpx.AsyncClient, new_user: NewUser, content: bytes, message: str
    ) -> None:
        alice = await new_user()
        response = await client.post(
            TASKS, content=content, headers={**alice.headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 400, "body")
        assert message in response.json()["errors"][0]["message"]


async def test_token_form_errors_are_listed_once(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/token", data={})
    assert_problem(response, 422, "password")
    fields = [e["field"] for e in response.json()["errors"]]
    assert sorted(fields) == ["password", "username"], fields


class TestUnexpectedErrors:
    async def test_an_unrelated_os_error_is_a_500_problem(self, settings: Settings) -> None:
        # Not the database: a bug must not read as "retry shortly" (503).
        app = create_app(settings)

        async def broken() -> None:
            raise ConnectionResetError("some other socket")

        app.add_api_route("/broken", broken)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            response = await c.get("/broken")
        assert_problem(response, 500)
        assert "retry-after" not in response.headers
