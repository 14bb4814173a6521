"""Access tokens die with their login: logout, refresh-token reuse and disabling the
account end the session (the refresh-token family) at once, on every API process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskhub_api.db import Database, raw_connection
from taskhub_api.main import create_app
from taskhub_api.settings import Settings
from tests.api.test_bad_input import assert_problem
from tests.api.test_oidc import Issuer, bearer, issuer, oidc_client  # noqa: F401 - fixtures
from tests.support.users import PASSWORD, NewUser

ME = "/api/v1/users/me"
TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


async def login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await client.post(TOKEN, data={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


async def refresh(client: httpx.AsyncClient, pair: dict[str, str]) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})


async def me(client: httpx.AsyncClient, pair: dict[str, str]) -> httpx.Response:
    return await client.get(ME, headers=bearer(pair["access_token"]))


def claims(pair: dict[str, str], settings: Settings) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(
        pair["access_token"],
        settings.auth.secret_key.get_secret_value(),
        algorithms=["HS256"],
        audience=settings.auth.audience,
    )
    return decoded


class TestSessionClaim:
    async def test_access_tokens_name_their_login(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser, settings: Settings
    ) -> None:
        alice = await new_user()
        first = await login(client, alice.username)
        rotated = (await refresh(client, first)).json()
        other = await login(client, alice.username)
        sid = claims(first, settings)["sid"]
        assert claims(rotated, settings)["sid"] == sid  # one login, one session
        assert claims(other, settings)["sid"] != sid
        family = await sql(
            app, "SELECT family_id FROM refresh_token WHERE id = $1", uuid.UUID(str(sid))
        )
        assert str(family) == sid

    async def test_malformed_session_claim_is_401(
        self, client: httpx.AsyncClient, new_user: NewUser, settings: Settings
    ) -> None:
        alice = await new_user()
        now = int(time.time())
        for sid in ("not-a-uuid", 5, str(uuid.uuid4())):  # the last: no such session
            token = jwt.encode(
                {
                    "iss": settings.auth.issuer,
                    "aud": settings.auth.audience,
                    "sub": str(alice.id),
                    "iat": now,
                    "exp": now + 60,
                    "typ": "access",
                    "sid": sid,
                },
                settings.auth.secret_key.get_secret_value(),
                algorithm="HS256",
            )
            assert_problem(await client.get(ME, headers=bearer(token)), 401)

    async def test_a_session_of_another_user_is_refused(
        self, client: httpx.AsyncClient, new_user: NewUser, settings: Settings
    ) -> None:
        alice, mallory = await new_user(), await new_user()
        sid = claims(await login(client, alice.username), settings)["sid"]
        now = int(time.time())
        token = jwt.encode(
            {
                "iss": settings.auth.issuer,
                "aud": settings.auth.audience,
                "sub": str(mallory.id),
                "iat": now,
                "exp": now + 60,
                "typ": "access",
                "sid": sid,
            },
            settings.auth.secret_key.get_secret_value(),
            algorithm="HS256",
        )
        assert_problem(await client.get(ME, headers=bearer(token)), 401)


class TestRevocation:
    async def test_logout_ends_every_access_token_of_the_login(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        first = await login(client, alice.username)
        rotated = (await refresh(client, first)).json()
        elsewhere = await login(client, alice.username)
        for pair in (first, rotated, elsewhere):
            assert (await me(client, pair)).status_code == 200
        logout = await client.post(LOGOUT, json={"refresh_token": rotated["refresh_token"]})
        assert logout.status_code == 204
        for pair in (first, rotated):
            response = await me(client, pair)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        # Another login of the same user goes on.
        assert (await me(client, elsewhere)).status_code == 200

    async def test_reuse_detection_ends_the_access_tokens_too(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        stolen = await login(client, alice.username)
        rotated = (await refresh(client, stolen)).json()
        assert (await refresh(client, stolen)).status_code == 401  # reuse: family revoked
        for pair in (stolen, rotated):
            assert_problem(await me(client, pair), 401)

    async def test_families_from_before_the_session_claim(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser, settings: Settings
    ) -> None:
        """A family whose id is no token's (logins before this release): its session is
        its oldest token."""
        alice = await new_user()
        pair = await login(client, alice.username)
        legacy = uuid.uuid4()
        await sql(
            app, "UPDATE refresh_token SET family_id = $1 WHERE user_id = $2", legacy, alice.id
        )
        head = await sql(app, "SELECT id FROM refresh_token WHERE family_id = $1", legacy)
        rotated = (await refresh(client, pair)).json()
        again = (await refresh(client, rotated)).json()
        assert claims(rotated, settings)["sid"] == claims(again, settings)["sid"] == str(head)
        assert (await me(client, again)).status_code == 200
        await client.post(LOGOUT, json={"refresh_token": again["refresh_token"]})
        assert_problem(await me(client, again), 401)

    async def test_tokens_minted_without_a_login_are_not_affected(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()  # its token has no session claim
        pair = await login(client, alice.username)
        await client.post(LOGOUT, json={"refresh_token": pair["refresh_token"]})
        assert (await client.get(ME, headers=alice.headers)).status_code == 200


class TestDisable:
    async def test_disabling_ends_every_login_for_good(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin, alice = await new_user("admin"), await new_user()
        logins = [await login(client, alice.username) for _ in range(2)]
        logins.append((await refresh(client, logins[0])).json())
        url = f"/api/v1/users/{alice.id}"
        disabled = await client.patch(url, json={"disabled": True}, headers=admin.headers)
        assert disabled.status_code == 200
        revoked = await sql(
            app,
            "SELECT count(*) FROM refresh_token WHERE user_id = $1 AND revoked_at IS NULL",
            alice.id,
        )
        assert revoked == 0  # every token of every login revoked
        enabled = await client.patch(url, json={"disabled": False}, headers=admin.headers)
        assert enabled.status_code == 200
        for pair in logins:
            assert_problem(await me(client, pair), 401)
            assert_problem(await refresh(client, pair), 401)
        fresh = await login(client, alice.username)
        assert (await me(client, fresh)).status_code == 200

    async def test_a_refused_update_revokes_nothing(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin = await new_user("admin")
        pair = await login(client, admin.username)
        response = await client.patch(
            f"/api/v1/users/{admin.id}",
            json={"disabled": True},
            headers=bearer(pair["access_token"]),
        )
        assert response.status_code == 409  # admins cannot disable themselves
        assert (await me(client, pair)).status_code == 200
        assert (await refresh(client, pair)).status_code == 200

    async def test_role_changes_keep_the_logins(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin, alice = await new_user("admin"), await new_user()
        pair = await login(client, alice.username)
        url = f"/api/v1/users/{alice.id}"
        await client.patch(url, json={"roles": ["viewer"]}, headers=admin.headers)
        await client.patch(url, json={"disabled": False}, headers=admin.headers)
        assert (await me(client, pair)).json()["roles"] == ["viewer"]


class TestAcrossProcesses:
    @pytest.fixture
    async def second_app(self, settings: Settings) -> AsyncIterator[FastAPI]:
        """Another API process in all but the process: its own lifespan, pools and
        state, on the same database."""
        application = create_app(settings)
        async with LifespanManager(application):
            yield application

    async def test_revoked_on_one_instance_is_refused_on_the_other_within_a_second(
        self, client: httpx.AsyncClient, second_app: FastAPI, new_user: NewUser
    ) -> None:
        alice = await new_user()
        transport = httpx.ASGITransport(app=second_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            pair = await login(client, alice.username)
            assert (await me(other, pair)).status_code == 200
            assert (await me(other, pair)).status_code == 200
            logout = await client.post(LOGOUT, json={"refresh_token": pair["refresh_token"]})
            assert logout.status_code == 204
            revoked_at = time.monotonic()
            while (status := (await me(other, pair)).status_code) == 200:
                assert time.monotonic() - revoked_at < 1.0, "still accepted after 1 s"
                await asyncio.sleep(0.02)
            assert status == 401
            assert time.monotonic() - revoked_at < 1.0


class TestKeycloakSessions:
    async def test_keycloak_sid_is_not_a_builtin_session(
        self,
        oidc_client: httpx.AsyncClient,  # noqa: F811 - the fixture
        issuer: Issuer,  # noqa: F811 - the fixture
    ) -> None:
        token = issuer.token(sid=str(uuid.uuid4()))
        response = await oidc_client.get(ME, headers=bearer(token))
        assert response.status_code == 200, response.text


async def sql(app: FastAPI, query: str, *args: object) -> object:
    db: Database = app.state.db
    async with raw_connection(db.primary) as conn:
        return await conn.fetchval(query, *args)
