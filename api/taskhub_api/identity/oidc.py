"""Validates access tokens of an external OIDC issuer (Keycloak) via discovery + JWKS.

Strict: the algorithm list is pinned (RS256 by default, so an HS256 token signed with
the public key is refused), `iss`, `aud`, `exp`, `iat` and `sub` are required, and a
token whose `kid` is unknown triggers at most one JWKS refresh per interval (key
rotation) before being refused. Roles are Keycloak's realm roles plus the API client's
client roles, restricted to TaskHub's three.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from taskhub_api.errors import ServiceUnavailable, Unauthorized
from taskhub_api.identity.principal import Role
from taskhub_api.identity.tokens import AccessClaims
from taskhub_api.settings import AuthSettings

_KNOWN_ROLES = {role.value for role in Role}


class OidcVerifier:
    def __init__(self, settings: AuthSettings, client: httpx.AsyncClient | None = None) -> None:
        if not settings.oidc_issuer:
            raise ValueError("OidcVerifier needs TASKHUB_AUTH__OIDC_ISSUER")
        self._settings = settings
        self._issuer = settings.oidc_issuer.rstrip("/")
        self._discovery_url = (
            settings.oidc_discovery_url or f"{self._issuer}/.well-known/openid-configuration"
        )
        self._client = client or httpx.AsyncClient(timeout=settings.oidc_timeout_seconds)
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def issuer(self) -> str:
        return self._issuer

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            settings = self._settings
            fresh_for = settings.jwks_min_refresh_seconds if force else settings.jwks_cache_seconds
            if self._keys and age < fresh_for:
                return
            try:
                discovery = (await self._client.get(self._discovery_url)).raise_for_status().json()
                if discovery.get("issuer", "").rstrip("/") != self._issuer:
                    raise ServiceUnavailable("The identity provider announces another issuer.")
                jwks = (await self._client.get(discovery["jwks_uri"])).raise_for_status().json()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise ServiceUnavailable(
                    "The identity provider is unavailable; retry shortly.", retry_after=5
                ) from exc
            keys = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                    continue
                try:
                    keys[jwk["kid"]] = PyJWK(jwk)
                except jwt.PyJWTError:
                    continue  # a key type or algorithm we do not use
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> PyJWK:
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("The access token is signed with an unknown key.") from None

    async def verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is invalid.") from exc
        if header.get("alg") not in self._settings.oidc_algorithms:
            raise Unauthorized("The access token uses a disallowed algorithm.")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._settings.oidc_algorithms,
                audience=self._settings.oidc_audience,
                issuer=self._issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is invalid.") from exc
        # Keycloak marks access tokens "Bearer"; ID and refresh tokens differ.
        if claims.get("typ", "Bearer") != "Bearer":
            raise Unauthorized("The token is not an access token.")
        try:
            subject = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise Unauthorized("The access token's subject is not a user id.") from exc
        return AccessClaims(
            subject=subject,
            username=str(claims.get("preferred_username") or subject),
            roles=tuple(sorted(self._roles(claims))),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
            external=True,
        )

    def _roles(self, claims: dict[str, Any]) -> set[str]:
        roles: set[str] = set()
        realm = claims.get("realm_access")
        if isinstance(realm, dict) and isinstance(realm.get("roles"), list):
            roles.update(r for r in realm["roles"] if isinstance(r, str))
        clients = claims.get("resource_access")
        if isinstance(clients, dict):
            client = clients.get(self._settings.oidc_client_id)
            if isinstance(client, dict) and isinstance(client.get("roles"), list):
                roles.update(r for r in client["roles"] if isinstance(r, str))
        return roles & _KNOWN_ROLES
