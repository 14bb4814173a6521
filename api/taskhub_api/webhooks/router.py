from __future__ import annotations

import uuid

from fastapi import Response, status

from taskhub_api.deps import ReadSessionDep, SettingsDep, WriteSessionDep
from taskhub_api.errors.rendering import problem_responses
from taskhub_api.identity.deps import CurrentPrincipal, WriterPrincipal
from taskhub_api.kit.params import Cursor, Limit
from taskhub_api.kit.routing import planned_router
from taskhub_api.webhooks.keyring import KeyRing
from taskhub_api.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookRead,
)
from taskhub_api.webhooks.service import webhook_service

router = planned_router("/api/v1/webhooks", "webhooks")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=problem_responses(400, 401, 403, 413, 422, 429, 503),
)
async def create_webhook(
    data: WebhookCreate, principal: WriterPrincipal, session: WriteSessionDep, settings: SettingsDep
) -> WebhookCreated:
    """Subscribe a URL to events. The signing secret is in this response only."""
    hook = await webhook_service.create(
        session,
        principal,
        data,
        allowed_networks=settings.webhooks.allowed_networks,
        keyring=KeyRing.from_settings(settings),
    )
    return WebhookCreated.model_validate(hook)


@router.get("", response_model=WebhookPage, responses=problem_responses(400, 401, 422, 429, 503))
async def list_webhooks(
    principal: CurrentPrincipal,
    session: ReadSessionDep,
    settings: SettingsDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> WebhookPage:
    """The caller's webhooks (an admin's: everyone's), oldest first."""
    rows, meta = await webhook_service.list_webhooks(
        session, principal, settings.cursor_key, cursor, limit
    )
    return WebhookPage(items=[WebhookRead.model_validate(r) for r in rows], meta=meta)


@router.get(
    "/{webhook_id}",
    response_model=WebhookRead,
    responses=problem_responses(401, 404, 422, 429, 503),
)
async def get_webhook(
    webhook_id: uuid.UUID, principal: CurrentPrincipal, session: ReadSessionDep
) -> WebhookRead:
    """One webhook (without its secret)."""
    return WebhookRead.model_validate(await webhook_service.get(session, principal, webhook_id))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: WriterPrincipal, session: WriteSessionDep
) -> Response:
    """Remove a webhook; nothing more is delivered to it."""
    await webhook_service.delete(session, principal, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    responses=problem_responses(400, 401, 404, 422, 429, 503),
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: ReadSessionDep,
    settings: SettingsDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> DeliveryPage:
    """Deliveries to the webhook, newest first, each with every attempt."""
    rows, meta = await webhook_service.deliveries(
        session, principal, webhook_id, settings.cursor_key, cursor, limit
    )
    return DeliveryPage(items=[DeliveryRead.model_validate(r) for r in rows], meta=meta)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryRead,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def redeliver(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    principal: WriterPrincipal,
    session: WriteSessionDep,
) -> DeliveryRead:
    """Send the delivery's event again, as a new delivery."""
    delivery = await webhook_service.redeliver(session, principal, webhook_id, delivery_id)
    return DeliveryRead.model_validate(delivery)
