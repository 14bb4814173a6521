"""Dead-letter operations behind ``taskhub dlq list|replay|purge QUEUE``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombu import Connection, Producer

from taskhub_workers import topology

# Headers a replay drops: our failure record and the broker's dead-letter history.
_FAILURE_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    job: str
    attempts: Any
    failed_at: str
    error: str
    args: str


def _describe(headers: dict[str, Any], properties: dict[str, Any]) -> DeadLetter:
    deaths = headers.get("x-death") or []
    reason = f"broker: {deaths[0].get('reason')}" if deaths else ""
    return DeadLetter(
        id=str(
            headers.get("id")
            or properties.get("message_id")
            or properties.get("correlation_id")
            or "?"
        ),
        job=str(
            headers.get("task") or headers.get("x-taskhub-event") or properties.get("type") or "?"
        ),
        attempts=headers.get("x-taskhub-attempts", "?"),
        failed_at=str(headers.get("x-taskhub-failed-at", "")),
        error=str(headers.get("x-taskhub-error") or reason),
        args=str(headers.get("kwargsrepr") or ""),
    )


def _check(queue: str) -> None:
    if queue not in topology.DEAD_LETTERED:
        raise ValueError(f"unknown queue {queue!r}; one of: {', '.join(topology.DEAD_LETTERED)}")


def _prepare(connection: Connection, queue: str) -> Any:
    topology.declare(connection)
    return topology.dead_letter_queue(queue)(connection.default_channel)


def list_dead(url: str, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first; they stay in the DLQ."""
    _check(queue)
    with Connection(url, connect_timeout=10) as connection:
        dlq = _prepare(connection, queue)
        found = []
        for _ in range(limit):
            message = dlq.get(no_ack=False)
            if message is None:
                break
            found.append(_describe(dict(message.headers or {}), dict(message.properties)))
        # Closing the channel returns every unacknowledged message to the DLQ.
    return found


def replay(url: str, queue: str, limit: int | None = None) -> int:
    """Moves dead letters back onto ``queue`` with a fresh retry budget; each is
    acknowledged only after the broker confirmed its copy."""
    _check(queue)
    replayed = 0
    with Connection(
        url, connect_timeout=10, transport_options={"confirm_publish": True}
    ) as connection:
        dlq = _prepare(connection, queue)
        producer = Producer(connection.default_channel)
        while limit is None or replayed < limit:
            message = dlq.get(no_ack=False)
            if message is None:
                break
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if not k.startswith("x-taskhub-") and k not in _FAILURE_HEADERS
            }
            if "retries" in headers:
                headers["retries"] = 0  # Celery's retry counter: a full budget again
            properties = {
                k: v
                for k, v in message.properties.items()
                if k
                in ("correlation_id", "message_id", "type", "reply_to", "priority", "timestamp")
            }
            # The default exchange routes by queue name: straight back to the queue,
            # whatever the original exchange and routing key were.
            producer.publish(
                message.body,
                exchange="",
                routing_key=queue,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                retry=True,
                **properties,
            )
            message.ack()
            replayed += 1
    return replayed


def purge(url: str, queue: str) -> int:
    """Deletes every dead letter of ``queue``; how many there were."""
    _check(queue)
    with Connection(url, connect_timeout=10) as connection:
        return int(_prepare(connection, queue).purge() or 0)
