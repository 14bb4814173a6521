from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.auth.tokens import AccessClaims
from taskhub_api.db import DriverStatement, driver_connection
from taskhub_api.users.models import User

# Built once (on the create path): the id arrives as a parameter.
ACTIVE_USER = DriverStatement.compile(
    select(User.id).where(User.id == bindparam("user_id"), User.disabled.is_(False))
)


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_username(self, username: str) -> User | None:
        stmt = select(User).where(func.lower(User.username) == username.lower())
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def username_taken(self, username: str) -> bool:
        return await self.get_by_username(username) is not None

    async def create(
        self, *, username: str, email: str, password_hash: str, roles: list[str]
    ) -> User | None:
        """The new user, or None when the username or email is taken (no exception, so
        the transaction stays usable)."""
        stmt = (
            insert(User)
            .values(username=username, email=email, password_hash=password_hash, roles=roles)
            .on_conflict_do_nothing()
            .returning(User)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(self, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[User]:
        stmt = select(User).order_by(User.created_at, User.id).limit(limit)
        if after is not None:
            stmt = stmt.where(tuple_(User.created_at, User.id) > tuple_(*after))
        return list((await self.session.execute(stmt)).scalars())

    async def update(self, user_id: uuid.UUID, values: dict[str, Any]) -> User | None:
        stmt = (
            update(User)
            .where(User.id == user_id)
            .values(**values, updated_at=func.now())
            .returning(User)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def active_assignee_exists(self, user_id: uuid.UUID) -> bool:
        conn = await driver_connection(self.session)
        found = await conn.fetchrow(ACTIVE_USER.sql, *ACTIVE_USER.args({"user_id": user_id}))
        return found is not None


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
                VALUES ($1, $2, $3, '!external', $4)
                ON CONFLICT (id) DO UPDATE SET roles = EXCLUDED.roles, updated_at = now()
                RETURNING username, roles, disabled
                """,
                claims.subject,
                username,
                email,
                list(claims.roles),
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
    """Current username, roles and disabled flag: checked on every request so a role
    change or a disabled account takes effect at once. With ``session`` (a built-in
    token's ``sid``) also ``session_live``: false once that login was logged out or
    revoked, so its access tokens stop at once, not when they expire."""
    if session is None:
        return await conn.fetchrow(_PRINCIPAL_SQL, user_id)
    return await conn.fetchrow(_PRINCIPAL_SESSION_SQL, user_id, session)
