"""Keycloak tokens: RS256, validated through OIDC discovery and JWKS served by a real
local HTTP issuer whose tokens are shaped like Keycloak's."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from taskhub_api.main import create_app
from taskhub_api.settings import Settings
from tests.support.users import NewUser

CLIENT = "taskhub-api"


@dataclass
class Issuer:
    """A Keycloak realm in miniature: discovery document, JWKS, and signing."""

    base: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    jwks_requests: int = 0

    @property
    def url(self) -> str:
        return f"{self.base}/realms/taskhub"

    def rotate(self) -> str:
        kid = uuid.uuid4().hex
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, kid: str | None = None, **overrides: Any) -> str:
        kid = kid or next(iter(self.keys))
        now = int(time.time())
        sub = overrides.pop("sub", str(uuid.uuid4()))
        claims: dict[str, Any] = {
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.url,
            "aud": [CLIENT, "account"],
            "sub": sub,
            "typ": "Bearer",
            "azp": CLIENT,
            "session_state": str(uuid.uuid4()),
            "scope": "openid profile email",
            "email_verified": True,
            "preferred_username": "kc-user",
            "email": "kc-user@example.com",
            "realm_access": {"roles": ["default-roles-taskhub", "offline_access", "user"]},
            "resource_access": {"account": {"roles": ["manage-account"]}},
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    realm = Issuer()
    realm.rotate()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/realms/taskhub/.well-known/openid-configuration":
                body = {
                    "issuer": realm.url,
                    "jwks_uri": f"{realm.url}/protocol/openid-connect/certs",
                    "token_endpoint": f"{realm.url}/protocol/openid-connect/token",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            elif self.path == "/realms/taskhub/protocol/openid-connect/certs":
                realm.jwks_requests += 1
                body = realm.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    realm.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield realm
    server.shutdown()


@pytest.fixture
async def oidc_client(settings: Settings, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    auth = settings.auth.model_copy(
        update={"oidc_issuer": issuer.url, "jwks_min_refresh_seconds": 1.0}
    )
    app = create_app(settings.model_copy(update={"auth": auth}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestKeycloakTokens:
    async def test_user_is_provisioned_and_can_work(
        self, oidc_client: httpx.AsyncClient, issuer: Issuer
    ) -> None:
        token = issuer.token(preferred_username="kc-alice", email="kc-alice@example.com")
        me = await oidc_client.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "kc-alice"
        assert me.json()["roles"] == ["user"]
        created = await oidc_client.post(
            "/api/v1/tasks", json={"title": "x"}, headers=bearer(token)
        )
        assert created.status_code == 201
        assert created.json()["owner_id"] == me.json()["id"]

    @pytest.mark.parametrize(
        ("realm_roles", "client_roles", "expected"),
        [
            (["admin"], [], ["admin"]),
            ([], ["viewer"], ["viewer"]),
            (["user", "offline_access"], ["admin"], ["admin", "user"]),
            (["offline_access"], [], []),
        ],
    )
    async def test_roles_come_from_realm_and_client_roles(
        self,
        oidc_client: httpx.AsyncClient,
        issuer: Issuer,
        realm_roles: list[str],
        client_roles: list[str],
        expected: list[str],
    ) -> None:
        token = issuer.token(
            realm_access={"roles": realm_roles},
            resource_access={CLIENT: {"roles": client_roles}, "other": {"roles": ["admin"]}},
        )
        me = await oidc_client.get("/api/v1/users/me", headers=bearer(token))
        assert sorted(me.json()["roles"]) == expected
        write = await oidc_client.post("/api/v1/tasks", json={"title": "x"}, headers=bearer(token))
        assert write.status_code == (201 if {"admin", "user"} & set(expected) else 403)

    async def test_role_changes_in_keycloak_apply_on_the_next_token(
        self, oidc_client: httpx.AsyncClient, issuer: Issuer
    ) -> None:
        sub = str(uuid.uuid4())
        user = issuer.token(sub=sub, realm_access={"roles": ["user"]})
        viewer = issuer.token(sub=sub, realm_access={"roles": ["viewer"]})
        assert (
            await oidc_client.post("/api/v1/tasks", json={"title": "x"}, headers=bearer(user))
        ).status_code == 201
        assert (
            await oidc_client.post("/api/v1/tasks", json={"title": "x"}, headers=bearer(viewer))
        ).status_code == 403

    @pytest.mark.parametrize(
        "overrides",
        [
            {"exp": int(time.time()) - 600},
            {"aud": ["account"]},
            {"iss_suffix": "/other"},
            {"typ": "ID"},
            {"sub": "not-a-uuid"},
            {"exp": None},
        ],
        ids=["expired", "audience", "issuer", "id-token", "subject", "no-exp"],
    )
    async def test_rejects_invalid_tokens(
        self, oidc_client: httpx.AsyncClient, issuer: Issuer, overrides: dict[str, Any]
    ) -> None:
        if "iss_suffix" in overrides:
            overrides = {"iss": issuer.url + overrides.pop("iss_suffix")}
        response = await oidc_client.get(
            "/api/v1/users/me", headers=bearer(issuer.token(**overrides))
        )
        assert response.status_code == 401

    async def test_rejects_forged_signatures_and_algorithm_confusion(
        self, oidc_client: httpx.AsyncClient, issuer: Issuer
    ) -> None:
        kid = next(iter(issuer.keys))
        claims = jwt.decode(issuer.token(), options={"verify_signature": False})
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": kid})
        # HS256 "signed" with the issuer's public key: the classic confusion attack.
        pem = (
            issuer.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        signing_input = b".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
            for part in ({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
        )
        mac = hmac.new(pem, signing_input, hashlib.sha256).digest()
        confused = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
        unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
        for token in (forged, confused, unsigned):
            response = await oidc_client.get("/api/v1/users/me", headers=bearer(token))
            assert response.status_code == 401

    async def test_key_rotation_refreshes_the_jwks_at_a_bounded_rate(
        self, oidc_client: httpx.AsyncClient, issuer: Issuer
    ) -> None:
        ok = await oidc_client.get("/api/v1/users/me", headers=bearer(issuer.token()))
        assert ok.status_code == 200
        # Forged key ids right after a fetch: refused without asking the issuer again.
        before = issuer.jwks_requests
        claims = jwt.decode(issuer.token(), options={"verify_signature": False})
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for i in range(5):
            forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": f"x{i}"})
            response = await oidc_client.get("/api/v1/users/me", headers=bearer(forged))
            assert response.status_code == 401
        assert issuer.jwks_requests == before

        new_kid = issuer.rotate()
        await asyncio.sleep(1.1)  # past jwks_min_refresh_seconds
        rotated = await oidc_client.get("/api/v1/users/me", headers=bearer(issuer.token(new_kid)))
        assert rotated.status_code == 200
        assert issuer.jwks_requests == before + 1

    async def test_builtin_tokens_still_work(
        self, oidc_client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        local = await new_user("user")
        assert (await oidc_client.get("/api/v1/users/me", headers=local.headers)).status_code == 200

    async def test_username_clash_with_a_local_account(
        self, oidc_client: httpx.AsyncClient, issuer: Issuer, new_user: NewUser
    ) -> None:
        local = await new_user("user", username="bob")
        token = issuer.token(preferred_username="bob", email="bob@example.com")
        me = await oidc_client.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 200
        assert me.json()["username"].startswith("bob-")
        assert me.json()["id"] != str(local.id)


async def test_unreachable_identity_provider_is_503(settings: Settings, issuer: Issuer) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/realms/taskhub"
    auth = settings.auth.model_copy(update={"oidc_issuer": dead})
    app = create_app(settings.model_copy(update={"auth": auth}))
    token = jwt.encode(
        {"iss": dead, "sub": str(uuid.uuid4()), "exp": int(time.time()) + 60},
        issuer.keys[next(iter(issuer.keys))],
        algorithm="RS256",
        headers={"kid": "k"},
    )
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/api/v1/users/me", headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
