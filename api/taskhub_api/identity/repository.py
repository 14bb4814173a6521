from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.identity.models import RefreshToken
from taskhub_api.identity.passwords import EXTERNAL_PASSWORD_HASH
from taskhub_api.identity.principal_cache import changed
from taskhub_api.identity.tokens import AccessClaims


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        user_id: uuid.UUID,
        family_id: uuid.UUID,
        token_hash: bytes,
        expires_at: datetime,
        token_id: uuid.UUID | None = None,
    ) -> None:
        token = RefreshToken(
            user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
        )
        if token_id is not None:
            token.id = token_id
        self.session.add(token)
        await self.session.flush()

    async def family_head(self, family_id: uuid.UUID) -> uuid.UUID | None:
        """The first token of the family: the session its access tokens name. A login
        gives it the family's id; families from before that have their oldest row."""
        by_id = select(RefreshToken.id).where(RefreshToken.id == family_id).scalar_subquery()
        oldest = (
            select(RefreshToken.id)
            .where(RefreshToken.family_id == family_id)
            .order_by(RefreshToken.created_at, RefreshToken.id)
            .limit(1)
            .scalar_subquery()
        )
        # COALESCE evaluates its arguments lazily: the sort runs for old families only.
        return (await self.session.execute(select(func.coalesce(by_id, oldest)))).scalar()

    async def get_for_update(self, token_hash: bytes) -> RefreshToken | None:
        """Locks the row, so two concurrent refreshes with one token are serialised and
        the second is seen as reuse."""
        stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def mark_used(self, token_id: uuid.UUID) -> None:
        await self.session.execute(
            update(RefreshToken).where(RefreshToken.id == token_id).values(used_at=func.now())
        )

    async def revoke_family(self, family_id: uuid.UUID) -> None:
        users = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(RefreshToken.user_id)
        )
        changed(self.session, *users.scalars())

    async def revoke_user(self, user_id: uuid.UUID) -> None:
        """Every family of the user: all its logins end, refresh and access tokens."""
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
        changed(self.session, user_id)


async def provision_external_user(
    conn: asyncpg.Connection, claims: AccessClaims
) -> asyncpg.Record | None:
    """Creates (or re-syncs the roles of) the local row of a user from an external
    issuer, so tasks can reference it. It has no usable password. A username or email
    already used by a local account gets a suffix rather than taking it over."""
    candidates = [
        (claims.username, claims.email or f"{claims.subject}@users.invalid"),
        (f"{claims.username[:55]}-{claims.subject.hex[:8]}", f"{claims.subject}@users.invalid"),
    ]
    for username, email in candidates:
        try:
            return await conn.fetchrow(
                """
                INSERT INTO "user" (id, username, email, password_hash, roles)
                VALUES ($1, $2, $3, $5, $4)
                ON CONFLICT (id) DO UPDATE SET roles = EXCLUDED.roles, updated_at = now()
                RETURNING username, roles, disabled
                """,
                claims.subject,
                username,
                email,
                list(claims.roles),
                EXTERNAL_PASSWORD_HASH,
            )
        except asyncpg.UniqueViolationError:
            continue
    return None


_PRINCIPAL_SQL = 'SELECT username, roles, disabled FROM "user" WHERE id = $1'
# The same row, and whether the token's session (the head of its refresh-token family)
# is live: a primary-key probe of refresh_token in the same statement, so checking the
# session costs no round trip. Revoking a family revokes its head (it is the oldest
# row), whatever the token's age.
_PRINCIPAL_SESSION_SQL = """
SELECT u.username, u.roles, u.disabled,
       EXISTS (
           SELECT 1 FROM refresh_token r
           WHERE r.id = $2 AND r.user_id = u.id AND r.revoked_at IS NULL
       ) AS session_live
FROM "user" u WHERE u.id = $1
"""


async def fetch_principal_row(
    conn: asyncpg.Connection, user_id: uuid.UUID, session: uuid.UUID | None = None
) -> asyncpg.Record | None:
    """Current username, roles and disabled flag, so a role change or a disabled
    account applies to tokens already issued (each process reuses the row for under a
    second: ``identity.principal_cache``). With ``session`` (a built-in token's ``sid``)
    also ``session_live``: false once that login was logged out or revoked, so its
    access tokens stop then, not when they expire."""
    if session is None:
        return await conn.fetchrow(_PRINCIPAL_SQL, user_id)
    return await conn.fetchrow(_PRINCIPAL_SESSION_SQL, user_id, session)
