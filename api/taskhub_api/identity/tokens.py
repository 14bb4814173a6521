"""The built-in token issuer: short-lived signed access tokens, opaque refresh tokens.

Access tokens are HS256 JWTs validated strictly (algorithm pinned, issuer, audience,
exp/iat/sub required, token type checked). Refresh tokens are random strings; only
their SHA-256 is stored.

An access token issued with a refresh token carries its session (``sid``): the id of
the first refresh token of the login's family, its head. Revoking the family (logout,
reuse detection, disabling the user) revokes the head, and the principal check refuses
the session's access tokens from then on (see ``fetch_principal_row``): a primary-key
lookup in the query that already reads the user row.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from taskhub_api.errors import Unauthorized
from taskhub_api.settings import AuthSettings

ALGORITHM = "HS256"
ACCESS_TYPE = "access"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: uuid.UUID
    username: str
    roles: tuple[str, ...]
    email: str | None = None
    # Issued by an external OIDC provider: its roles are authoritative, and the user
    # row is provisioned on first sight.
    external: bool = False
    # Built-in tokens of a login: the head of its refresh-token family, which must not
    # be revoked. None for tokens minted without a login (tests, benchmarks) and for
    # OIDC tokens, whose own `sid` belongs to the identity provider.
    session: uuid.UUID | None = None


def issue_access_token(
    settings: AuthSettings,
    user_id: uuid.UUID,
    username: str,
    roles: list[str],
    session: uuid.UUID | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": str(user_id),
        "iat": now,
        "nbf": now,
        "exp": now + settings.access_token_ttl_seconds,
        "jti": uuid.uuid4().hex,
        "typ": ACCESS_TYPE,
        "preferred_username": username,
        "roles": roles,
    }
    if session is not None:
        claims["sid"] = str(session)
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


class BuiltinVerifier:
    """Validates access tokens of the built-in issuer."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._key = settings.secret_key.get_secret_value()

    def verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is invalid.") from exc
        if claims.get("typ") != ACCESS_TYPE:
            raise Unauthorized("The token is not an access token.")
        try:
            subject = uuid.UUID(claims["sub"])
            session = uuid.UUID(claims["sid"]) if "sid" in claims else None
        except (ValueError, TypeError, AttributeError) as exc:
            raise Unauthorized("The access token is invalid.") from exc
        roles = claims.get("roles")
        return AccessClaims(
            subject=subject,
            username=str(claims.get("preferred_username", "")),
            roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
            session=session,
        )


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
