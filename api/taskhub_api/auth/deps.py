"""Resolves the calling principal; the only place routers get identity and roles from.
Also the login form, validated and throttled before the password is checked."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.security import OAuth2PasswordBearer

from taskhub_api.auth.principal import Principal
from taskhub_api.auth.schemas import TokenRequest
from taskhub_api.auth.verifier import TokenVerifier
from taskhub_api.db import Database, raw_connection
from taskhub_api.errors import Forbidden, Unauthorized
from taskhub_api.ratelimit.deps import client_address, enforce, rate_for
from taskhub_api.settings import RateLimitSettings
from taskhub_api.users.models import Role
from taskhub_api.users.repository import fetch_principal_row, provision_external_user


class PrincipalResolver(OAuth2PasswordBearer):
    """The bearer-token scheme of the OpenAPI document, and the dependency that turns
    the token into the principal. One dependency taking only the request: FastAPI
    resolves every dependency on every request, so the hot paths keep the graph small."""

    def __init__(self, require: Callable[[Principal], None] | None = None) -> None:
        # One scheme in the OpenAPI document, whatever the requirement.
        super().__init__(
            tokenUrl="/api/v1/auth/token", scheme_name="OAuth2PasswordBearer", auto_error=False
        )
        self.require = require

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        token = await super().__call__(request)
        if not token:
            raise Unauthorized("A bearer token is required.")
        state = request.app.state
        verifier: TokenVerifier = state.token_verifier
        claims = await verifier.verify(token)
        # Throttled before any database work, by the roles the token claims.
        if state.rate_limiter.enabled:
            await enforce(
                request,
                "api",
                str(claims.subject),
                rate_for(state.settings.ratelimit, claims.roles),
            )
        # A short checkout of its own, released before the endpoint takes its
        # connection, so a request never holds two pooled connections at once.
        db: Database = state.db
        row = await db.principal_reader().run(
            lambda conn: fetch_principal_row(conn, claims.subject, claims.session)
        )
        if claims.external and (row is None or sorted(row["roles"]) != list(claims.roles)):
            # First sight of an OIDC user, or its roles changed upstream: a write.
            db.ensure_writable()
            async with raw_connection(db.primary) as conn:
                row = await provision_external_user(conn, claims)
        if row is None or row["disabled"]:
            raise Unauthorized("The account is disabled or no longer exists.")
        if claims.session is not None and not row["session_live"]:
            raise Unauthorized("The session has ended (logged out or revoked); log in again.")
        principal = Principal(
            id=claims.subject,
            username=row["username"],
            roles=frozenset(Role(role) for role in row["roles"]),
        )
        if self.require is not None:
            self.require(principal)
        return principal


def _writer(principal: Principal) -> None:
    if not principal.can_write:
        raise Forbidden("Your role allows reading only.")


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This action requires the admin role.")


# One resolver per requirement (not a second dependency on top of the first): an
# endpoint depends on exactly one of them.
CurrentPrincipal = Annotated[Principal, Depends(PrincipalResolver())]
WriterPrincipal = Annotated[Principal, Depends(PrincipalResolver(_writer))]
AdminPrincipal = Annotated[Principal, Depends(PrincipalResolver(_admin))]


async def limit_login(request: Request, form: Annotated[TokenRequest, Form()]) -> TokenRequest:
    """Password guessing: a bucket per client address and username, checked before the
    (deliberately slow) password hash. Runs only on a form that passed validation
    (FastAPI does not call a dependency whose parameters failed), so no username
    reaches the throttle or the database unchecked."""
    settings: RateLimitSettings = request.app.state.settings.ratelimit
    subject = f"{client_address(request)}\n{form.username.lower()}"
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    await enforce(request, "token", digest, settings.token)
    return form


# The validated login form, throttled per address and username.
LoginForm = Annotated[TokenRequest, Depends(limit_login)]
