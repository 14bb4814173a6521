from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import Database
from tests.support.users import NewUser

TASKS = "/api/v1/tasks"


async def count_tasks(app: FastAPI) -> int:
    db: Database = app.state.db
    async with db.primary.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM task"))).scalar_one())


class TestIdempotencyKey:
    async def test_replay_returns_the_original_response(
        self, client: httpx.AsyncClient, new_user: NewUser, app: FastAPI
    ) -> None:
        alice = await new_user()
        headers = {**alice.headers, "Idempotency-Key": "create-1"}
        first = await client.post(TASKS, json={"title": "once"}, headers=headers)
        again = await client.post(TASKS, json={"title": "once"}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["idempotent-replayed"] == "true"
        assert await count_tasks(app) == 1

    async def test_same_key_other_body_is_422(
        self, client: httpx.AsyncClient, new_user: NewUser, app: FastAPI
    ) -> None:
        alice = await new_user()
        headers = {**alice.headers, "Idempotency-Key": "create-1"}
        await client.post(TASKS, json={"title": "once"}, headers=headers)
        other = await client.post(TASKS, json={"title": "different"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["errors"][0]["field"] == "Idempotency-Key"
        assert await count_tasks(app) == 1

    async def test_keys_are_per_user(
        self, client: httpx.AsyncClient, new_user: NewUser, app: FastAPI
    ) -> None:
        alice, bob = await new_user(), await new_user()
        for actor in (alice, bob):
            response = await client.post(
                TASKS, json={"title": "mine"}, headers={**actor.headers, "Idempotency-Key": "k"}
            )
            assert response.status_code == 201
            assert response.json()["owner_id"] == str(actor.id)
        assert await count_tasks(app) == 2

    async def test_failed_request_does_not_burn_the_key(
        self, client: httpx.AsyncClient, new_user: NewUser, app: FastAPI
    ) -> None:
        alice = await new_user()
        headers = {**alice.headers, "Idempotency-Key": "retry-me"}
        bad = {"title": "x", "assignee_id": "00000000-0000-4000-8000-000000000000"}
        assert (await client.post(TASKS, json=bad, headers=headers)).status_code == 422
        fixed = await client.post(TASKS, json=bad | {"assignee_id": None}, headers=headers)
        assert fixed.status_code == 201

    async def test_concurrent_requests_with_one_key_create_one_task(
        self, client: httpx.AsyncClient, new_user: NewUser, app: FastAPI
    ) -> None:
        alice = await new_user()
        headers = {**alice.headers, "Idempotency-Key": "race"}
        responses = await asyncio.gather(
            *(client.post(TASKS, json={"title": "race"}, headers=headers) for _ in range(8))
        )
        assert {r.status_code for r in responses} == {201}
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum("idempotent-replayed" in r.headers for r in responses) == 7
        assert await count_tasks(app) == 1

    async def test_expired_keys_can_be_reused(
        self, client: httpx.AsyncClient, new_user: NewUser, app: FastAPI
    ) -> None:
        alice = await new_user()
        headers = {**alice.headers, "Idempotency-Key": "old"}
        first = await client.post(TASKS, json={"title": "a"}, headers=headers)
        db: Database = app.state.db
        async with db.primary.begin() as conn:
            stored = await conn.execute(
                text("SELECT expires_at - created_at FROM idempotency_key WHERE key = 'old'")
            )
            assert stored.scalar_one().total_seconds() >= 24 * 3600
            await conn.execute(
                text("UPDATE idempotency_key SET expires_at = now() - interval '1s'")
            )
        second = await client.post(TASKS, json={"title": "b"}, headers=headers)
        assert second.status_code == 201
        assert second.json()["id"] != first.json()["id"]

    async def test_malformed_keys_are_422(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        for key in ("", "has space", "k" * 256, "na\xefve".encode("latin-1")):
            response = await client.post(
                TASKS, json={"title": "x"}, headers={**alice.headers, "Idempotency-Key": key}
            )
            assert response.status_code == 422, key
            assert response.json()["errors"][0]["field"] == "Idempotency-Key"
