"""One event loop per worker process, created at process init, with the database
engine built on it. Jobs run on that loop; nothing calls ``asyncio.run`` per job."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import signals

from taskhub_api import tracing
from taskhub_api.db import Database
from taskhub_api.jobs.ledger import JobContext
from taskhub_api.settings import Settings, get_settings
from taskhub_workers import propagation

log = logging.getLogger("taskhub.worker")
T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # A worker process runs one job at a time: a small pool suffices.
        db_settings = settings.db.model_copy(update={"pool_size": 2, "max_overflow": 2})
        propagation.setup_tracing(settings, "worker")  # once per process
        db = Database(db_settings)
        tracing.instrument_engines(db.primary, db.replica)
        self.context = JobContext(settings=settings, db=db)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(self.context.db.dispose())
        finally:
            self.loop.close()


_current: Runtime | None = None


def current() -> Runtime:
    global _current
    if _current is None or _current.pid != os.getpid():
        # Only when a job runs outside a worker process init (never in the worker).
        _current = Runtime(get_settings())
    return _current


@signals.worker_process_init.connect
def _process_init(**_: Any) -> None:
    global _current
    _current = Runtime(get_settings())
    log.debug("worker process %s: event loop and database ready", os.getpid())


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _process_shutdown(**_: Any) -> None:
    global _current
    if _current is not None and _current.pid == os.getpid():
        _current.close()
        _current = None
