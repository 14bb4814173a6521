"""Exactly-once execution of background jobs on top of at-least-once delivery.

A job has a deterministic key (``webhooks.deliver:<delivery id>``). Every delivery of
its message first claims the key in ``job_execution``:

- new key, or failed before, or its owner's lease expired: claimed, the job runs;
- done: nothing runs, the message is acknowledged;
- leased by a live owner: :class:`JobBusy`, the message comes back after the lease.

The job commits its database side effects in the same transaction as
:meth:`Claim.complete`, which succeeds only while this claim still owns the lease. An
external effect (mail, HTTP) carries the key as its idempotency key, since no
transaction can span it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

from taskhub_api.db import Database, WriteSession
from taskhub_api.jobs.repository import JobRepository
from taskhub_api.settings import Settings

log = logging.getLogger("taskhub.jobs")
# Keys that ``claim`` turned away as already done, while ``track_duplicates`` runs: the
# handler just returns, and the worker's shim still has to tell a duplicate from a run.
# A list (not a flag) because the handler runs in a task with a copy of the context.
_turned_away: ContextVar[list[str] | None] = ContextVar("taskhub_turned_away", default=None)


class JobBusy(Exception):
    """Another worker holds the job's lease; try again after ``retry_in`` seconds."""

    def __init__(self, key: str, retry_in: float) -> None:
        super().__init__(f"job {key} is leased by another worker")
        self.retry_in = retry_in


class LeaseLost(Exception):
    """The lease expired and another worker took the job over: this attempt's database
    effects are rolled back."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job handler gets: settings and the database of its worker process."""

    settings: Settings
    db: Database


@contextmanager
def track_duplicates() -> Iterator[list[str]]:
    """Collects the keys that :func:`claim` turns away as duplicates within the block."""
    seen: list[str] = []
    token = _turned_away.set(seen)
    try:
        yield seen
    finally:
        _turned_away.reset(token)


def _turn_away(key: str) -> None:
    seen = _turned_away.get()
    if seen is not None:
        seen.append(key)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class Claim:
    """This worker's hold on one job; use as ``async with`` around the work, so a
    failure is recorded and the lease released for the retry."""

    def __init__(self, db: Database, key: str, owner: str, attempt: int) -> None:
        self.db = db
        self.key = key
        self.owner = owner
        self.attempt = attempt
        self.completed = False

    async def complete(self, session: WriteSession) -> None:
        """Marks the job done in ``session``'s transaction (with the job's own writes)."""
        if not await JobRepository(session).complete(self.key, self.owner):
            raise LeaseLost(f"job {self.key}: lease lost before completion")
        self.completed = True

    async def __aenter__(self) -> Claim:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            if not self.completed:
                raise RuntimeError(f"job {self.key} finished without completing its claim")
            return
        if isinstance(exc, LeaseLost):
            return
        async with self.db.transaction() as session:
            await JobRepository(session).release(self.key, self.owner, "failed", describe(exc))


async def claim(context: JobContext, key: str, name: str) -> Claim | None:
    """Claims ``key``: a :class:`Claim`, or None when the job is already done.

    Raises :class:`JobBusy` while another worker's lease is live.
    """
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    lease = timedelta(seconds=context.settings.broker.job_lease_seconds)
    async with context.db.transaction() as session:
        jobs = JobRepository(session)
        attempt = await jobs.claim(key, name, owner, lease)
        if attempt is not None:
            return Claim(context.db, key, owner, attempt)
        state = await jobs.state(key)
    if state is None:  # deleted between the two statements (trimmed): nothing to do
        _turn_away(key)
        return None
    status, expires_at, now = state
    if status == "done":
        log.info("job %s already done; duplicate delivery acknowledged", key)
        _turn_away(key)
        return None
    remaining = (expires_at - now).total_seconds() if expires_at else 1.0
    raise JobBusy(key, max(1.0, math.ceil(remaining) + 1.0))


async def mark_dead(context: JobContext, key: str, error: str) -> None:
    async with context.db.transaction() as session:
        await JobRepository(session).mark_dead(key, error)
