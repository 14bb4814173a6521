from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskhub_api.addresses import IPNetwork
from taskhub_api.db import Database, ReadSession, WriteSession, driver_connection
from taskhub_api.errors import NotFound, UnprocessableContent, field_error
from taskhub_api.events.repository import record_event
from taskhub_api.identity.principal import Principal
from taskhub_api.kit import cursor
from taskhub_api.kit.pages import Keyset, created_and_id
from taskhub_api.kit.schemas import PageMeta
from taskhub_api.webhooks.keyring import KeyRing, SecretUnavailable
from taskhub_api.webhooks.repository import WebhookRepository
from taskhub_api.webhooks.schemas import WebhookCreate
from taskhub_api.webhooks.signing import new_secret
from taskhub_api.webhooks.urlguard import UnsafeUrl, check_url

REDELIVERY_REQUESTED = "webhook.redelivery_requested"


def _created_and_id(row: dict[str, Any]) -> list[Any]:
    return [row["created_at"].isoformat(), str(row["id"])]


class WebhookService:
    async def create(
        self,
        session: WriteSession,
        principal: Principal,
        data: WebhookCreate,
        *,
        allowed_networks: Sequence[IPNetwork],
        keyring: KeyRing,
    ) -> dict[str, Any]:
        url = str(data.url)
        try:
            await check_url(url, allowed_networks=allowed_networks)
        except UnsafeUrl as exc:
            raise UnprocessableContent(
                f"The webhook URL {exc}.", errors=[field_error("url", str(exc))]
            ) from exc
        secret = data.secret or new_secret()
        webhook_id = uuid.uuid4()  # the associated data of the ciphertext
        sealed = keyring.seal(webhook_id, secret)
        hook = await WebhookRepository(session).create(
            webhook_id=webhook_id,
            owner_id=principal.id,
            url=url,
            events=list(data.events),
            secret_key_id=sealed.key_id,
            secret_ciphertext=sealed.ciphertext,
        )
        return {**hook, "secret": secret}

    async def list_webhooks(
        self,
        session: ReadSession,
        principal: Principal,
        cursor_key: bytes,
        after: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], PageMeta]:
        """Admins see every webhook, others their own."""
        owner = None if principal.is_admin else principal.id
        keyset = Keyset(cursor_key, "webhooks", cursor.fingerprint({"owner": str(owner)}))
        position = keyset.start(after, created_and_id)
        rows = await WebhookRepository(session).list_page(owner, position, limit + 1)
        return keyset.page(rows, limit, _created_and_id)

    async def get(
        self, session: ReadSession | WriteSession, principal: Principal, webhook_id: uuid.UUID
    ) -> dict[str, Any]:
        hook = await WebhookRepository(session).get(webhook_id)
        if hook is None or not (principal.is_admin or hook["owner_id"] == principal.id):
            raise NotFound(f"Webhook {webhook_id} does not exist.")
        return hook

    async def delete(
        self, session: WriteSession, principal: Principal, webhook_id: uuid.UUID
    ) -> None:
        await self.get(session, principal, webhook_id)
        await WebhookRepository(session).delete(webhook_id)

    async def deliveries(
        self,
        session: ReadSession,
        principal: Principal,
        webhook_id: uuid.UUID,
        cursor_key: bytes,
        after: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], PageMeta]:
        await self.get(session, principal, webhook_id)
        bound_to = cursor.fingerprint({"webhook": str(webhook_id)})
        keyset = Keyset(cursor_key, "-deliveries", bound_to)
        position = keyset.start(after, created_and_id)
        rows = await WebhookRepository(session).list_deliveries(webhook_id, position, limit + 1)
        return keyset.page(rows, limit, _created_and_id)

    async def redeliver(
        self,
        session: WriteSession,
        principal: Principal,
        webhook_id: uuid.UUID,
        delivery_id: uuid.UUID,
    ) -> dict[str, Any]:
        """A new delivery of the same event, queued through the outbox: it is sent
        once this transaction commits, with its own X-TaskHub-Delivery id."""
        await self.get(session, principal, webhook_id)
        hooks = WebhookRepository(session)
        original = await hooks.get_delivery(delivery_id)
        if original is None or original["webhook_id"] != webhook_id:
            raise NotFound(f"Delivery {delivery_id} does not exist.")
        new_id = uuid.uuid4()
        await hooks.ensure_delivery(
            new_id, webhook_id, original["event_id"], original["event_type"], delivery_id
        )
        await record_event(
            await driver_connection(session),
            type=REDELIVERY_REQUESTED,
            aggregate_type="webhook_delivery",
            aggregate_id=new_id,
            actor_id=principal.id,
            payload={
                "delivery_id": new_id,
                "webhook_id": webhook_id,
                "event_id": original["event_id"],
                "redelivery_of": delivery_id,
            },
        )
        delivery = await hooks.get_delivery(new_id)
        assert delivery is not None  # noqa: S101 - inserted above in this transaction
        return {**delivery, "attempts": []}


@dataclass
class Rotation:
    rotated: int = 0
    failed: list[str] = field(default_factory=list)


async def rotate_secrets(db: Database, keyring: KeyRing, batch_size: int = 500) -> Rotation:
    """Encrypts every webhook secret that is plaintext or under another key with the
    active key, ``batch_size`` rows per transaction. Idempotent; safe beside running
    deliveries: each row changes in one UPDATE (a reader sees the old or the new
    form, both readable while the old key stays configured), and a secret that does
    not decrypt is reported and left as it is, never overwritten."""
    outcome = Rotation()
    after: uuid.UUID | None = None
    while True:
        async with db.transaction() as session:
            hooks = WebhookRepository(session)
            rows = await hooks.secrets_to_rotate(keyring.active_key_id, after, batch_size)
            for row in rows:
                try:
                    secret = keyring.reveal(
                        row["id"],
                        secret=row["secret"],
                        secret_ciphertext=row["secret_ciphertext"],
                        secret_key_id=row["secret_key_id"],
                    )
                except SecretUnavailable as exc:
                    outcome.failed.append(str(exc))
                    continue
                sealed = keyring.seal(row["id"], secret)
                await hooks.store_secret(row["id"], sealed.key_id, sealed.ciphertext)
                outcome.rotated += 1
        if len(rows) < batch_size:
            return outcome
        after = rows[-1]["id"]


webhook_service = WebhookService()
