"""The transactional outbox: every change writes its event in its own transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import Database
from taskhub_api.identity.principal import Principal, Role
from taskhub_api.tasks.schemas import TaskCreate
from taskhub_api.tasks.service import task_service
from tests.support.users import NewUser, create_task


async def outbox(app: FastAPI) -> list[dict[str, Any]]:
    db: Database = app.state.db
    async with db.primary.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT e.type, e.aggregate_id, e.actor_id, e.payload, o.published_at "
                "FROM event e JOIN outbox o ON o.event_id = e.id ORDER BY e.seq"
            )
        )
        return [dict(r) for r in rows.mappings()]


class TestOutbox:
    async def test_a_change_writes_its_event_and_outbox_row(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner = await new_user()
        task = await create_task(client, owner, title="Plan", labels=["q4"])
        (event,) = await outbox(app)
        assert event["type"] == "task.created"
        assert str(event["aggregate_id"]) == task["id"]
        assert event["actor_id"] == owner.id
        assert event["published_at"] is None
        assert event["payload"]["task"]["title"] == "Plan"
        assert event["payload"]["changed"] == ["labels", "title"]

    async def test_a_rolled_back_change_writes_no_event(
        self, app: FastAPI, new_user: NewUser
    ) -> None:
        owner = await new_user()
        principal = Principal(owner.id, owner.username, frozenset({Role.USER}))
        db: Database = app.state.db
        with pytest.raises(RuntimeError, match="after the change"):
            async with db.transaction() as session:
                await task_service.create(
                    session,
                    principal,
                    TaskCreate(title="Never committed"),
                    idempotency_key=None,
                    retention=timedelta(hours=24),
                )
                assert len(await _events_in(session)) == 1  # written in the transaction
                raise RuntimeError("failure after the change")
        assert await outbox(app) == []
        async with db.primary.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM task"))).scalar_one() == 0

    async def test_a_rejected_request_writes_no_event(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner = await new_user()
        response = await client.post(
            "/api/v1/tasks",
            json={"title": "x", "assignee_id": str(uuid.uuid4())},
            headers=owner.headers,
        )
        assert response.status_code == 422
        assert await outbox(app) == []

    async def test_update_assign_delete_restore_and_register_emit_their_events(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner, assignee, admin = await new_user(), await new_user(), await new_user("admin")
        task = await create_task(client, owner)
        url = f"/api/v1/tasks/{task['id']}"
        patch = {"assignee_id": str(assignee.id), "status": "in_progress"}
        assert (await client.patch(url, json=patch, headers=owner.headers)).status_code == 200
        same = await client.patch(url, json={"status": "in_progress"}, headers=owner.headers)
        assert same.status_code == 200  # no change, no event
        assert (await client.delete(url, headers=owner.headers)).status_code == 204
        restored = await client.post(f"{url}/restore", headers=admin.headers)
        assert restored.status_code == 200
        registered = await client.post(
            "/api/v1/auth/register",
            json={"username": "zed", "email": "zed@example.com", "password": "pw-long-42x"},
        )
        assert registered.status_code == 201
        events = await outbox(app)
        assert [e["type"] for e in events] == [
            "task.created",
            "task.updated",
            "task.assigned",
            "task.deleted",
            "task.restored",
            "user.registered",
        ]
        assert events[1]["payload"]["changed"] == ["assignee_id", "status"]
        assert events[1]["payload"]["task"]["version"] == 2
        assert events[2]["payload"]["task"]["assignee_id"] == str(assignee.id)
        assert events[4]["actor_id"] == admin.id
        assert events[5]["payload"]["user"]["email"] == "zed@example.com"
        assert "password" not in str(events[5]["payload"])


async def _events_in(session: Any) -> list[Any]:
    return list((await session.execute(text("SELECT id FROM event"))).scalars())


class TestTaskEvents:
    async def test_readers_get_the_history_oldest_first_in_pages(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner, viewer = await new_user(), await new_user("viewer")
        task = await create_task(client, owner)
        for n in range(3):
            response = await client.patch(
                f"/api/v1/tasks/{task['id']}", json={"title": f"v{n}"}, headers=owner.headers
            )
            assert response.status_code == 200
        url = f"/api/v1/tasks/{task['id']}/events"
        first = await client.get(url, params={"limit": 3}, headers=viewer.headers)
        assert first.status_code == 200
        body = first.json()
        assert [e["type"] for e in body["items"]] == [
            "task.created",
            "task.updated",
            "task.updated",
        ]
        assert body["meta"]["has_more"] is True
        rest = await client.get(
            url, params={"limit": 3, "cursor": body["meta"]["next_cursor"]}, headers=owner.headers
        )
        assert [e["payload"]["task"]["title"] for e in rest.json()["items"]] == ["v2"]
        assert rest.json()["meta"]["has_more"] is False

    async def test_others_and_deleted_tasks_read_as_not_found(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner, stranger, admin = await new_user(), await new_user(), await new_user("admin")
        task = await create_task(client, owner)
        url = f"/api/v1/tasks/{task['id']}/events"
        assert (await client.get(url, headers=stranger.headers)).status_code == 404
        assert (
            await client.delete(f"/api/v1/tasks/{task['id']}", headers=owner.headers)
        ).status_code == 204
        assert (await client.get(url, headers=owner.headers)).status_code == 404
        history = await client.get(url, headers=admin.headers)
        assert [e["type"] for e in history.json()["items"]] == ["task.created", "task.deleted"]
