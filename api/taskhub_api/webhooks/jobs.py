"""Webhook delivery job: sign, POST, log every attempt."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from typing import Any

import httpx

from taskhub_api import tracing
from taskhub_api.events.repository import EventRepository
from taskhub_api.events.schemas import envelope
from taskhub_api.jobs.ledger import JobContext, claim
from taskhub_api.jobs.schemas import JobRequest
from taskhub_api.kit.jsonenc import dumps
from taskhub_api.settings import WebhookSettings
from taskhub_api.webhooks.keyring import KeyRing, SecretUnavailable
from taskhub_api.webhooks.repository import WebhookRepository
from taskhub_api.webhooks.signing import sign
from taskhub_api.webhooks.transport import PinnedTransport
from taskhub_api.webhooks.urlguard import Resolver, UnsafeUrl, check_url

log = logging.getLogger("taskhub.webhooks")
DELIVER = "webhooks.deliver"
# Delivery ids of first deliveries are derived from (webhook, event), so a duplicate
# event yields the same delivery (and job key) instead of a second one.
_DELIVERY_NAMESPACE = uuid.UUID("6f1c1e0a-5d8e-4f57-9a57-3c1f2b0e7d11")
USER_AGENT = "TaskHub-Webhooks/1"


class DeliveryFailed(Exception):
    pass


def delivery_id(webhook_id: uuid.UUID, event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_DELIVERY_NAMESPACE, f"{webhook_id}:{event_id}")


def delivery_job(
    webhook_id: uuid.UUID, event_id: uuid.UUID, delivery: uuid.UUID | None = None
) -> JobRequest:
    delivery = delivery or delivery_id(webhook_id, event_id)
    return JobRequest(
        DELIVER,
        f"{DELIVER}:{delivery}",
        {"delivery_id": str(delivery), "webhook_id": str(webhook_id), "event_id": str(event_id)},
    )


async def deliver(
    context: JobContext, *, job_key: str, delivery_id: str, webhook_id: str, event_id: str
) -> None:
    """POSTs the event to the webhook. Non-2xx, timeouts and refused URLs raise, so the
    job is retried with backoff and finally dead-lettered; every attempt is logged."""
    job = await claim(context, job_key, DELIVER)
    if job is None:
        return
    delivery = uuid.UUID(delivery_id)
    async with job:
        async with context.db.transaction() as session:
            hooks = WebhookRepository(session)
            hook = await hooks.get_for_delivery(uuid.UUID(webhook_id))
            event = await EventRepository(session).get(uuid.UUID(event_id))
            if hook is not None and event is not None:
                await hooks.ensure_delivery(delivery, hook["id"], event["id"], event["type"])
            if hook is None or event is None or not hook["active"] or hook["disabled"]:
                log.info(
                    "webhook %s or event %s gone: delivery %s dropped",
                    webhook_id,
                    event_id,
                    delivery,
                )
                await job.complete(session)
                return
        body = dumps(envelope(event))
        response_status, error, started = await _post(context, hook, event, body, delivery)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        succeeded = response_status is not None and 200 <= response_status < 300
        async with context.db.transaction() as session:
            await WebhookRepository(session).record_attempt(
                delivery,
                status="succeeded" if succeeded else "failed",
                response_status=response_status,
                error=error,
                duration_ms=duration_ms,
            )
            if succeeded:
                await job.complete(session)
        if not succeeded:
            raise DeliveryFailed(f"delivery {delivery} to {hook['url']}: {error}")


async def _post(
    context: JobContext,
    hook: dict[str, Any],
    event: dict[str, Any],
    body: bytes,
    delivery: uuid.UUID,
) -> tuple[int | None, str | None, float]:
    started = time.perf_counter()
    try:
        secret = KeyRing.from_settings(context.settings).reveal(
            hook["id"],
            secret=hook["secret"],
            secret_ciphertext=hook["secret_ciphertext"],
            secret_key_id=hook["secret_key_id"],
        )
    except SecretUnavailable as exc:
        log.error("delivery %s not sent: %s", delivery, exc)
        return None, f"secret unavailable: {exc}"[:500], started
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-TaskHub-Event": event["type"],
        "X-TaskHub-Delivery": str(delivery),
        "X-TaskHub-Signature": sign(secret, body),
    }
    status, error = await send(context.settings.webhooks, hook["url"], body, headers)
    return status, error, started


async def send(
    settings: WebhookSettings,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int | None, str | None]:
    """POSTs ``body`` to ``url``: the response status (None when there was none) and
    an error, if any. The host is resolved and vetted once, here, and the connection
    goes to a vetted address (see transport.py); redirects are not followed."""
    try:
        target = await check_url(url, allowed_networks=settings.allowed_networks, resolver=resolver)
    except UnsafeUrl as exc:
        return None, f"URL refused: {exc}"
    transport: httpx.AsyncBaseTransport = PinnedTransport(target, ssl_context=ssl_context)
    if tracing.enabled():
        from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

        transport = AsyncOpenTelemetryTransport(transport)
    try:
        # One deadline for the whole exchange, besides httpx's per-operation timeouts.
        async with (
            asyncio.timeout(settings.timeout),
            httpx.AsyncClient(
                transport=transport,
                timeout=settings.timeout,
                follow_redirects=False,
                trust_env=False,
            ) as client,
        ):
            response = await client.post(url, content=body, headers=headers)
    except (httpx.TimeoutException, TimeoutError):
        return None, f"timed out after {settings.timeout:g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    return response.status_code, None if response.is_success else f"HTTP {response.status_code}"
