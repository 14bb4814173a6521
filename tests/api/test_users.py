from __future__ import annotations

import httpx

from taskhub_api.kit import cursor
from taskhub_api.settings import Settings
from tests.api.conftest import NewUser

USERS = "/api/v1/users"


class TestListUsers:
    async def test_pages_through_every_user_oldest_first(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin = await new_user("admin")
        others = [await new_user("user") for _ in range(4)]
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 2}
        for _ in range(5):
            page = await client.get(USERS, params=params, headers=admin.headers)
            assert page.status_code == 200, page.text
            body = page.json()
            seen.extend(u["username"] for u in body["items"])
            if not body["meta"]["has_more"]:
                assert body["meta"]["next_cursor"] is None
                break
            assert len(body["items"]) == 2
            params = {"limit": 2, "cursor": body["meta"]["next_cursor"]}
        assert seen == [admin.username, *(u.username for u in others)]

    async def test_a_signed_cursor_of_the_wrong_shape_is_400(
        self, client: httpx.AsyncClient, new_user: NewUser, settings: Settings
    ) -> None:
        admin = await new_user("admin")
        forged = cursor.encode(settings.cursor_key, "created_at", cursor.fingerprint({}), [1])
        response = await client.get(USERS, params={"cursor": forged}, headers=admin.headers)
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"] == [{"field": "cursor", "message": "is malformed"}]

    async def test_only_admins_list_users(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        user = await new_user("user")
        assert (await client.get(USERS, headers=user.headers)).status_code == 403
