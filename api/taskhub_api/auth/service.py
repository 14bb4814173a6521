from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from taskhub_api.auth.schemas import TokenPair
from taskhub_api.db import WriteSession, driver_connection
from taskhub_api.errors import Conflict, Unauthorized, UnprocessableContent, field_error
from taskhub_api.events.repository import record_event
from taskhub_api.identity.passwords import hash_password, password_problems, verify_password
from taskhub_api.identity.principal import Role
from taskhub_api.identity.repository import RefreshTokenRepository
from taskhub_api.identity.tokens import hash_refresh_token, issue_access_token, new_refresh_token
from taskhub_api.settings import AuthSettings
from taskhub_api.users.models import User
from taskhub_api.users.repository import UserRepository
from taskhub_api.users.schemas import UserCreate

_BAD_LOGIN = "Incorrect username or password."
_BAD_REFRESH = "The refresh token is invalid, expired or revoked."


class AuthService:
    async def register(
        self, session: WriteSession, data: UserCreate, roles: list[Role] | None = None
    ) -> User:
        problems = password_problems(data.password, data.username)
        if problems:
            raise UnprocessableContent(
                "The password " + "; ".join(problems) + ".",
                errors=[field_error("password", p) for p in problems],
            )
        users = UserRepository(session)
        user = await users.create(
            username=data.username,
            email=str(data.email),
            password_hash=await hash_password(data.password),
            roles=[r.value for r in roles or [Role.USER]],
        )
        if user is None:
            if await users.username_taken(data.username):
                raise Conflict(
                    f"The username '{data.username}' is already taken.",
                    errors=[field_error("username", "is already taken")],
                )
            raise Conflict(
                "The email address is already registered.",
                errors=[field_error("email", "is already registered")],
            )
        await record_event(
            await driver_connection(session),
            type="user.registered",
            aggregate_type="user",
            aggregate_id=user.id,
            actor_id=user.id,
            payload={"user": {"id": user.id, "username": user.username, "email": user.email}},
        )
        return user

    async def login(
        self, session: WriteSession, settings: AuthSettings, username: str, password: str
    ) -> TokenPair:
        user = await UserRepository(session).get_by_username(username)
        # Always verify a hash, so an unknown user costs the same as a wrong password.
        valid = await verify_password(user.password_hash if user else None, password)
        if user is None or not valid or user.disabled:
            raise Unauthorized(_BAD_LOGIN)
        return await self._issue(session, settings, user, family_id=uuid.uuid4(), new=True)

    async def refresh(
        self, session: WriteSession, settings: AuthSettings, refresh_token: str
    ) -> TokenPair:
        tokens = RefreshTokenRepository(session)
        stored = await tokens.get_for_update(hash_refresh_token(refresh_token))
        if stored is None or stored.revoked_at is not None:
            raise Unauthorized(_BAD_REFRESH)
        if stored.used_at is not None:
            # A rotated token came back: it was stolen or leaked. Revoke the family and
            # commit that now, since the error below rolls the request back.
            await tokens.revoke_family(stored.family_id)
            await session.commit()
            raise Unauthorized(_BAD_REFRESH)
        if stored.expires_at <= datetime.now(UTC):
            raise Unauthorized(_BAD_REFRESH)
        user = await UserRepository(session).get(stored.user_id)
        if user is None or user.disabled:
            raise Unauthorized(_BAD_REFRESH)
        await tokens.mark_used(stored.id)
        return await self._issue(session, settings, user, family_id=stored.family_id, new=False)

    async def logout(self, session: WriteSession, refresh_token: str) -> None:
        tokens = RefreshTokenRepository(session)
        stored = await tokens.get_for_update(hash_refresh_token(refresh_token))
        if stored is not None:
            await tokens.revoke_family(stored.family_id)

    async def _issue(
        self,
        session: WriteSession,
        settings: AuthSettings,
        user: User,
        family_id: uuid.UUID,
        *,
        new: bool,
    ) -> TokenPair:
        tokens = RefreshTokenRepository(session)
        refresh_token = new_refresh_token()
        await tokens.add(
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_refresh_token(refresh_token),
            expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_seconds),
            # A new family's first token is its head, with the family's id (see tokens.py).
            token_id=family_id if new else None,
        )
        head = family_id if new else await tokens.family_head(family_id)
        return TokenPair(
            access_token=issue_access_token(
                settings, user.id, user.username, list(user.roles), session=head
            ),
            refresh_token=refresh_token,
            expires_in=settings.access_token_ttl_seconds,
        )


auth_service = AuthService()
