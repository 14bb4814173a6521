"""Token buckets in Redis: headers, 429s, password guessing on /auth/token, the
per-address buckets of the auth endpoints, and which address counts as the client's."""

from __future__ import annotations

import uuid

import pytest

from taskhub_api.ratelimit.clientip import ClientAddressResolver
from tests.data.conftest import PASSWORD, StartServer

TASKS = "/api/v1/tasks"
TOKEN = "/api/v1/auth/token"
REGISTER = "/api/v1/auth/register"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


class TestApiLimits:
    async def test_headers_then_429_with_retry_after(self, start_server: StartServer) -> None:
        server = start_server(
            TASKHUB_RATELIMIT__ROLES='{"user": {"requests": 5, "per_seconds": 60}}'
        )
        alice, bob = await server.signup(), await server.signup()
        async with server.client() as http:
            remaining = []
            for _ in range(5):
                response = await http.get(TASKS, headers=alice.headers)
                assert response.status_code == 200
                assert response.headers["RateLimit-Limit"] == "5"
                remaining.append(int(response.headers["RateLimit-Remaining"]))
                assert 0 < int(response.headers["RateLimit-Reset"]) <= 60
            assert remaining == [4, 3, 2, 1, 0]
            limited = await http.get(TASKS, headers=alice.headers)
            assert limited.status_code == 429
            assert limited.headers["content-type"] == "application/problem+json"
            assert 1 <= int(limited.headers["Retry-After"]) <= 12  # one token: 60 s / 5
            assert limited.headers["RateLimit-Remaining"] == "0"
            assert limited.json()["status"] == 429
            # Buckets are per principal.
            assert (await http.get(TASKS, headers=bob.headers)).status_code == 200


class TestLoginLimits:
    async def test_password_guessing_is_throttled(self, start_server: StartServer) -> None:
        server = start_server(TASKHUB_RATELIMIT__TOKEN='{"requests": 5, "per_seconds": 60}')
        victim = await server.signup()  # one login of the 5
        async with server.client() as http:
            statuses = []
            for attempt in range(12):
                form = {"username": victim.username, "password": f"guess-{attempt}"}
                statuses.append((await http.post(TOKEN, data=form)).status_code)
            assert statuses[:4] == [401] * 4
            assert set(statuses[4:]) == {429}
            # Throttled means throttled, even with the right password...
            right = {"username": victim.username, "password": PASSWORD}
            assert (await http.post(TOKEN, data=right)).status_code == 429
            # ...but only for that username from that address.
            other = await server.signup()
            assert other.headers

    async def test_forwarded_for_only_from_trusted_proxies(self, start_server: StartServer) -> None:
        untrusted = start_server(TASKHUB_RATELIMIT__TOKEN='{"requests": 2, "per_seconds": 60}')
        trusted = start_server(
            TASKHUB_RATELIMIT__TOKEN='{"requests": 2, "per_seconds": 60}',
            TASKHUB_RATELIMIT__TRUSTED_PROXIES='["127.0.0.1/32"]',
        )
        form = {"username": "nobody", "password": "wrong-password-1"}
        async with untrusted.client() as http:
            codes = [
                (await http.post(TOKEN, data=form, headers={"X-Forwarded-For": f"10.0.0.{i}"}))
                for i in range(4)
            ]
            # The peer is not a trusted proxy: a forged header changes nothing.
            assert [r.status_code for r in codes] == [401, 401, 429, 429]
        async with trusted.client() as http:
            codes = [
                (await http.post(TOKEN, data=form, headers={"X-Forwarded-For": f"10.0.0.{i}"}))
                for i in range(4)
            ]
            # Behind a trusted proxy every forwarded client has its own bucket.
            assert [r.status_code for r in codes] == [401] * 4


class TestAuthAddressLimits:
    """Per client address, whatever the username or token: registration, spraying
    passwords over many usernames, refresh and logout."""

    async def test_registration_and_spraying(self, start_server: StartServer) -> None:
        server = start_server(
            TASKHUB_RATELIMIT__REGISTER_PER_IP='{"requests": 3, "per_seconds": 3600}',
            TASKHUB_RATELIMIT__TOKEN_PER_IP='{"requests": 6, "per_seconds": 60}',
        )
        async with server.client() as http:
            statuses = []
            for _ in range(5):
                name = f"bulk-{uuid.uuid4().hex[:10]}"
                body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
                response = await http.post(REGISTER, json=body)
                statuses.append(response.status_code)
            assert statuses == [201, 201, 201, 429, 429]
            assert response.headers["content-type"] == "application/problem+json"
            assert 1 <= int(response.headers["Retry-After"]) <= 1200  # 3600 s / 3
            sprayed = []
            for i in range(8):
                form = {"username": f"victim-{i}", "password": "Winter2026!"}
                sprayed.append((await http.post(TOKEN, data=form)).status_code)
            # Every username is new, so only the per-address bucket can stop this.
            assert sprayed == [401] * 6 + [429] * 2
            assert int((await http.post(TOKEN, data=form)).headers["Retry-After"]) >= 1

    async def test_refresh_and_logout(self, start_server: StartServer) -> None:
        server = start_server(
            TASKHUB_RATELIMIT__REFRESH_PER_IP='{"requests": 3, "per_seconds": 60}',
            TASKHUB_RATELIMIT__LOGOUT_PER_IP='{"requests": 2, "per_seconds": 60}',
        )
        async with server.client() as http:
            refreshes = [
                (await http.post(REFRESH, json={"refresh_token": f"guess-{i}"})).status_code
                for i in range(5)
            ]
            assert refreshes == [401, 401, 401, 429, 429]
            logouts = [
                (await http.post(LOGOUT, json={"refresh_token": f"guess-{i}"})).status_code
                for i in range(4)
            ]
            assert logouts == [204, 204, 429, 429]


class TestClientAddress:
    @pytest.mark.parametrize(
        ("peer", "forwarded", "expected"),
        [
            ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # untrusted peer
            ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
            ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.7"], "198.51.100.1"),
            ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # repeated header
            ("10.0.0.2", [], "10.0.0.2"),
            ("10.0.0.2", ["garbage, 10.0.0.3"], "10.0.0.3"),
            ("10.0.0.2", ["198.51.100.1:4711"], "198.51.100.1"),
            ("10.0.0.2", ["[2001:db8::1]:4711"], "2001:db8::1"),
            (None, [], "unknown"),
        ],
    )
    def test_resolution(self, peer: str | None, forwarded: list[str], expected: str) -> None:
        resolver = ClientAddressResolver(["10.0.0.0/8", "::1/128"])
        assert resolver.resolve(peer, forwarded) == expected
