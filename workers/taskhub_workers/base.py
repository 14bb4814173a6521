"""The base of every job: a thin shim that runs an async handler on the process's
event loop, with the retry, deferral and dead-letter policy.

- Failure: retried ``broker.max_retries`` times with exponential backoff and jitter
  (Celery retry through native delayed delivery), then published to the queue's DLQ
  with the error in its headers and acknowledged.
- :class:`JobBusy` (another worker holds the lease): re-published to run after the
  lease, without using up a retry.
- Worker lost mid-job: the message was not acknowledged (``acks_late``), so the broker
  redelivers it; the ledger lets the retry take over once the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from taskhub_api.jobs.ledger import JobBusy, JobContext, describe, mark_dead, track_duplicates
from taskhub_workers import queuewait, runtime, topology
from taskhub_workers.metrics import JOB_DURATION, JOB_QUEUE_WAIT, JOBS

log = logging.getLogger("taskhub.worker")
Handler = Callable[..., Awaitable[None]]


def backoff(retry: int, base: float, cap: float) -> int:
    """Seconds before retry number ``retry`` (1-based): exponential, capped, with equal
    jitter (half fixed, half random) so a burst of failures does not retry in step.
    Whole seconds of at least 1: the delayed-delivery queues count in seconds."""
    delay = min(cap, base * 2 ** (retry - 1))
    seconds: int = math.ceil(delay / 2 + random.uniform(0, delay / 2))  # noqa: S311
    return max(1, seconds)


class JobTask(Task[..., None]):
    acks_late = True
    reject_on_worker_lost = True
    # The bound is ``settings.broker.max_retries``, applied in ``run_job``.
    max_retries = None

    def run_job(self, handler: Handler, job_key: str | None, **kwargs: Any) -> None:
        rt = runtime.current()
        context = rt.context
        started = time.perf_counter()
        timeout = context.settings.broker.job_lease_seconds * 0.9
        waited = queuewait.waited(self.request)
        if waited is not None:
            JOB_QUEUE_WAIT.labels(self.name).observe(waited)
        try:
            # Finish well inside the lease, so no other worker takes the job over
            # while this one still runs it.
            with track_duplicates() as duplicates:
                rt.run(asyncio.wait_for(handler(context, job_key=job_key, **kwargs), timeout))
        except JobBusy as busy:
            JOBS.labels(self.name, "deferred").inc()
            log.info("%s[%s]: leased elsewhere, back in %ss", self.name, job_key, busy.retry_in)
            self.signature_from_request(
                countdown=int(busy.retry_in), retries=self.request.retries
            ).apply_async()
            raise Ignore() from None
        except Exception as exc:
            JOB_DURATION.labels(self.name).observe(time.perf_counter() - started)
            self._failed(context, job_key, exc)
        else:
            elapsed = time.perf_counter() - started
            JOB_DURATION.labels(self.name).observe(elapsed)
            # Turned away by the ledger: the job ran before, this delivery did nothing.
            outcome = "duplicate" if duplicates else "succeeded"
            JOBS.labels(self.name, outcome).inc()
            log.info("%s[%s]: %s in %.3fs", self.name, job_key, outcome, elapsed)

    def _failed(self, context: JobContext, job_key: str | None, exc: Exception) -> None:
        broker = context.settings.broker
        attempt = self.request.retries + 1
        if self.request.retries < broker.max_retries:
            countdown = backoff(
                attempt, broker.retry_backoff_seconds, broker.retry_backoff_max_seconds
            )
            JOBS.labels(self.name, "retried").inc()
            log.warning(
                "%s[%s]: attempt %s failed (%s); retry in %ss",
                self.name,
                job_key,
                attempt,
                describe(exc),
                countdown,
            )
            raise self.retry(exc=exc, countdown=countdown, max_retries=broker.max_retries)
        self._dead_letter(exc, attempt)
        if job_key is not None:
            runtime.current().run(mark_dead(context, job_key, describe(exc)))
        JOBS.labels(self.name, "dead_lettered").inc()
        log.error(
            "%s[%s]: attempt %s failed (%s); dead-lettered",
            self.name,
            job_key,
            attempt,
            describe(exc),
        )
        raise Ignore() from exc

    def _dead_letter(self, exc: Exception, attempts: int) -> None:
        """Publishes this job's message to its DLQ with the error (confirmed), before
        the original is acknowledged: a crash in between leaves a duplicate, never a
        loss, and the ledger makes a replayed duplicate harmless."""
        request = self.request
        queue = topology.queue_for(self.name)
        message = self.app.amqp.as_task_v2(
            str(request.id),
            self.name,
            tuple(request.args or ()),
            dict(request.kwargs or {}),
            retries=request.retries,
        )
        headers = {
            **message.headers,
            "x-taskhub-error": describe(exc),
            "x-taskhub-attempts": attempts,
            "x-taskhub-failed-at": datetime.now(UTC).isoformat(),
            "x-taskhub-queue": queue,
        }
        dlq = topology.dead_letter_queue(queue)
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                message.body,
                exchange=topology.DEAD_LETTER_EXCHANGE,
                routing_key=queue,
                headers=headers,
                serializer="json",
                delivery_mode=2,
                declare=[topology.dead_letter_exchange, dlq],
                retry=True,
                **message.properties,
            )
