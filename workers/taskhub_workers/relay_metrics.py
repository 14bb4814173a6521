"""Prometheus metrics of ``taskhub relay`` (the outbox relay and the dispatcher), served
on ``/metrics`` (default port 9809).

A registry of their own, so the relay serves only these (not the worker's job metrics,
which its import of the Celery app would otherwise bring along).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from taskhub_api.db import Database
from taskhub_api.events.repository import OutboxRepository

log = logging.getLogger("taskhub.relay")
REGISTRY = CollectorRegistry()
# How often the outbox gauges are sampled: a scrape never queries the database.
SAMPLE_SECONDS = 10.0

OUTBOX_PENDING = Gauge(
    "taskhub_outbox_pending_events",
    "Outbox rows not yet published (sampled by every relay)",
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "taskhub_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox event; 0 when none is pending",
    registry=REGISTRY,
)
RELAY_PUBLISHED = Counter(
    "taskhub_relay_published", "Events published and confirmed by the broker", registry=REGISTRY
)
RELAY_FAILED = Counter(
    "taskhub_relay_failed",
    "Event publishes that failed (nacked, timed out, connection lost)",
    registry=REGISTRY,
)
RELAY_CONFIRM = Histogram(
    "taskhub_relay_confirm_seconds",
    "From publishing an event to the broker's confirm",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DISPATCHER_EVENTS = Counter(
    "taskhub_dispatcher_events",
    "Events the dispatcher consumed, by outcome (dispatched: its jobs published and the "
    "event acknowledged; failed: requeued)",
    ["outcome"],
    registry=REGISTRY,
)
# The children, looked up once.
DISPATCHED = DISPATCHER_EVENTS.labels("dispatched")
DISPATCH_FAILED = DISPATCHER_EVENTS.labels("failed")


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
    log.info("relay metrics on :%s/metrics", port)


async def sample_outbox(db: Database) -> None:
    """Sets the outbox gauges from the primary (replicas lag)."""
    async with db.transaction() as session:
        outbox = OutboxRepository(session)
        pending = await outbox.pending_count()
        oldest = await outbox.oldest_pending() if pending else None
    OUTBOX_PENDING.set(pending)
    age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
    OUTBOX_OLDEST_AGE.set(max(0.0, age))


async def sample_outbox_until(db: Database, stop: asyncio.Event) -> None:
    """Samples every :data:`SAMPLE_SECONDS` until ``stop`` is set; a failed sample
    (database down) keeps the last values and is tried again next time."""
    while not stop.is_set():
        try:
            await sample_outbox(db)
        except Exception as exc:
            log.debug("outbox sample failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
