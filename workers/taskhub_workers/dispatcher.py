"""Consumes ``taskhub.events`` (through ``taskhub.dispatch``) and turns each event into
jobs: mail to a new assignee, a welcome mail, webhook deliveries.

An event is acknowledged only after its jobs were published with publisher confirms;
a crash in between re-dispatches it, and the jobs' deterministic keys make the copies
harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from taskhub_api.db import Database
from taskhub_api.dispatch.mapping import jobs_for
from taskhub_api.jobs.schemas import JobRequest
from taskhub_api.settings import Settings
from taskhub_api.tracing import continued
from taskhub_workers.relay import _wait_any, declare_dispatch_queue
from taskhub_workers.relay_metrics import DISPATCH_FAILED, DISPATCHED

log = logging.getLogger("taskhub.dispatcher")
PREFETCH = 32


class Dispatcher:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        # Celery's publisher is blocking: one thread keeps it off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enqueue")

    def _enqueue(self, job: JobRequest) -> None:
        from taskhub_workers.app import enqueue

        enqueue(job.name, job.key, job.kwargs)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        # The event's request id (and trace) for the log lines and the jobs' headers.
        with continued("taskhub.dispatch", message.headers):
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = orjson.loads(message.body)
            jobs = await jobs_for(self.db, event)
            loop = asyncio.get_running_loop()
            for job in jobs:
                # In this task's context, which the publish signals read.
                context = contextvars.copy_context()
                await loop.run_in_executor(self._executor, context.run, self._enqueue, job)
        except Exception as exc:
            log.warning(
                "dispatch of %s failed: %s: %s", message.message_id, type(exc).__name__, exc
            )
            DISPATCH_FAILED.inc()
            await asyncio.sleep(1.0)
            # Requeued; the queue's delivery limit dead-letters an event that never works.
            await message.nack(requeue=True)
            return
        await message.ack()
        DISPATCHED.inc()
        if jobs:
            log.info("event %s (%s): %s jobs", event["id"], event["type"], len(jobs))

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                connection = await aio_pika.connect(self.settings.broker.url, timeout=10)
            except Exception as exc:
                log.warning("dispatcher: broker unavailable (%s); retrying in %.1fs", exc, delay)
                await _wait_any(stop, None, delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            closed = asyncio.Event()
            connection.close_callbacks.add(lambda *_, ev=closed: ev.set())
            try:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=PREFETCH)
                queue = await declare_dispatch_queue(channel)
                await queue.consume(self.handle)
                await _wait_any(stop, closed, 3600 * 24 * 365)
            except Exception as exc:
                log.warning("dispatcher: %s: %s", type(exc).__name__, exc)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close()
        self._executor.shutdown(wait=True)
