"""Per-address buckets of the auth endpoints, in process against the real Redis (the
real servers are in tests/data/test_ratelimit.py), and failing open without Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskhub_api.db import Database, raw_connection
from taskhub_api.main import create_app
from taskhub_api.settings import Rate, RateLimitSettings, Settings
from tests.api.test_bad_input import assert_problem
from tests.support.net import CLOSED_PORT
from tests.support.users import PASSWORD, NewUser

REGISTER = "/api/v1/auth/register"
TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
GENEROUS = Rate(requests=10_000)

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def limited(settings: Settings) -> Client:
    """A client of an app of its own (fresh buckets) with the given per-IP limits."""

    @asynccontextmanager
    async def start(
        *, redis_url: str | None = None, trusted: list[str] | None = None, **rates: Rate
    ) -> AsyncIterator[httpx.AsyncClient]:
        ratelimit = RateLimitSettings(
            token=GENEROUS,
            token_per_ip=GENEROUS,
            register_per_ip=GENEROUS,
            refresh_per_ip=GENEROUS,
            logout_per_ip=GENEROUS,
            trusted_proxies=trusted or [],
        ).model_copy(update=rates)
        redis = settings.redis.model_copy(
            update={"key_prefix": f"taskhub-test-{uuid.uuid4().hex[:8]}:"}
            | ({"url": redis_url} if redis_url else {})
        )
        app = create_app(settings.model_copy(update={"ratelimit": ratelimit, "redis": redis}))
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                yield c

    return start


def signup_body(name: str | None = None) -> dict[str, str]:
    name = name or f"user-{uuid.uuid4().hex[:8]}"
    return {"username": name, "email": f"{name}@example.com", "password": PASSWORD}


def assert_limited(response: httpx.Response) -> None:
    assert_problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Remaining"] == "0"


class TestRegister:
    async def test_registrations_per_address(self, limited: Client, app: FastAPI) -> None:
        async with limited(register_per_ip=Rate(requests=2, per_seconds=3600)) as client:
            for _ in range(2):
                response = await client.post(REGISTER, json=signup_body())
                assert response.status_code == 201, response.text
                assert response.headers["RateLimit-Limit"] == "2"
            refused = await client.post(REGISTER, json=signup_body("refused-user"))
            assert_limited(refused)
            assert 1 <= int(refused.headers["Retry-After"]) <= 1800
            # Checked before the body is read: floods of garbage count, and are refused.
            assert_limited(await client.post(REGISTER, content=b"{"))
        db: Database = app.state.db
        async with raw_connection(db.primary) as conn:
            assert await conn.fetchval('SELECT count(*) FROM "user"') == 2

    async def test_forwarded_clients_have_their_own_buckets(self, limited: Client) -> None:
        rate = Rate(requests=1, per_seconds=3600)
        async with limited(register_per_ip=rate, trusted=["127.0.0.1/32"]) as client:
            for i in range(3):
                headers = {"X-Forwarded-For": f"198.51.100.{i}"}
                response = await client.post(REGISTER, json=signup_body(), headers=headers)
                assert response.status_code == 201, response.text
            again = {"X-Forwarded-For": "198.51.100.0"}
            assert_limited(await client.post(REGISTER, json=signup_body(), headers=again))


class TestToken:
    async def test_spraying_many_usernames_from_one_address(
        self, limited: Client, new_user: NewUser
    ) -> None:
        alice = await new_user()
        async with limited(token_per_ip=Rate(requests=3, per_seconds=60)) as client:
            for i in range(3):
                form = {"username": f"victim-{i}", "password": "Spring2026!"}
                assert (await client.post(TOKEN, data=form)).status_code == 401
            sprayed = await client.post(TOKEN, data={"username": "victim-9", "password": "x"})
            assert_limited(sprayed)
            right = {"username": alice.username, "password": PASSWORD}
            assert_limited(await client.post(TOKEN, data=right))

    async def test_headers_tell_of_the_tighter_bucket(
        self, limited: Client, new_user: NewUser
    ) -> None:
        alice = await new_user()
        async with limited(
            token=Rate(requests=2, per_seconds=60), token_per_ip=Rate(requests=50, per_seconds=60)
        ) as client:
            form = {"username": alice.username, "password": PASSWORD}
            first = await client.post(TOKEN, data=form)
            assert first.status_code == 200
            assert (first.headers["RateLimit-Limit"], first.headers["RateLimit-Remaining"]) == (
                "2",
                "1",
            )
            await client.post(TOKEN, data=form)
            assert_limited(await client.post(TOKEN, data=form))
            # The address bucket still lets other usernames through.
            other = {"username": "someone-else", "password": PASSWORD}
            assert (await client.post(TOKEN, data=other)).status_code == 401


class TestRefreshAndLogout:
    async def test_refresh_per_address(self, limited: Client) -> None:
        async with limited(refresh_per_ip=Rate(requests=2, per_seconds=60)) as client:
            for _ in range(2):
                response = await client.post(REFRESH, json={"refresh_token": "guess"})
                assert response.status_code == 401
            assert_limited(await client.post(REFRESH, json={"refresh_token": "guess"}))

    async def test_logout_per_address(self, limited: Client) -> None:
        async with limited(logout_per_ip=Rate(requests=2, per_seconds=60)) as client:
            for _ in range(2):
                response = await client.post(LOGOUT, json={"refresh_token": "guess"})
                assert response.status_code == 204
            assert_limited(await client.post(LOGOUT, json={"refresh_token": "guess"}))


class TestWithoutRedis:
    async def test_auth_endpoints_fail_open(self, limited: Client) -> None:
        one = Rate(requests=1, per_seconds=3600)
        async with limited(
            redis_url=f"redis://127.0.0.1:{CLOSED_PORT}/0",  # nothing listens
            token=one,
            token_per_ip=one,
            register_per_ip=one,
            refresh_per_ip=one,
            logout_per_ip=one,
        ) as client:
            body = signup_body()
            for _ in range(2):
                assert (await client.post(REGISTER, json=signup_body())).status_code == 201
            assert (await client.post(REGISTER, json=body)).status_code == 201
            form = {"username": body["username"], "password": PASSWORD}
            pairs = []
            for _ in range(2):
                response = await client.post(TOKEN, data=form)
                assert response.status_code == 200, response.text
                assert "RateLimit-Limit" not in response.headers
                pairs.append(response.json())
            for pair in pairs:
                token = {"refresh_token": pair["refresh_token"]}
                assert (await client.post(REFRESH, json=token)).status_code == 200
                assert (await client.post(LOGOUT, json=token)).status_code == 204
