from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskhub_api.db import Database, raw_connection
from tests.support.users import NewUser, create_task

TASKS = "/api/v1/tasks"


class TestCreateTask:
    async def test_returns_201_with_location_and_etag(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        response = await client.post(
            TASKS,
            json={
                "title": "  Ship it  ",
                "description": "soon",
                "priority": "high",
                "labels": ["ops", "ops", " infra "],
                "due_at": "2027-03-01T12:00:00+02:00",
            },
            headers=alice.headers,
        )
        assert response.status_code == 201
        task = response.json()
        assert response.headers["location"] == f"{TASKS}/{task['id']}"
        assert response.headers["etag"] == '"1"'
        assert task["title"] == "Ship it"
        assert task["labels"] == ["ops", "infra"]
        assert task["due_at"] == "2027-03-01T10:00:00Z"
        assert task["owner_id"] == str(alice.id)
        assert (task["status"], task["version"]) == ("todo", 1)
        fetched = await client.get(response.headers["location"], headers=alice.headers)
        assert fetched.json() == task

    async def test_validates_fields(self, client: httpx.AsyncClient, new_user: NewUser) -> None:
        alice = await new_user()
        cases = {
            "title": {"title": "   "},
            "description": {"title": "x", "description": "d" * 10_001},
            "labels": {"title": "x", "labels": [f"l{i}" for i in range(21)]},
            "labels[0]": {"title": "x", "labels": ["a" * 51]},
            "due_at": {"title": "x", "due_at": "2027-01-01T00:00:00"},
            "status": {"title": "x", "status": "blocked"},
            "priority": {"title": "x", "priority": "critical"},
            "owner_id": {"title": "x", "owner_id": str(alice.id)},
        }
        for field, body in cases.items():
            response = await client.post(TASKS, json=body, headers=alice.headers)
            assert response.status_code == 422, field
            assert field in [e["field"] for e in response.json()["errors"]], response.json()

    async def test_assignee_must_exist_and_be_active(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice, admin = await new_user(), await new_user("admin")
        bob = await new_user()
        await client.patch(
            f"/api/v1/users/{bob.id}", json={"disabled": True}, headers=admin.headers
        )
        for assignee in ("00000000-0000-4000-8000-000000000000", str(bob.id)):
            response = await client.post(
                TASKS, json={"title": "x", "assignee_id": assignee}, headers=alice.headers
            )
            assert response.status_code == 422
            assert response.json()["errors"][0]["field"] == "assignee_id"
        listed = await client.get(TASKS, headers=alice.headers)
        assert listed.json()["items"] == []  # nothing half-written


class TestGetTask:
    async def test_if_none_match_gives_304(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice)
        url = f"{TASKS}/{task['id']}"
        first = await client.get(url, headers=alice.headers)
        etag = first.headers["etag"]
        cached = await client.get(url, headers={**alice.headers, "If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        weak = await client.get(url, headers={**alice.headers, "If-None-Match": f"W/{etag}"})
        assert weak.status_code == 304
        await client.patch(url, json={"title": "changed"}, headers=alice.headers)
        fresh = await client.get(url, headers={**alice.headers, "If-None-Match": etag})
        assert fresh.status_code == 200
        assert fresh.headers["etag"] == '"2"'


class TestUpdateTask:
    async def test_merge_patch_semantics(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice, bob = await new_user(), await new_user()
        task = await create_task(
            client, alice, description="text", labels=["a"], due_at="2027-01-01T00:00:00Z"
        )
        url = f"{TASKS}/{task['id']}"
        response = await client.patch(
            url,
            content=b'{"due_at": null, "description": null, "assignee_id": "%s"}'
            % str(bob.id).encode(),
            headers={**alice.headers, "Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code == 200, response.text
        updated = response.json()
        assert updated["due_at"] is None
        assert updated["description"] == ""
        assert updated["assignee_id"] == str(bob.id)
        assert updated["labels"] == ["a"]  # absent fields stay
        assert updated["version"] == 2
        assert response.headers["etag"] == '"2"'

    async def test_null_for_required_fields_is_422(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice)
        for field in ("title", "status", "priority", "labels"):
            response = await client.patch(
                f"{TASKS}/{task['id']}", json={field: None}, headers=alice.headers
            )
            assert response.status_code == 422
            assert response.json()["errors"][0]["field"] == field

    async def test_no_change_keeps_the_version(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice, title="same")
        response = await client.patch(
            f"{TASKS}/{task['id']}", json={"title": "same"}, headers=alice.headers
        )
        assert response.json()["version"] == 1

    async def test_stale_if_match_is_412(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice)
        url = f"{TASKS}/{task['id']}"
        ok = await client.patch(
            url, json={"title": "v2"}, headers={**alice.headers, "If-Match": '"1"'}
        )
        assert ok.status_code == 200
        stale = await client.patch(
            url, json={"title": "v3"}, headers={**alice.headers, "If-Match": '"1"'}
        )
        assert stale.status_code == 412
        assert '"2"' in stale.json()["detail"]
        weak = await client.patch(
            url, json={"title": "v3"}, headers={**alice.headers, "If-Match": 'W/"2"'}
        )
        assert weak.status_code == 412  # If-Match uses the strong comparison
        star = await client.patch(
            url, json={"title": "v3"}, headers={**alice.headers, "If-Match": "*"}
        )
        assert star.status_code == 200
        current = await client.get(url, headers=alice.headers)
        assert current.json()["title"] == "v3"

    async def test_malformed_if_match_is_400(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice)
        response = await client.patch(
            f"{TASKS}/{task['id']}", json={"title": "x"}, headers={**alice.headers, "If-Match": "1"}
        )
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "If-Match"


class TestDeleteAndRestore:
    async def test_soft_delete_then_restore(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice, admin = await new_user(), await new_user("admin")
        task = await create_task(client, alice)
        url = f"{TASKS}/{task['id']}"
        stale = await client.delete(url, headers={**alice.headers, "If-Match": '"7"'})
        assert stale.status_code == 412
        assert (await client.delete(url, headers=alice.headers)).status_code == 204
        assert (await client.get(url, headers=alice.headers)).status_code == 404
        assert (await client.get(url, headers=admin.headers)).status_code == 404
        assert (await client.delete(url, headers=alice.headers)).status_code == 404
        assert (await client.get(TASKS, headers=admin.headers)).json()["items"] == []

        restored = await client.post(f"{url}/restore", headers=admin.headers)
        assert restored.status_code == 200
        assert restored.json()["version"] == 3
        assert (await client.get(url, headers=alice.headers)).status_code == 200
        again = await client.post(f"{url}/restore", headers=admin.headers)
        assert again.status_code == 409
        missing = await client.post(
            f"{TASKS}/00000000-0000-4000-8000-000000000000/restore", headers=admin.headers
        )
        assert missing.status_code == 404


class TestUsers:
    async def test_admin_lists_users_page_by_page(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin = await new_user("admin")
        for _ in range(4):
            await new_user()
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/users", params=params, headers=admin.headers)).json()
            seen += [u["id"] for u in page["items"]]
            cursor = page["meta"]["next_cursor"]
            if not page["meta"]["has_more"]:
                break
        assert len(seen) == len(set(seen)) == 5

    async def test_admin_changes_roles(self, client: httpx.AsyncClient, new_user: NewUser) -> None:
        admin, bob = await new_user("admin"), await new_user()
        response = await client.patch(
            f"/api/v1/users/{bob.id}", json={"roles": ["viewer"]}, headers=admin.headers
        )
        assert response.json()["roles"] == ["viewer"]
        # The new role applies to bob's existing token at once.
        denied = await client.post(TASKS, json={"title": "x"}, headers=bob.headers)
        assert denied.status_code == 403

    async def test_admin_cannot_lock_themselves_out(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        admin = await new_user("admin")
        for body in ({"disabled": True}, {"roles": ["user"]}):
            response = await client.patch(
                f"/api/v1/users/{admin.id}", json=body, headers=admin.headers
            )
            assert response.status_code == 409

    async def test_invalid_role_updates(self, client: httpx.AsyncClient, new_user: NewUser) -> None:
        admin, bob = await new_user("admin"), await new_user()
        for body in ({"roles": []}, {"roles": ["root"]}, {"roles": ["user", "user"]}, {"x": 1}):
            response = await client.patch(
                f"/api/v1/users/{bob.id}", json=body, headers=admin.headers
            )
            assert response.status_code == 422, body
        missing = await client.patch(
            "/api/v1/users/00000000-0000-4000-8000-000000000000",
            json={"disabled": True},
            headers=admin.headers,
        )
        assert missing.status_code == 404


class TestTextRules:
    """Titles, labels and descriptions are text people read: no control characters, no
    bidirectional overrides, no invisible-only titles."""

    EVIL = "ctl\u0001\u001b[31m\u202eevil"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"title": EVIL}, "title"),
            ({"title": "a\u202eb"}, "title"),
            ({"title": "a\u2066b"}, "title"),
            ({"title": "two\nlines"}, "title"),
            ({"title": "tab\there"}, "title"),
            ({"title": "c1\u0085next"}, "title"),
            ({"title": "del\u007f"}, "title"),
            ({"title": "\u200b"}, "title"),
            ({"title": " \u200b\u2060\ufeff\u00a0 "}, "title"),
            ({"title": "\u3164"}, "title"),
            ({"title": "x", "labels": ["ok", "bad\u001b"]}, "labels[1]"),
            ({"title": "x", "labels": ["\u202eops"]}, "labels[0]"),
            ({"title": "x", "labels": ["\u200b"]}, "labels[0]"),
            ({"title": "x", "description": "bell\u0007"}, "description"),
            ({"title": "x", "description": "esc\u001b[2J"}, "description"),
            ({"title": "x", "description": "over\u202eride"}, "description"),
            ({"title": "x", "description": "c1\u009b"}, "description"),
        ],
    )
    async def test_refused_with_the_field_named(
        self, client: httpx.AsyncClient, new_user: NewUser, body: dict[str, Any], field: str
    ) -> None:
        alice = await new_user()
        response = await client.post(TASKS, json=body, headers=alice.headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], response.json()
        # The same rules on update.
        task = await create_task(client, alice)
        patch = {k: v for k, v in body.items() if k != "title" or field == "title"}
        response = await client.patch(f"{TASKS}/{task['id']}", json=patch, headers=alice.headers)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]

    async def test_ordinary_text_is_kept(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        description = "Steps:\n\t1. run\r\n\t2. ship \u2014 \u05e9\u05dc\u05d5\u05dd\u200f ok"
        task = await create_task(
            client,
            alice,
            title="Caf\u00e9 \u2615 \u0645\u0631\u062d\u0628\u0627 \U0001f468\u200d\U0001f469",
            description=description,
            labels=["\u00e9t\u00e9", "ops"],
        )
        assert task["description"] == description  # tabs, line breaks and RLM stay
        assert task["title"].startswith("Caf\u00e9")  # ZWJ inside an emoji sequence stays
        assert task["labels"] == ["\u00e9t\u00e9", "ops"]

    async def test_rows_stored_before_the_rules_still_read(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice = await new_user()
        task = await create_task(client, alice)
        db: Database = app.state.db
        async with raw_connection(db.primary) as conn:
            await conn.execute(
                "UPDATE task SET title = $1, description = $2, labels = $3 WHERE id = $4",
                self.EVIL,
                "\u0007",
                ["\u200b", "\u202eops"],
                uuid.UUID(task["id"]),
            )
        url = f"{TASKS}/{task['id']}"
        fetched = await client.get(url, headers=alice.headers)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["title"] == self.EVIL
        listed = await client.get(TASKS, headers=alice.headers)
        assert listed.status_code == 200
        assert listed.json()["items"][0]["labels"] == ["\u200b", "\u202eops"]
        # Changing another field of a legacy row works; its text is checked only if sent.
        patched = await client.patch(url, json={"status": "done"}, headers=alice.headers)
        assert patched.status_code == 200, patched.text
        assert patched.json()["title"] == self.EVIL
