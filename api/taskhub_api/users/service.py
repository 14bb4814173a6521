from __future__ import annotations

import uuid
from dataclasses import dataclass

from taskhub_api.db import ReadSession, WriteSession
from taskhub_api.errors import Conflict, NotFound, UnprocessableContent, field_error
from taskhub_api.identity.passwords import (
    EXTERNAL_PASSWORD_HASH,
    hash_password,
    password_problems,
    verify_password,
)
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


@dataclass(frozen=True, slots=True)
class AdminBootstrap:
    """What ``UserService.ensure_admin`` found and did."""

    created: bool
    promoted: bool = False  # the user existed without the admin role and got it
    # The user existed and the password asked for is not its password: left unchanged.
    password_unchanged: bool = False


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

    async def ensure_admin(
        self,
        session: WriteSession,
        *,
        username: str,
        email: str,
        password: str,
        check_password: bool,
    ) -> AdminBootstrap:
        """The bootstrap admin: created with ``password`` if missing, else given the
        admin role if it lacks it. An existing user's password is never changed here
        (that is ``set_password``); with ``check_password`` the result says whether
        ``password`` differs from it."""
        users = UserRepository(session)
        existing = await users.get_by_username(username)
        if existing is not None:
            promoted = Role.ADMIN.value not in existing.roles
            if promoted:
                await users.update(existing.id, {"roles": [*existing.roles, Role.ADMIN.value]})
            differs = check_password and not await verify_password(existing.password_hash, password)
            return AdminBootstrap(created=False, promoted=promoted, password_unchanged=differs)
        _check_password(password, username)
        created = await users.create(
            username=username,
            email=email,
            password_hash=await hash_password(password),
            roles=[Role.ADMIN.value],
        )
        if created is None:  # the username was free a moment ago: the email is taken
            raise Conflict(f"The email {email} belongs to another user.")
        return AdminBootstrap(created=True)

    async def set_password(self, session: WriteSession, username: str, password: str) -> None:
        """A new password for a local user; every login of the user ends with the old
        one (refresh and access tokens)."""
        users = UserRepository(session)
        user = await users.get_by_username(username)
        if user is None:
            raise NotFound(f"User {username} does not exist.")
        if user.password_hash == EXTERNAL_PASSWORD_HASH:
            raise Conflict(
                f"User {username} signs in through the identity provider; "
                "change the password there."
            )
        _check_password(password, user.username)
        await users.update(user.id, {"password_hash": await hash_password(password)})
        await RefreshTokenRepository(session).revoke_user(user.id)


def _check_password(password: str, username: str) -> None:
    problems = password_problems(password, username)
    if problems:
        raise UnprocessableContent(
            "The password " + "; ".join(problems) + ".",
            errors=[field_error("password", problem) for problem in problems],
        )


user_service = UserService()
