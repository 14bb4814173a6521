"""All webhook SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.users.models import User
from taskhub_api.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

_PUBLIC = (
    Webhook.id,
    Webhook.owner_id,
    Webhook.url,
    Webhook.events,
    Webhook.active,
    Webhook.created_at,
)
_SECRET = (Webhook.secret, Webhook.secret_ciphertext, Webhook.secret_key_id)
_DELIVERY = (
    WebhookDelivery.id,
    WebhookDelivery.webhook_id,
    WebhookDelivery.event_id,
    WebhookDelivery.event_type,
    WebhookDelivery.status,
    WebhookDelivery.redelivery_of,
    WebhookDelivery.created_at,
    WebhookDelivery.updated_at,
)


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        webhook_id: uuid.UUID,
        owner_id: uuid.UUID,
        url: str,
        events: list[str],
        secret_key_id: str,
        secret_ciphertext: bytes,
    ) -> dict[str, Any]:
        stmt = (
            insert(Webhook)
            .values(
                id=webhook_id,
                owner_id=owner_id,
                url=url,
                events=events,
                secret_key_id=secret_key_id,
                secret_ciphertext=secret_ciphertext,
            )
            .returning(*_PUBLIC)
        )
        return dict((await self.session.execute(stmt)).mappings().one())

    async def get(self, webhook_id: uuid.UUID) -> dict[str, Any] | None:
        stmt = select(*_PUBLIC).where(Webhook.id == webhook_id)
        row = (await self.session.execute(stmt)).mappings().one_or_none()
        return dict(row) if row is not None else None

    async def get_for_delivery(self, webhook_id: uuid.UUID) -> dict[str, Any] | None:
        """URL, stored secret and the owner's standing: what a delivery needs."""
        stmt = (
            select(*_PUBLIC, *_SECRET, User.roles, User.disabled)
            .join(User, User.id == Webhook.owner_id)
            .where(Webhook.id == webhook_id)
        )
        row = (await self.session.execute(stmt)).mappings().one_or_none()
        return dict(row) if row is not None else None

    async def list_page(
        self, owner_id: uuid.UUID | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[dict[str, Any]]:
        stmt = select(*_PUBLIC).order_by(Webhook.created_at, Webhook.id).limit(limit)
        if owner_id is not None:
            stmt = stmt.where(Webhook.owner_id == owner_id)
        if after is not None:
            stmt = stmt.where(tuple_(Webhook.created_at, Webhook.id) > tuple_(*after))
        return [dict(r) for r in (await self.session.execute(stmt)).mappings()]

    async def delete(self, webhook_id: uuid.UUID) -> None:
        await self.session.execute(delete(Webhook).where(Webhook.id == webhook_id))

    async def subscribers(self, event_type: str) -> list[dict[str, Any]]:
        """Active webhooks subscribed to ``event_type`` whose owner is enabled."""
        stmt = (
            select(Webhook.id, Webhook.owner_id, User.roles)
            .join(User, User.id == Webhook.owner_id)
            .where(
                Webhook.active.is_(True),
                Webhook.events.any_() == event_type,
                User.disabled.is_(False),
            )
            .order_by(Webhook.id)
        )
        return [dict(r) for r in (await self.session.execute(stmt)).mappings()]

    async def secrets_to_rotate(
        self, active_key_id: str, after: uuid.UUID | None, limit: int
    ) -> list[dict[str, Any]]:
        """The next rows (by id, after ``after``) whose secret is plaintext or under
        another key than ``active_key_id``, locked until the transaction ends."""
        stmt = (
            select(Webhook.id, *_SECRET)
            .where(
                Webhook.secret.is_not(None)
                | Webhook.secret_ciphertext.is_(None)
                | (Webhook.secret_key_id != active_key_id)
            )
            .order_by(Webhook.id)
            .limit(limit)
            .with_for_update(of=Webhook)
        )
        if after is not None:
            stmt = stmt.where(Webhook.id > after)
        return [dict(r) for r in (await self.session.execute(stmt)).mappings()]

    async def store_secret(
        self, webhook_id: uuid.UUID, secret_key_id: str, secret_ciphertext: bytes
    ) -> None:
        """Ciphertext and key id in, plaintext out, in one statement."""
        await self.session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id)
            .values(
                secret=None,
                secret_key_id=secret_key_id,
                secret_ciphertext=secret_ciphertext,
                updated_at=func.now(),
            )
        )

    # Deliveries

    async def ensure_delivery(
        self,
        delivery_id: uuid.UUID,
        webhook_id: uuid.UUID,
        event_id: uuid.UUID,
        event_type: str,
        redelivery_of: uuid.UUID | None = None,
    ) -> None:
        stmt = (
            pg_insert(WebhookDelivery)
            .values(
                id=delivery_id,
                webhook_id=webhook_id,
                event_id=event_id,
                event_type=event_type,
                redelivery_of=redelivery_of,
            )
            .on_conflict_do_nothing()
        )
        await self.session.execute(stmt)

    async def get_delivery(self, delivery_id: uuid.UUID) -> dict[str, Any] | None:
        stmt = select(*_DELIVERY).where(WebhookDelivery.id == delivery_id)
        row = (await self.session.execute(stmt)).mappings().one_or_none()
        return dict(row) if row is not None else None

    async def record_attempt(
        self,
        delivery_id: uuid.UUID,
        *,
        status: str,
        response_status: int | None,
        error: str | None,
        duration_ms: float,
    ) -> int:
        """Logs one HTTP attempt and sets the delivery's status; the attempt number."""
        number = (
            await self.session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id)
                .values(attempts=WebhookDelivery.attempts + 1, status=status, updated_at=func.now())
                .returning(WebhookDelivery.attempts)
            )
        ).scalar_one()
        await self.session.execute(
            insert(WebhookAttempt).values(
                delivery_id=delivery_id,
                number=number,
                response_status=response_status,
                error=error,
                duration_ms=duration_ms,
            )
        )
        return int(number)

    async def set_delivery_status(self, delivery_id: uuid.UUID, status: str) -> None:
        await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(status=status, updated_at=func.now())
        )

    async def list_deliveries(
        self, webhook_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first, each with its attempts (oldest first)."""
        stmt = (
            select(*_DELIVERY)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(
                tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(*before)
            )
        deliveries = [dict(r) for r in (await self.session.execute(stmt)).mappings()]
        if not deliveries:
            return deliveries
        attempts = await self.session.execute(
            text(
                "SELECT delivery_id, number, attempted_at, response_status, error, duration_ms "
                "FROM webhook_attempt WHERE delivery_id = ANY(:ids) ORDER BY number"
            ),
            {"ids": [d["id"] for d in deliveries]},
        )
        by_delivery: dict[uuid.UUID, list[dict[str, Any]]] = {d["id"]: [] for d in deliveries}
        for attempt in attempts.mappings():
            by_delivery[attempt["delivery_id"]].append(dict(attempt))
        for delivery in deliveries:
            delivery["attempts"] = by_delivery[delivery["id"]]
        return deliveries
