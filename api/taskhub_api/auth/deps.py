"""Resolves the calling principal; the only place routers get identity and roles from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from taskhub_api.auth.principal import Principal
from taskhub_api.auth.verifier import TokenVerifier
from taskhub_api.db import raw_connection
from taskhub_api.deps import DatabaseDep
from taskhub_api.errors import Forbidden, Unauthorized
from taskhub_api.ratelimit.deps import enforce, rate_for
from taskhub_api.users.models import Role
from taskhub_api.users.repository import fetch_principal_row, provision_external_user

bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_principal(
    request: Request, db: DatabaseDep, token: Annotated[str | None, Depends(bearer)]
) -> Principal:
    if not token:
        raise Unauthorized("A bearer token is required.")
    verifier: TokenVerifier = request.app.state.token_verifier
    claims = await verifier.verify(token)
    # Throttled before any database work, by the roles the token claims.
    settings = request.app.state.settings.ratelimit
    await enforce(request, "api", str(claims.subject), rate_for(settings, claims.roles))
    # A short checkout of its own, released before the endpoint takes its connection,
    # so a request never holds two pooled connections at once.
    row = await db.principal_reader().run(lambda conn: fetch_principal_row(conn, claims.subject))
    if claims.external and (row is None or sorted(row["roles"]) != list(claims.roles)):
        # First sight of an OIDC user, or its roles changed upstream: a write.
        db.ensure_writable()
        async with raw_connection(db.primary) as conn:
            row = await provision_external_user(conn, claims)
    if row is None or row["disabled"]:
        raise Unauthorized("The account is disabled or no longer exists.")
    return Principal(
        id=claims.subject,
        username=row["username"],
        roles=frozenset(Role(role) for role in row["roles"]),
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_writer(principal: CurrentPrincipal) -> Principal:
    if not principal.can_write:
        raise Forbidden("Your role allows reading only.")
    return principal


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This action requires the admin role.")
    return principal


WriterPrincipal = Annotated[Principal, Depends(require_writer)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
