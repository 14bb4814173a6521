"""Queue depth from the RabbitMQ management HTTP API.

Not AMQP's passive declare: that counts ready messages only, while a busy
worker holds the rest unacknowledged, and it has no rates."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx


class QueueStatsError(Exception):
    """Queue depth could not be read; `reason` is the status condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class QueueStats:
    ready: int
    unacked: int
    consumers: int
    deliver_rate: float

    @property
    def messages(self) -> int:
        return self.ready + self.unacked


async def queue_stats(
    client: httpx.AsyncClient,
    *,
    url: str,
    vhost: str,
    queues: list[str],
    username: str,
    password: str,
    timeout_seconds: float,
) -> QueueStats:
    """The group's queues added up (ready + unacked, consumers, deliver rate)."""
    total = QueueStats(0, 0, 0, 0.0)
    for queue in queues:
        path = f"{url.rstrip('/')}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
        try:
            response = await client.get(path, auth=(username, password), timeout=timeout_seconds)
        except httpx.TimeoutException as exc:
            raise QueueStatsError(
                "ManagementApiTimeout", f"{path}: no answer within {timeout_seconds:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise QueueStatsError("ManagementApiUnreachable", f"{path}: {exc!r}") from exc
        if response.status_code in (401, 403):
            raise QueueStatsError(
                "ManagementApiUnauthorized",
                f"{path}: {response.status_code}; check the credentials Secret and the "
                "user's monitoring tag",
            )
        if response.status_code == 404:
            raise QueueStatsError("QueueNotFound", f"queue {queue!r} not found in vhost {vhost!r}")
        if response.status_code != 200:
            raise QueueStatsError("ManagementApiError", f"{path}: HTTP {response.status_code}")
        try:
            body = response.json()
            stats = body.get("message_stats") or {}
            rate = float((stats.get("deliver_get_details") or {}).get("rate") or 0.0)
            total = QueueStats(
                total.ready + int(body.get("messages_ready") or 0),
                total.unacked + int(body.get("messages_unacknowledged") or 0),
                total.consumers + int(body.get("consumers") or 0),
                total.deliver_rate + rate,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise QueueStatsError("ManagementApiError", f"{path}: unreadable answer") from exc
    return total
