from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import Database
from taskhub_api.identity.passwords import hash_password
from taskhub_api.identity.tokens import issue_access_token
from taskhub_api.settings import Settings
from taskhub_api.users.repository import UserRepository

PASSWORD = "correct-horse-42"
_hash_cache: dict[str, str] = {}


@dataclass
class Actor:
    id: uuid.UUID
    username: str
    roles: list[str]
    headers: dict[str, str]


NewUser = Callable[..., Awaitable[Actor]]


@pytest.fixture(autouse=True)
async def clean_database(app: FastAPI) -> None:
    db: Database = app.state.db
    async with db.primary.begin() as conn:
        await conn.execute(
            text(
                'TRUNCATE "user", task, refresh_token, idempotency_key, event, outbox, '
                "job_execution, webhook, webhook_delivery, webhook_attempt RESTART IDENTITY CASCADE"
            )
        )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def new_user(app: FastAPI, settings: Settings) -> NewUser:
    """Creates a user straight in the database and returns it with a valid token."""

    async def create(*roles: str, username: str | None = None, **extra: Any) -> Actor:
        roles_list = list(roles) or ["user"]
        name = username or f"{roles_list[0]}-{uuid.uuid4().hex[:8]}"
        if PASSWORD not in _hash_cache:
            _hash_cache[PASSWORD] = await hash_password(PASSWORD)
        db: Database = app.state.db
        async with db.transaction() as session:
            user = await UserRepository(session).create(
                username=name,
                email=f"{name}@example.com",
                password_hash=_hash_cache[PASSWORD],
                roles=roles_list,
            )
        assert user is not None
        token = issue_access_token(settings.auth, user.id, name, roles_list)
        return Actor(user.id, name, roles_list, {"Authorization": f"Bearer {token}"})

    return create


async def create_task(client: httpx.AsyncClient, actor: Actor, **fields: Any) -> dict[str, Any]:
    body = {"title": "A task", **fields}
    response = await client.post("/api/v1/tasks", json=body, headers=actor.headers)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task
