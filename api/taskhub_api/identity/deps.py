"""Resolves the calling principal; the only place routers get identity and roles from."""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from taskhub_api.db import Database, raw_connection
from taskhub_api.errors import Forbidden, Unauthorized
from taskhub_api.identity.principal import Principal, Role
from taskhub_api.identity.principal_cache import PrincipalCache
from taskhub_api.identity.repository import fetch_principal_row, provision_external_user
from taskhub_api.identity.verifier import TokenVerifier
from taskhub_api.ratelimit.deps import enforce, rate_for

_READS = frozenset({"GET", "HEAD"})


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
        cache: PrincipalCache = state.principal_cache
        key = (claims.subject, claims.session)
        # Reads may use a row read moments ago; a write reads it afresh (its
        # transaction goes to the primary anyway, and the read finds a failed primary
        # within the probe timeout, where the write would wait out command_timeout).
        row = cache.get(key) if request.method in _READS else None
        if row is None:
            read_at = monotonic()
            row = await db.principal_reader().run(
                lambda conn: fetch_principal_row(conn, claims.subject, claims.session)
            )
            cache.put(key, row, read_at)
        if claims.external and (row is None or sorted(row["roles"]) != list(claims.roles)):
            # First sight of an OIDC user, or its roles changed upstream: a write.
            db.ensure_writable()
            async with raw_connection(db.primary) as conn:
                row = await provision_external_user(conn, claims)
            cache.forget([claims.subject])
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
