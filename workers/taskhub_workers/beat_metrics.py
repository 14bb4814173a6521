"""Prometheus metrics of ``taskhub beat``, served on ``/metrics`` (default port 9810).

A registry of its own, as the relay's: beat serves only these, not the worker's job
metrics that its import of the Celery app brings along. Counted on Celery's
``after_task_publish`` in the beat process only (connected by ``run_beat``), so a job
the dispatcher or a retry publishes is not counted here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger("taskhub.beat")
REGISTRY = CollectorRegistry()
DISPATCH_UID = "taskhub-beat-sent"

# The label is ``task`` (the Celery task name, a bounded set: the beat schedule), as
# the worker's: Prometheus sets ``job`` itself.
SENT = Counter(
    "taskhub_beat_sent",
    "Scheduled jobs beat published (confirmed by the broker)",
    ["task"],
    registry=REGISTRY,
)
LAST_SENT = Gauge(
    "taskhub_beat_last_sent_timestamp_seconds",
    "Unix time beat last published the task (a stalled beat stops moving it)",
    ["task"],
    registry=REGISTRY,
)


def count_sent(sender: str | None = None, **_: Any) -> None:
    """``after_task_publish`` receiver: ``sender`` is the task name."""
    if not sender:
        return
    SENT.labels(sender).inc()
    LAST_SENT.labels(sender).set(time.time())


def install() -> None:
    """Counts every job this process publishes (idempotent); beat's only."""
    signals.after_task_publish.connect(count_sent, weak=False, dispatch_uid=DISPATCH_UID)


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
    log.info("beat metrics on :%s/metrics", port)
