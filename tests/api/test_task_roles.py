"""The role matrix, per role and per relation to the task (owner, assignee, stranger)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.users import Actor, NewUser, create_task

# (role, relation) -> expected status of each action
READ, EDIT, EDIT_STATUS, DELETE, RESTORE = "read", "edit", "edit_status", "delete", "restore"
MATRIX: dict[tuple[str, str], dict[str, int]] = {
    ("admin", "stranger"): {READ: 200, EDIT: 200, EDIT_STATUS: 200, DELETE: 204, RESTORE: 200},
    ("user", "owner"): {READ: 200, EDIT: 200, EDIT_STATUS: 200, DELETE: 204, RESTORE: 403},
    ("user", "assignee"): {READ: 200, EDIT: 403, EDIT_STATUS: 200, DELETE: 403, RESTORE: 403},
    ("user", "stranger"): {READ: 404, EDIT: 404, EDIT_STATUS: 404, DELETE: 404, RESTORE: 403},
    ("viewer", "stranger"): {READ: 200, EDIT: 403, EDIT_STATUS: 403, DELETE: 403, RESTORE: 403},
}


async def _setup(
    client: httpx.AsyncClient, new_user: NewUser, role: str, relation: str
) -> tuple[Actor, Actor, dict[str, Any]]:
    owner = await new_user("user")
    actor = await new_user(role)
    if relation == "owner":
        owner = actor
    assignee = actor.id if relation == "assignee" else None
    task = await create_task(client, owner, assignee_id=str(assignee) if assignee else None)
    return actor, owner, task


@pytest.mark.parametrize(("role", "relation"), list(MATRIX))
@pytest.mark.parametrize("action", [READ, EDIT, EDIT_STATUS, DELETE, RESTORE])
async def test_role_matrix(
    client: httpx.AsyncClient, new_user: NewUser, role: str, relation: str, action: str
) -> None:
    actor, owner, task = await _setup(client, new_user, role, relation)
    url = f"/api/v1/tasks/{task['id']}"
    if action == READ:
        response = await client.get(url, headers=actor.headers)
    elif action == EDIT:
        response = await client.patch(url, json={"title": "Renamed"}, headers=actor.headers)
    elif action == EDIT_STATUS:
        response = await client.patch(url, json={"status": "done"}, headers=actor.headers)
    elif action == DELETE:
        response = await client.delete(url, headers=actor.headers)
    else:
        assert (await client.delete(url, headers=owner.headers)).status_code == 204
        response = await client.post(f"{url}/restore", headers=actor.headers)
    expected = MATRIX[(role, relation)][action]
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("role", ["user", "viewer", "admin"])
async def test_create_by_role(client: httpx.AsyncClient, new_user: NewUser, role: str) -> None:
    actor = await new_user(role)
    response = await client.post("/api/v1/tasks", json={"title": "x"}, headers=actor.headers)
    assert response.status_code == (403 if role == "viewer" else 201)


async def test_not_found_does_not_leak_existence(
    client: httpx.AsyncClient, new_user: NewUser
) -> None:
    owner, stranger = await new_user(), await new_user()
    task = await create_task(client, owner)
    hidden = await client.get(f"/api/v1/tasks/{task['id']}", headers=stranger.headers)
    missing = await client.get(
        "/api/v1/tasks/00000000-0000-4000-8000-000000000000", headers=stranger.headers
    )
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["title"] == missing.json()["title"]


async def test_lists_are_scoped_by_role(client: httpx.AsyncClient, new_user: NewUser) -> None:
    alice, bob, viewer, admin = (
        await new_user(),
        await new_user(),
        await new_user("viewer"),
        await new_user("admin"),
    )
    own = await create_task(client, alice, title="alice's")
    assigned = await create_task(client, bob, title="bob's for alice", assignee_id=str(alice.id))
    other = await create_task(client, bob, title="bob's")

    async def ids(actor: Actor) -> set[str]:
        response = await client.get("/api/v1/tasks", headers=actor.headers)
        return {t["id"] for t in response.json()["items"]}

    assert await ids(alice) == {own["id"], assigned["id"]}
    assert await ids(bob) == {assigned["id"], other["id"]}
    assert await ids(viewer) == await ids(admin) == {own["id"], assigned["id"], other["id"]}


async def test_admin_only_user_endpoints(client: httpx.AsyncClient, new_user: NewUser) -> None:
    for role in ("user", "viewer"):
        actor = await new_user(role)
        assert (await client.get("/api/v1/users", headers=actor.headers)).status_code == 403
        response = await client.patch(
            f"/api/v1/users/{actor.id}", json={"roles": ["admin"]}, headers=actor.headers
        )
        assert response.status_code == 403


async def test_unauthenticated_requests_are_401(client: httpx.AsyncClient) -> None:
    for method, url in [
        ("GET", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/users/me"),
        ("GET", "/api/v1/tasks/00000000-0000-4000-8000-000000000000"),
    ]:
        response = await client.request(method, url)
        assert response.status_code == 401, url
