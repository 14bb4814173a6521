"""Users created straight in the database, each with a valid access token."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from taskhub_api.db import Database
from taskhub_api.identity.passwords import hash_password
from taskhub_api.identity.tokens import issue_access_token
from taskhub_api.settings import Settings
from taskhub_api.users.repository import UserRepository

PASSWORD = "correct-horse-42"
_hashes: dict[str, str] = {}


@dataclass
class Actor:
    id: uuid.UUID
    username: str
    email: str
    roles: list[str]
    headers: dict[str, str]


NewUser = Callable[..., Awaitable[Actor]]


async def create_user(
    db: Database, settings: Settings, *roles: str, username: str | None = None
) -> Actor:
    """A user with ``roles`` (default ``user``) and the headers of its bearer token."""
    roles_list = list(roles) or ["user"]
    name = username or f"{roles_list[0]}-{uuid.uuid4().hex[:8]}"
    if PASSWORD not in _hashes:
        _hashes[PASSWORD] = await hash_password(PASSWORD)
    async with db.transaction() as session:
        user = await UserRepository(session).create(
            username=name,
            email=f"{name}@example.com",
            password_hash=_hashes[PASSWORD],
            roles=roles_list,
        )
    assert user is not None
    token = issue_access_token(settings.auth, user.id, name, roles_list)
    return Actor(user.id, name, user.email, roles_list, {"Authorization": f"Bearer {token}"})


async def create_task(client: httpx.AsyncClient, actor: Actor, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/tasks", json={"title": "A task", **fields}, headers=actor.headers
    )
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task
