from __future__ import annotations

import hashlib
import hmac
import time
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import Database
from taskhub_api.webhooks.repository import WebhookRepository
from taskhub_api.webhooks.signing import sign, verify
from tests.api.conftest import NewUser, create_task

HOOKS = "/api/v1/webhooks"
PUBLIC_URL = "https://93.184.216.34/hooks/taskhub"  # an IP literal: no DNS lookup


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> httpx.Response:
    return await client.post(
        HOOKS, json={"url": PUBLIC_URL, "events": ["task.created"], **body}, headers=headers
    )


class TestManageWebhooks:
    async def test_secret_is_generated_and_shown_once(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner = await new_user()
        response = await create(client, owner.headers, events=["task.created", "task.created"])
        assert response.status_code == 201
        hook = response.json()
        assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 30
        assert hook["events"] == ["task.created"]
        listed = await client.get(HOOKS, headers=owner.headers)
        assert [h["id"] for h in listed.json()["items"]] == [hook["id"]]
        assert "secret" not in listed.text
        one = await client.get(f"{HOOKS}/{hook['id']}", headers=owner.headers)
        assert one.status_code == 200 and "secret" not in one.json()

    async def test_users_manage_their_own_and_admins_see_all(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        alice, bob, admin = await new_user(), await new_user(), await new_user("admin")
        a = (await create(client, alice.headers, secret="alice-secret-0123456789")).json()
        b = (await create(client, bob.headers)).json()
        assert a["secret"] == "alice-secret-0123456789"
        mine = await client.get(HOOKS, headers=alice.headers)
        assert [h["id"] for h in mine.json()["items"]] == [a["id"]]
        everyone = await client.get(HOOKS, params={"limit": 1}, headers=admin.headers)
        page = everyone.json()
        assert page["meta"]["has_more"] is True
        rest = await client.get(
            HOOKS, params={"limit": 1, "cursor": page["meta"]["next_cursor"]}, headers=admin.headers
        )
        assert {page["items"][0]["id"], rest.json()["items"][0]["id"]} == {a["id"], b["id"]}
        assert (await client.get(f"{HOOKS}/{b['id']}", headers=alice.headers)).status_code == 404
        assert (await client.delete(f"{HOOKS}/{b['id']}", headers=alice.headers)).status_code == 404
        assert (await client.delete(f"{HOOKS}/{b['id']}", headers=bob.headers)).status_code == 204
        assert (await client.get(f"{HOOKS}/{b['id']}", headers=admin.headers)).status_code == 404

    async def test_viewers_cannot_create_and_events_must_be_known(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        viewer, user = await new_user("viewer"), await new_user()
        assert (await create(client, viewer.headers)).status_code == 403
        response = await create(client, user.headers, events=["task.exploded"])
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "events[0]"
        assert (await create(client, user.headers, events=[])).status_code == 422
        assert (await create(client, user.headers, secret="short")).status_code == 422


class TestSsrfGuard:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://172.16.5.4/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/hook",
            "http://[fd00:ec2::254]/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://100.100.100.200/hook",
            "http://0.0.0.0/hook",
        ],
    )
    async def test_internal_addresses_are_refused_with_a_clear_422(
        self, client: httpx.AsyncClient, new_user: NewUser, url: str
    ) -> None:
        user = await new_user()
        response = await create(client, user.headers, url=url)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["errors"][0]["field"] == "url"
        assert "internal address" in body["detail"]

    async def test_other_schemes_and_credentials_are_refused(
        self, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        user = await new_user()
        for url in ("ftp://93.184.216.34/x", "https://user:pw@93.184.216.34/x"):
            assert (await create(client, user.headers, url=url)).status_code == 422

    async def test_the_setting_allows_loopback_for_tests_and_development(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        user = await new_user()
        app.state.settings.webhooks.allow_private_networks = True
        try:
            response = await create(client, user.headers, url="http://127.0.0.1:9/hook")
        finally:
            app.state.settings.webhooks.allow_private_networks = False
        assert response.status_code == 201


class TestSignature:
    def test_signature_is_hmac_sha256_of_timestamp_dot_body(self) -> None:
        body = b'{"id":"1","type":"task.created"}'
        header = sign("s3cret-s3cret-s3cret", body, timestamp=1_700_000_000)
        expected = hmac.new(b"s3cret-s3cret-s3cret", b"1700000000." + body, hashlib.sha256)
        assert header == f"t=1700000000,v1={expected.hexdigest()}"

    def test_verify_rejects_tampering_wrong_secrets_and_stale_timestamps(self) -> None:
        body = b'{"a":1}'
        now = int(time.time())
        good = sign("secret-one-secret-one", body, now)
        assert verify("secret-one-secret-one", body, good)
        assert not verify("secret-one-secret-one", body + b" ", good)
        assert not verify("secret-two-secret-two", body, good)
        assert not verify(
            "secret-one-secret-one", body, sign("secret-one-secret-one", body, now - 3600)
        )
        assert not verify("secret-one-secret-one", body, "garbage")


class TestDeliveries:
    async def test_log_and_redelivery_through_the_outbox(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner, stranger = await new_user(), await new_user()
        hook = (await create(client, owner.headers)).json()
        task = await create_task(client, owner)
        db: Database = app.state.db
        async with db.transaction() as session:
            event_id = (
                await session.execute(
                    text("SELECT id FROM event WHERE aggregate_id = :id"),
                    {"id": uuid.UUID(task["id"])},
                )
            ).scalar_one()
            hooks = WebhookRepository(session)
            original = uuid.uuid4()
            await hooks.ensure_delivery(original, uuid.UUID(hook["id"]), event_id, "task.created")
            await hooks.record_attempt(
                original, status="failed", response_status=503, error="HTTP 503", duration_ms=12.5
            )
        url = f"{HOOKS}/{hook['id']}/deliveries"
        log = (await client.get(url, headers=owner.headers)).json()["items"]
        assert [(d["id"], d["status"]) for d in log] == [(str(original), "failed")]
        assert log[0]["attempts"][0]["response_status"] == 503
        assert (await client.get(url, headers=stranger.headers)).status_code == 404

        again = await client.post(f"{url}/{original}/redeliver", headers=owner.headers)
        assert again.status_code == 202
        new = again.json()
        assert new["redelivery_of"] == str(original) and new["status"] == "pending"
        async with db.primary.connect() as conn:
            queued = (
                await conn.execute(
                    text(
                        "SELECT e.type, e.payload FROM event e JOIN outbox o ON o.event_id = e.id "
                        "WHERE e.type = 'webhook.redelivery_requested'"
                    )
                )
            ).one()
        assert queued.payload["delivery_id"] == new["id"]
        missing = await client.post(f"{url}/{uuid.uuid4()}/redeliver", headers=owner.headers)
        assert missing.status_code == 404
