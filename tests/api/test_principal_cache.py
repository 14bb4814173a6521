"""The principal cache (identity/principal_cache.py): a read served within the cache's
time needs no principal read; a disabled account or a changed role takes effect for
reads at once in the process that made the change and within one second in every other
one, and for writes at once everywhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import REGISTRY

from taskhub_api.main import create_app
from taskhub_api.settings import Settings
from tests.support.users import NewUser

ME = "/api/v1/users/me"
TASKS = "/api/v1/tasks"
USERS = "/api/v1/users"


def principal_reads() -> float:
    # Every read through a ReadEngine; on GET /users/me that is the principal's row only
    # (the endpoint reads the user in its own session).
    return sum(
        REGISTRY.get_sample_value("taskhub_db_reads_total", {"target": target}) or 0
        for target in ("primary", "replica", "fallback", "retry")
    )


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process in all but the process: its own lifespan, pools, state and
    principal cache, on the same database."""
    application: FastAPI = create_app(settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def within_a_second(check: Callable[[], Awaitable[bool]], changed_at: float) -> float:
    """Polls ``check`` until true; fails if that takes a second or more."""
    while not await check():
        assert time.monotonic() - changed_at < 1.0, "the change still not seen after 1 s"
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - changed_at
    assert elapsed < 1.0
    return elapsed


class TestHits:
    async def test_a_repeated_request_reads_no_principal_row(
        self, other: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        assert (await other.get(ME, headers=alice.headers)).status_code == 200
        before = principal_reads()
        for _ in range(5):
            assert (await other.get(ME, headers=alice.headers)).status_code == 200
        assert principal_reads() == before
        await asyncio.sleep(0.6)  # past principal_cache_seconds (0.5): read again
        assert (await other.get(ME, headers=alice.headers)).status_code == 200
        assert principal_reads() == before + 1

    async def test_off_reads_every_time(self, settings: Settings, new_user: NewUser) -> None:
        auth = settings.auth.model_copy(update={"principal_cache_seconds": 0})
        application = create_app(settings.model_copy(update={"auth": auth}))
        alice = await new_user()
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                before = principal_reads()
                for _ in range(3):
                    assert (await client.get(ME, headers=alice.headers)).status_code == 200
                assert principal_reads() == before + 3


class TestChanges:
    async def test_disabled_at_once_here_and_within_a_second_elsewhere(
        self, client: httpx.AsyncClient, other: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin, alice = await new_user("admin"), await new_user()
        # Both processes have alice's row cached.
        for api in (client, other):
            assert (await api.get(ME, headers=alice.headers)).status_code == 200
            assert (await api.get(ME, headers=alice.headers)).status_code == 200
        disabled = await client.patch(
            f"/api/v1/users/{alice.id}", json={"disabled": True}, headers=admin.headers
        )
        assert disabled.status_code == 200, disabled.text
        changed_at = time.monotonic()
        assert (await client.get(ME, headers=alice.headers)).status_code == 401

        async def refused() -> bool:
            return (await other.get(ME, headers=alice.headers)).status_code == 401

        await within_a_second(refused, changed_at)

    async def test_a_role_taken_away_at_once_here_and_within_a_second_elsewhere(
        self, client: httpx.AsyncClient, other: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin, carol = await new_user("admin"), await new_user("admin")
        for api in (client, other):  # both processes have carol's row (admin) cached
            assert (await api.get(USERS, headers=carol.headers)).status_code == 200
        demoted = await client.patch(
            f"/api/v1/users/{carol.id}", json={"roles": ["user"]}, headers=admin.headers
        )
        assert demoted.status_code == 200, demoted.text
        changed_at = time.monotonic()
        assert (await client.get(USERS, headers=carol.headers)).status_code == 403

        async def forbidden() -> bool:
            answer = await other.get(USERS, headers=carol.headers)
            assert answer.status_code in (200, 403), answer.text
            return answer.status_code == 403

        await within_a_second(forbidden, changed_at)

    async def test_writes_read_the_principal_afresh(
        self, client: httpx.AsyncClient, other: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin, dave = await new_user("admin"), await new_user()
        assert (await other.get(ME, headers=dave.headers)).status_code == 200  # cached
        disabled = await client.patch(
            f"/api/v1/users/{dave.id}", json={"disabled": True}, headers=admin.headers
        )
        assert disabled.status_code == 200, disabled.text
        write = await other.post(TASKS, json={"title": "t"}, headers=dave.headers)
        assert write.status_code == 401, write.text
