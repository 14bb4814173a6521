from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest

from taskhub_api.settings import Settings
from tests.support.users import PASSWORD, NewUser

REGISTER = "/api/v1/auth/register"
TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


async def register(
    client: httpx.AsyncClient, username: str = "alice", **extra: str
) -> httpx.Response:
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    return await client.post(REGISTER, json={**body, **extra})


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(TOKEN, data={"username": username, "password": password})


class TestRegister:
    async def test_creates_a_user_with_the_user_role(self, client: httpx.AsyncClient) -> None:
        response = await register(client)
        assert response.status_code == 201
        body = response.json()
        assert body["username"] == "alice"
        assert body["roles"] == ["user"]
        assert "password" not in response.text and "hash" not in response.text

    async def test_username_is_unique_case_insensitively(self, client: httpx.AsyncClient) -> None:
        assert (await register(client, "alice")).status_code == 201
        response = await register(client, "ALICE", email="other@example.com")
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"] == [{"field": "username", "message": "is already taken"}]

    async def test_email_is_unique(self, client: httpx.AsyncClient) -> None:
        assert (await register(client, "alice")).status_code == 201
        response = await register(client, "bob", email="Alice@example.com")
        assert response.status_code == 409
        assert response.json()["errors"][0]["field"] == "email"

    @pytest.mark.parametrize(
        ("password", "message"),
        [
            ("short1", "must be at least 10 characters long"),
            ("onlyletters-here", "must contain a digit"),
            ("1234567890123", "must contain a letter"),
            ("xx-alice-2024-xx", "must not contain the username"),
            ("a1" * 65, "must be at most 128 characters long"),
        ],
    )
    async def test_password_rules_have_precise_messages(
        self, client: httpx.AsyncClient, password: str, message: str
    ) -> None:
        response = await register(client, password=password)
        assert response.status_code == 422
        assert {"field": "password", "message": message} in response.json()["errors"]
        assert message in response.json()["detail"]

    async def test_rejects_bad_username_and_email(self, client: httpx.AsyncClient) -> None:
        response = await register(client, "a b", email="not-an-email")
        assert response.status_code == 422
        fields = {e["field"] for e in response.json()["errors"]}
        assert fields == {"username", "email"}


class TestToken:
    async def test_issues_a_token_pair(self, client: httpx.AsyncClient, settings: Settings) -> None:
        await register(client)
        response = await login(client, "Alice")  # usernames are case-insensitive
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == settings.auth.access_token_ttl_seconds
        me = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.json()["username"] == "alice"

    async def test_same_401_for_unknown_user_and_wrong_password(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client)
        wrong = await login(client, "alice", "wrong-password-1")
        unknown = await login(client, "nobody", PASSWORD)
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["detail"] == unknown.json()["detail"]

    async def test_disabled_user_cannot_log_in(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin = await new_user("admin")
        user = await new_user("user")
        await client.patch(
            f"/api/v1/users/{user.id}", json={"disabled": True}, headers=admin.headers
        )
        assert (await login(client, user.username)).status_code == 401


class TestRefresh:
    async def test_rotates_and_detects_reuse(self, client: httpx.AsyncClient) -> None:
        await register(client)
        first = (await login(client, "alice")).json()
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        assert second["refresh_token"] != first["refresh_token"]
        third = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
        assert third.status_code == 200

        # The rotated first token comes back: the whole family is revoked, including
        # the newest token, which was never used.
        reuse = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        newest = await client.post(REFRESH, json={"refresh_token": third.json()["refresh_token"]})
        assert newest.status_code == 401

    async def test_other_logins_survive_a_revoked_family(self, client: httpx.AsyncClient) -> None:
        await register(client)
        stolen = (await login(client, "alice")).json()
        other = (await login(client, "alice")).json()
        await client.post(REFRESH, json={"refresh_token": stolen["refresh_token"]})
        await client.post(REFRESH, json={"refresh_token": stolen["refresh_token"]})
        response = await client.post(REFRESH, json={"refresh_token": other["refresh_token"]})
        assert response.status_code == 200

    async def test_unknown_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(REFRESH, json={"refresh_token": "nope"})
        assert response.status_code == 401

    async def test_logout_revokes_the_family(self, client: httpx.AsyncClient) -> None:
        await register(client)
        pair = (await login(client, "alice")).json()
        rotated = (await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})).json()
        assert (
            await client.post(LOGOUT, json={"refresh_token": pair["refresh_token"]})
        ).status_code == 204
        response = await client.post(REFRESH, json={"refresh_token": rotated["refresh_token"]})
        assert response.status_code == 401


class TestAccessTokenValidation:
    def _token(self, settings: Settings, **overrides: object) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": settings.auth.issuer,
            "aud": settings.auth.audience,
            "sub": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 60,
            "typ": "access",
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, settings.auth.secret_key.get_secret_value(), algorithm="HS256")

    @pytest.mark.parametrize(
        "overrides",
        [
            {"exp": int(time.time()) - 3600},
            {"iss": "someone-else"},
            {"aud": "another-api"},
            {"typ": "refresh"},
            {"sub": "not-a-uuid"},
            {"exp": None},
        ],
        ids=["expired", "issuer", "audience", "type", "subject", "no-exp"],
    )
    async def test_rejects_invalid_claims(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        new_user: NewUser,
        overrides: dict[str, object],
    ) -> None:
        user = await new_user()
        token = self._token(settings, **{"sub": str(user.id), **overrides})
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_rejects_other_keys_and_the_none_algorithm(
        self, client: httpx.AsyncClient, settings: Settings, new_user: NewUser
    ) -> None:
        user = await new_user()
        claims = {
            "sub": str(user.id),
            "iss": settings.auth.issuer,
            "aud": settings.auth.audience,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "typ": "access",
        }
        forged = jwt.encode(claims, "another-secret-that-is-long-enough!", algorithm="HS256")
        unsigned = jwt.encode(claims, None, algorithm="none")
        for token in (forged, unsigned, "garbage", ""):
            response = await client.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401, token

    async def test_disabled_users_tokens_stop_working(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin = await new_user("admin")
        user = await new_user("user")
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
        response = await client.patch(
            f"/api/v1/users/{user.id}", json={"disabled": True}, headers=admin.headers
        )
        assert response.status_code == 200
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 401
