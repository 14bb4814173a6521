from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from ipaddress import ip_network
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError
from sqlalchemy import text

from taskhub_api.db import Database
from taskhub_api.jobs.ledger import JobContext
from taskhub_api.schema import alembic_config
from taskhub_api.settings import DatabaseSettings, Settings, WebhookSettings
from taskhub_api.webhooks.jobs import DeliveryFailed, deliver, delivery_job
from taskhub_api.webhooks.keyring import KeyRing, SecretUnavailable
from taskhub_api.webhooks.repository import WebhookRepository
from taskhub_api.webhooks.service import Rotation, rotate_secrets
from taskhub_api.webhooks.signing import sign, verify
from tests.api.test_urlguard import Receiver, serve
from tests.conftest import pg_url
from tests.support.users import NewUser, create_task

HOOKS = "/api/v1/webhooks"
PUBLIC_URL = "https://93.184.216.34/hooks/taskhub"  # an IP literal: no DNS lookup
LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]


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

    async def test_the_allow_list_admits_loopback_for_tests_and_development(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        new_user: NewUser,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        user = await new_user()
        assert (await create(client, user.headers, url="http://127.0.0.1:9/h")).status_code == 422
        monkeypatch.setattr(app.state.settings.webhooks, "allowed_networks", LOOPBACK)
        response = await create(client, user.headers, url="http://127.0.0.1:9/hook")
        assert response.status_code == 201
        assert (await create(client, user.headers, url="http://[::1]:9/hook")).status_code == 201
        # Never the metadata service or link-local, whatever the allow-list says.
        for url in ("http://169.254.169.254/latest/", "http://[fe80::1]/", "http://10.0.0.1/"):
            refused = await create(client, user.headers, url=url)
            assert refused.status_code == 422, url

    @pytest.mark.parametrize(
        "url",
        [
            "http://2130706433/hook",
            "http://0177.0.0.1/hook",
            "http://0x7f.1/hook",
            "http://127.1/hook",
            "http://evil.com@127.0.0.1/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[64:ff9b::7f00:1]/hook",
            "http://[2002:7f00:1::]/hook",
        ],
    )
    async def test_disguised_loopback_is_refused(
        self, client: httpx.AsyncClient, new_user: NewUser, url: str
    ) -> None:
        # The API's URL type normalises numeric hosts first (WHATWG); either way the
        # URL is refused (tests/api/test_urlguard.py checks check_url on raw forms).
        user = await new_user()
        response = await create(client, user.headers, url=url)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "url"


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


# Secrets at rest

KEY1, KEY2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))


def ring(active: str, **keys: str) -> KeyRing:
    return KeyRing({k: base64.b64decode(v) for k, v in keys.items()}, active)


def webhook_settings(**keys: str) -> WebhookSettings:
    return WebhookSettings(
        allowed_networks=LOOPBACK,
        timeout=5,
        secret_keys={k: SecretStr(v) for k, v in keys.items()},
        active_key_id=list(keys)[-1] if keys else None,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("127.0.0.1", 0)
    server = serve(state)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def one_event(db: Database, task_id: str) -> uuid.UUID:
    async with db.transaction() as session:
        value = (
            await session.execute(
                text("SELECT id FROM event WHERE aggregate_id = :id"), {"id": uuid.UUID(task_id)}
            )
        ).scalar_one()
    return uuid.UUID(str(value))


async def deliver_once(
    app: FastAPI, webhooks: WebhookSettings, hook_id: uuid.UUID, event_id: uuid.UUID
) -> None:
    settings = app.state.settings.model_copy(update={"webhooks": webhooks})
    job = delivery_job(hook_id, event_id, uuid.uuid4())
    await deliver(JobContext(settings=settings, db=app.state.db), job_key=job.key, **job.kwargs)


async def stored(db: Database, hook_id: uuid.UUID | str) -> dict[str, Any]:
    async with db.primary.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT secret, secret_key_id, secret_ciphertext, row_to_json(w)::text AS dump "
                    "FROM webhook w WHERE id = :id"
                ),
                {"id": uuid.UUID(str(hook_id))},
            )
        ).one()
    return dict(row._mapping)


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskhub_api.cli", *args],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TASKHUB_")},
            "TASKHUB_DB__URL": settings.db.url,
            "TASKHUB_AUTH__SECRET_KEY": settings.auth.secret_key.get_secret_value(),
            "TASKHUB_LOG_JSON": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def key_env(active: str, **keys: str) -> dict[str, str]:
    return {
        "TASKHUB_WEBHOOKS__SECRET_KEYS": json.dumps(keys),
        "TASKHUB_WEBHOOKS__ACTIVE_KEY_ID": active,
    }


class TestSecretsAtRest:
    async def test_no_column_of_the_row_holds_the_secret(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        owner = await new_user()
        secret = "plain-secret-0123456789"
        hook = (await create(client, owner.headers, secret=secret)).json()
        assert hook["secret"] == secret  # shown once, in the creation response
        row = await stored(app.state.db, hook["id"])
        assert row["secret"] is None
        for form in (secret, secret.encode().hex(), base64.b64encode(secret.encode()).decode()):
            assert form not in row["dump"]
        assert secret.encode() not in row["secret_ciphertext"]
        keyring = KeyRing.from_settings(app.state.settings)
        assert row["secret_key_id"] == keyring.active_key_id
        opened = keyring.open(uuid.UUID(hook["id"]), row["secret_key_id"], row["secret_ciphertext"])
        assert opened == secret

    def test_without_configured_keys_a_development_key_comes_from_the_auth_key(self) -> None:
        a = Settings(auth={"secret_key": "one" * 20})  # type: ignore[arg-type]
        b = Settings(auth={"secret_key": "two" * 20})  # type: ignore[arg-type]
        ring_a, ring_b = KeyRing.from_settings(a), KeyRing.from_settings(b)
        assert ring_a.active_key_id.startswith("dev-")
        assert ring_a.active_key_id != ring_b.active_key_id
        hook = uuid.uuid4()
        sealed = ring_a.seal(hook, "s3cret")
        assert KeyRing.from_settings(a).open(hook, sealed.key_id, sealed.ciphertext) == "s3cret"
        with pytest.raises(SecretUnavailable, match="not configured"):
            ring_b.open(hook, sealed.key_id, sealed.ciphertext)

    def test_tampering_and_wrong_keys_are_clear_errors(self) -> None:
        keyring = ring("a", a=KEY1)
        hook = uuid.uuid4()
        sealed = keyring.seal(hook, "whsec_abc")
        ct = sealed.ciphertext
        assert keyring.open(hook, "a", ct) == "whsec_abc"
        assert keyring.seal(hook, "whsec_abc").ciphertext != ct  # a fresh nonce each time
        for broken in (
            bytes([ct[0] ^ 1]) + ct[1:],  # nonce
            ct[:20] + bytes([ct[20] ^ 1]) + ct[21:],  # ciphertext
            ct[:-1] + bytes([ct[-1] ^ 1]),  # tag
            ct[:10],
            b"",
        ):
            with pytest.raises(SecretUnavailable, match="does not decrypt"):
                keyring.open(hook, "a", broken)
        with pytest.raises(SecretUnavailable, match="does not decrypt"):
            keyring.open(uuid.uuid4(), "a", ct)  # copied onto another webhook's row
        with pytest.raises(SecretUnavailable, match="does not decrypt"):
            ring("a", a=KEY2).open(hook, "a", ct)  # same key id, other material
        with pytest.raises(SecretUnavailable, match="key 'b', which is not configured"):
            keyring.open(hook, "b", ct)

    def test_key_settings_are_validated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TASKHUB_WEBHOOKS__SECRET_KEYS", json.dumps({"k1": KEY1, "k2": KEY2}))
        monkeypatch.setenv("TASKHUB_WEBHOOKS__ACTIVE_KEY_ID", "k2")
        assert KeyRing.from_settings(Settings()).active_key_id == "k2"
        short = base64.b64encode(b"x" * 16).decode()
        for keys, active, message in (
            ({"k1": short}, None, "must be 32 bytes"),
            ({"k1": "not base64!"}, None, "not base64"),
            ({"bad id": KEY1}, None, "key id"),
            ({"k1": KEY1, "k2": KEY2}, None, "active_key_id is needed"),
            ({"k1": KEY1}, "k9", "'k9' is not in secret_keys"),
        ):
            with pytest.raises(ValidationError, match=message):
                WebhookSettings(secret_keys=keys, active_key_id=active)  # type: ignore[arg-type]
        urlsafe = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        assert WebhookSettings(secret_keys={"u": urlsafe}).secret_keys  # type: ignore[dict-item]

    async def test_a_tampered_row_is_never_delivered(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings.webhooks, "allowed_networks", LOOPBACK)
        owner = await new_user()
        url = f"http://127.0.0.1:{receiver.port}/tampered"
        hook = (await create(client, owner.headers, url=url)).json()
        event = await one_event(app.state.db, (await create_task(client, owner))["id"])
        async with app.state.db.transaction() as session:
            await session.execute(
                text(
                    "UPDATE webhook SET secret_ciphertext = set_byte(secret_ciphertext, 20, "
                    "get_byte(secret_ciphertext, 20) # 1) WHERE id = :id"
                ),
                {"id": uuid.UUID(hook["id"])},
            )
        with pytest.raises(DeliveryFailed, match="secret unavailable"):
            await deliver_once(app, app.state.settings.webhooks, uuid.UUID(hook["id"]), event)
        async with app.state.db.primary.connect() as conn:
            error = (
                await conn.execute(
                    text(
                        "SELECT a.error FROM webhook_attempt a JOIN webhook_delivery d "
                        "ON d.id = a.delivery_id WHERE d.webhook_id = :id"
                    ),
                    {"id": uuid.UUID(hook["id"])},
                )
            ).scalar_one()
        assert error.startswith("secret unavailable:") and "does not decrypt" in error
        assert receiver.hits == []


class TestRotateKey:
    async def test_rotates_legacy_and_old_key_rows_and_deliveries_still_verify(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        new_user: NewUser,
        settings: Settings,
        receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "webhooks", webhook_settings(k1=KEY1))
        owner = await new_user()
        url = f"http://127.0.0.1:{receiver.port}/rotated"
        secrets = {
            (await create(client, owner.headers, url=url, secret=f"secret-{n}-0123456789")).json()[
                "id"
            ]: f"secret-{n}-0123456789"
            for n in range(3)
        }
        # A row as the previous release wrote it: plaintext only.
        async with app.state.db.transaction() as session:
            legacy = (
                await session.execute(
                    text(
                        "INSERT INTO webhook (owner_id, url, events, secret) "
                        "VALUES (:owner, :url, ARRAY['task.created'], 'legacy-secret-0123456789') "
                        "RETURNING id"
                    ),
                    {"owner": owner.id, "url": url},
                )
            ).scalar_one()
        secrets[str(legacy)] = "legacy-secret-0123456789"
        assert (await stored(app.state.db, legacy))["secret_key_id"] is None

        env = key_env("k2", k1=KEY1, k2=KEY2)
        first = cli(settings, "webhooks", "rotate-key", "--batch-size", "2", **env)
        assert first.returncode == 0, first.stderr
        assert "4 webhook secret(s) now encrypted with key k2" in first.stdout
        again = cli(settings, "webhooks", "rotate-key", **env)
        assert again.returncode == 0, again.stderr
        assert "0 webhook secret(s) now encrypted with key k2" in again.stdout

        k2 = ring("k2", k2=KEY2)
        for hook_id, secret in secrets.items():
            row = await stored(app.state.db, hook_id)
            assert (row["secret"], row["secret_key_id"]) == (None, "k2")
            assert secret not in row["dump"]
            assert k2.open(uuid.UUID(hook_id), "k2", row["secret_ciphertext"]) == secret

        # Deliveries sign with the same secrets, with the old key gone from the settings.
        event = await one_event(app.state.db, (await create_task(client, owner))["id"])
        for hook_id in (next(iter(secrets)), str(legacy)):
            await deliver_once(app, webhook_settings(k2=KEY2), uuid.UUID(hook_id), event)
        assert len(receiver.hits) == 2
        for hit, hook_id in zip(receiver.hits, (next(iter(secrets)), str(legacy)), strict=True):
            assert verify(secrets[hook_id], hit.body, hit.headers["x-taskhub-signature"])

    async def test_a_row_under_an_unknown_key_is_reported_and_left_alone(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        new_user: NewUser,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        owner = await new_user()
        monkeypatch.setattr(app.state.settings, "webhooks", webhook_settings(gone=KEY1))
        lost = (await create(client, owner.headers)).json()["id"]
        monkeypatch.setattr(app.state.settings, "webhooks", webhook_settings(k1=KEY2))
        kept = (await create(client, owner.headers)).json()["id"]
        before = await stored(app.state.db, lost)
        run = cli(settings, "webhooks", "rotate-key", **key_env("k2", k1=KEY2, k2=KEY1))
        assert run.returncode == 1
        assert "1 webhook secret(s) now encrypted with key k2" in run.stdout
        assert f"not rotated: the secret of webhook {lost}" in run.stderr
        assert "'gone', which is not configured" in run.stderr
        assert await stored(app.state.db, lost) == before
        assert (await stored(app.state.db, kept))["secret_key_id"] == "k2"

    async def test_rotation_beside_readers_never_shows_an_unreadable_row(
        self, app: FastAPI, new_user: NewUser
    ) -> None:
        owner = await new_user()
        old, both = ring("k1", k1=KEY1), ring("k2", k1=KEY1, k2=KEY2)
        db: Database = app.state.db
        ids = [uuid.uuid4() for _ in range(60)]
        async with db.transaction() as session:
            for n, hook_id in enumerate(ids):
                sealed = old.seal(hook_id, f"secret-{n}")
                await WebhookRepository(session).create(
                    webhook_id=hook_id,
                    owner_id=owner.id,
                    url=PUBLIC_URL,
                    events=["task.created"],
                    secret_key_id=sealed.key_id,
                    secret_ciphertext=sealed.ciphertext,
                )
        done = asyncio.Event()
        reads = 0

        async def read_all() -> None:
            nonlocal reads
            while not done.is_set():
                async with db.transaction() as session:
                    for n, hook_id in enumerate(ids):
                        row = await WebhookRepository(session).get_for_delivery(hook_id)
                        assert row is not None
                        secret = both.reveal(
                            hook_id,
                            secret=row["secret"],
                            secret_ciphertext=row["secret_ciphertext"],
                            secret_key_id=row["secret_key_id"],
                        )
                        assert secret == f"secret-{n}"
                        reads += 1
                await asyncio.sleep(0)

        async def rotate() -> Rotation:
            try:
                return await rotate_secrets(db, both, batch_size=7)
            finally:
                done.set()

        readers = [asyncio.create_task(read_all()) for _ in range(3)]
        outcome = await rotate()
        await asyncio.gather(*readers)
        assert (outcome.rotated, outcome.failed) == (60, [])
        assert reads >= 60
        assert (await rotate_secrets(db, both)).rotated == 0


class TestMigration0004:
    async def test_plaintext_rows_survive_and_an_encrypted_table_refuses_downgrade(self) -> None:
        name = f"taskhub_test_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(pg_url("postgres", "postgresql"))
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            config = alembic_config(pg_url(name))
            await asyncio.to_thread(command.upgrade, config, "0003")
            conn = await asyncpg.connect(pg_url(name, "postgresql"))
            try:
                owner = await conn.fetchval(
                    'INSERT INTO "user" (username, email, password_hash, roles) '
                    "VALUES ('m', 'm@example.com', 'x', ARRAY['user']) RETURNING id"
                )
                hook = await conn.fetchval(
                    "INSERT INTO webhook (owner_id, url, events, secret) "
                    "VALUES ($1, $2, ARRAY['task.created'], 'old-secret-0123456789') RETURNING id",
                    owner,
                    PUBLIC_URL,
                )
                await asyncio.to_thread(command.upgrade, config, "0004")
                row = await conn.fetchrow("SELECT * FROM webhook WHERE id = $1", hook)
                assert (row["secret"], row["secret_ciphertext"]) == ("old-secret-0123456789", None)
                with pytest.raises(asyncpg.CheckViolationError):
                    await conn.execute("UPDATE webhook SET secret = NULL WHERE id = $1", hook)

                db = Database(DatabaseSettings(url=pg_url(name)))
                try:
                    assert (await rotate_secrets(db, ring("k1", k1=KEY1))).rotated == 1
                finally:
                    await db.dispose()
                row = await conn.fetchrow("SELECT * FROM webhook WHERE id = $1", hook)
                assert row["secret"] is None
                assert ring("k1", k1=KEY1).open(hook, "k1", row["secret_ciphertext"]) == (
                    "old-secret-0123456789"
                )
                with pytest.raises(Exception, match="would lose them"):
                    await asyncio.to_thread(command.downgrade, config, "0003")
                assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0004"
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
