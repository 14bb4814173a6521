"""How long a job waited in its queue.

Quorum queues report no age of their head message, so every publisher of a job stamps
into the message when the job became due: at publish, or at the ``eta`` of a delayed
retry or deferral. The worker subtracts that from the time the job starts. A replay from
a DLQ drops the ``x-taskhub-*`` headers, so a replayed job reports no wait.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from celery import signals

ENQUEUED_AT = "x-taskhub-enqueued-at"


def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish`` receiver: the due time, seconds since the epoch."""
    if headers is None:
        return
    eta = headers.get("eta")
    headers[ENQUEUED_AT] = datetime.fromisoformat(eta).timestamp() if eta else time.time()


def install() -> None:
    """Stamps every job this process publishes (idempotent)."""
    signals.before_task_publish.connect(stamp, weak=False, dispatch_uid="taskhub-enqueued-at")


def waited(request: Any) -> float | None:
    """Seconds between the job's due time and now; None for an unstamped message."""
    enqueued = getattr(request, ENQUEUED_AT, None)
    if not isinstance(enqueued, int | float):
        return None
    return max(0.0, time.time() - enqueued)
