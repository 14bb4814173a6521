"""The RabbitMQ topology, in one place (every process declares it identically: a
queue declared with other arguments fails with PRECONDITION_FAILED).

- ``taskhub.events`` (topic): domain events from the outbox relay, routing key = type.
  ``taskhub.dispatch`` (quorum) takes all of them (``#``) for the dispatcher.
- ``taskhub.jobs`` (topic): Celery jobs, routing key = queue name, into the quorum
  queues ``notifications``, ``webhooks`` and ``maintenance``.
- ``taskhub.dlx`` (direct): dead letters, routing key = queue name, into
  ``<queue>.dlq`` (quorum). Jobs whose retries ran out are published there with their
  error; the broker itself dead-letters messages over the delivery limit (a job that
  keeps killing its worker) and rejected ones.
- Celery's ``celery_delayed_*`` exchanges and queues carry retry backoff (native
  delayed delivery, because quorum queues cannot hold ETA messages in the worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombu import Connection, Exchange, Queue

EVENTS_EXCHANGE = "taskhub.events"
DISPATCH_QUEUE = "taskhub.dispatch"
JOBS_EXCHANGE = "taskhub.jobs"
DEAD_LETTER_EXCHANGE = "taskhub.dlx"
DLQ_SUFFIX = ".dlq"
# Redeliveries of one message (worker lost, requeued) before the broker dead-letters it.
DELIVERY_LIMIT = 10


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    # Messages a worker process reserves ahead: many for quick mail, one for webhooks
    # (a slow receiver must not hold back deliveries another worker could send).
    prefetch: int


JOB_QUEUES: dict[str, QueueSpec] = {
    "notifications": QueueSpec("notifications", prefetch=8),
    "webhooks": QueueSpec("webhooks", prefetch=1),
    "maintenance": QueueSpec("maintenance", prefetch=1),
}
# Every queue with a DLQ (the CLI's QUEUE argument).
DEAD_LETTERED = (*JOB_QUEUES, DISPATCH_QUEUE)


def queue_for(task_name: str) -> str:
    """Job names are ``<queue>.<job>``."""
    return task_name.split(".", 1)[0]


def work_queue_arguments(name: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": name,
        # At-least-once dead-lettering (needs reject-publish): a dead letter is not
        # dropped if the DLQ is briefly unavailable.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": DELIVERY_LIMIT,
    }


DLQ_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}

jobs_exchange = Exchange(JOBS_EXCHANGE, type="topic", durable=True)
dead_letter_exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


def job_queue(name: str) -> Queue:
    return Queue(
        name,
        jobs_exchange,
        routing_key=name,
        durable=True,
        queue_arguments=work_queue_arguments(name),
    )


def dispatch_queue() -> Queue:
    return Queue(
        DISPATCH_QUEUE,
        events_exchange,
        routing_key="#",
        durable=True,
        queue_arguments=work_queue_arguments(DISPATCH_QUEUE),
    )


def dead_letter_queue(name: str) -> Queue:
    return Queue(
        name + DLQ_SUFFIX,
        dead_letter_exchange,
        routing_key=name,
        durable=True,
        queue_arguments=DLQ_ARGUMENTS,
    )


def declare(connection: Connection) -> None:
    """Declares every exchange, queue and DLQ (idempotent)."""
    channel = connection.default_channel
    for exchange in (jobs_exchange, dead_letter_exchange, events_exchange):
        exchange(channel).declare()
    for name in DEAD_LETTERED:
        dead_letter_queue(name)(channel).declare()
        (dispatch_queue() if name == DISPATCH_QUEUE else job_queue(name))(channel).declare()
