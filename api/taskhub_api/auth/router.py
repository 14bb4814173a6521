from __future__ import annotations

from fastapi import Response, status

from taskhub_api.auth.deps import LoginForm
from taskhub_api.auth.schemas import RefreshRequest, TokenPair
from taskhub_api.auth.service import auth_service
from taskhub_api.deps import SettingsDep, WriteSessionDep
from taskhub_api.errors.rendering import problem_responses
from taskhub_api.kit.routing import planned_router
from taskhub_api.ratelimit.deps import (
    LogoutRateLimit,
    RefreshRateLimit,
    RegisterRateLimit,
    TokenAddressRateLimit,
)
from taskhub_api.users.schemas import UserCreate, UserRead

router = planned_router("/api/v1/auth", "auth")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problem_responses(400, 409, 413, 422, 429, 503),
)
async def register(_: RegisterRateLimit, data: UserCreate, session: WriteSessionDep) -> UserRead:
    """Create an account with the `user` role."""
    user = await auth_service.register(session, data)
    return UserRead.model_validate(user)


@router.post(
    "/token",
    response_model=TokenPair,
    responses=problem_responses(400, 401, 413, 422, 429, 503),
)
async def token(
    _: TokenAddressRateLimit,
    form: LoginForm,
    session: WriteSessionDep,
    settings: SettingsDep,
) -> TokenPair:
    """Exchange username and password (OAuth2 password form) for a token pair."""
    return await auth_service.login(session, settings.auth, form.username, form.password)


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses=problem_responses(400, 401, 413, 422, 429, 503),
)
async def refresh(
    _: RefreshRateLimit, data: RefreshRequest, session: WriteSessionDep, settings: SettingsDep
) -> TokenPair:
    """Rotate a refresh token. Reusing a rotated token revokes its whole family."""
    return await auth_service.refresh(session, settings.auth, data.refresh_token)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(400, 401, 413, 422, 429, 503),
)
async def logout(_: LogoutRateLimit, data: RefreshRequest, session: WriteSessionDep) -> Response:
    """Revoke the refresh token's family (every token of that login), and with it the
    access tokens issued to it."""
    await auth_service.logout(session, data.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
