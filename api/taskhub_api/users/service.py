from __future__ import annotations

import uuid

from taskhub_api.db import ReadSession, WriteSession
from taskhub_api.errors import Conflict, NotFound
from taskhub_api.identity.principal import Principal, Role
from taskhub_api.identity.repository import RefreshTokenRepository
from taskhub_api.kit import cursor
from taskhub_api.kit.pages import Keyset, created_and_id
from taskhub_api.kit.schemas import PageMeta
from taskhub_api.users.models import User
from taskhub_api.users.repository import UserRepository
from taskhub_api.users.schemas import UserUpdate

_SORT = "created_at"
_NO_FILTERS = cursor.fingerprint({})


class UserService:
    async def get(self, session: ReadSession | WriteSession, user_id: uuid.UUID) -> User:
        user = await UserRepository(session).get(user_id)
        if user is None:
            raise NotFound(f"User {user_id} does not exist.")
        return user

    async def list(
        self, session: ReadSession, cursor_key: bytes, after: str | None, limit: int
    ) -> tuple[list[User], PageMeta]:
        keyset = Keyset(cursor_key, _SORT, _NO_FILTERS)
        position = keyset.start(after, created_and_id)
        users = await UserRepository(session).list_page(position, limit + 1)
        return keyset.page(users, limit, lambda u: [u.created_at.isoformat(), str(u.id)])

    async def update(
        self, session: WriteSession, actor: Principal, user_id: uuid.UUID, data: UserUpdate
    ) -> User:
        values = data.model_dump(exclude_unset=True, exclude_none=True)
        if "roles" in values:
            values["roles"] = [Role(r).value for r in values["roles"]]
        if user_id == actor.id and (
            values.get("disabled") is True or ("roles" in values and "admin" not in values["roles"])
        ):
            raise Conflict("Admins cannot disable themselves or drop their own admin role.")
        users = UserRepository(session)
        if not values:
            return await self.get(session, user_id)
        user = await users.update(user_id, values)
        if user is None:
            raise NotFound(f"User {user_id} does not exist.")
        if values.get("disabled") is True:
            # Every login ends with the account, in this transaction: enabled again,
            # the user logs in anew; old refresh and access tokens stay dead.
            await RefreshTokenRepository(session).revoke_user(user_id)
        return user


user_service = UserService()
