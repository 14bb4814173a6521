from __future__ import annotations

import uuid

from taskhub_api.deps import ReadSessionDep, SettingsDep, WriteSessionDep
from taskhub_api.errors.rendering import problem_responses
from taskhub_api.identity.deps import AdminPrincipal, CurrentPrincipal
from taskhub_api.kit.params import Cursor, Limit
from taskhub_api.kit.routing import planned_router
from taskhub_api.users.schemas import UserPage, UserRead, UserUpdate
from taskhub_api.users.service import user_service

router = planned_router("/api/v1/users", "users")


@router.get("/me", response_model=UserRead, responses=problem_responses(401, 429, 503))
async def me(principal: CurrentPrincipal, session: WriteSessionDep) -> UserRead:
    """The calling user."""
    return UserRead.model_validate(await user_service.get(session, principal.id))


@router.get("", response_model=UserPage, responses=problem_responses(400, 401, 403, 422, 429, 503))
async def list_users(
    _: AdminPrincipal,
    session: ReadSessionDep,
    settings: SettingsDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> UserPage:
    """Every user, oldest first (admin only)."""
    users, meta = await user_service.list(session, settings.cursor_key, cursor, limit)
    return UserPage(items=[UserRead.model_validate(u) for u in users], meta=meta)


# ":uuid" so that /users/me is not a user id: PATCH /users/me is a 405, not a 422.
@router.patch(
    "/{user_id:uuid}",
    response_model=UserRead,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def update_user(
    user_id: uuid.UUID, data: UserUpdate, admin: AdminPrincipal, session: WriteSessionDep
) -> UserRead:
    """Change a user's roles or disabled flag (admin only). A disabled user's tokens stop
    working at once."""
    return UserRead.model_validate(await user_service.update(session, admin, user_id, data))
