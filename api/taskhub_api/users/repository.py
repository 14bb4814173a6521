from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.db import DriverStatement, driver_connection
from taskhub_api.identity.principal_cache import changed
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
        changed(self.session, user_id)  # its principal row (roles, disabled, username)
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
