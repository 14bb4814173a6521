"""The principal rows this API process read lately, kept for less than a second.

Every request needs the caller's current username, roles, disabled flag and, for a
built-in token, whether its session is live. Read from the database on every request,
that is one round trip even when everything else is served from the cache. Here a row
read for a token (subject and session) is reused by reads (GET, HEAD; writes always read
it afresh) for ``ttl`` seconds, counted from when the read started, so what a request
sees is never older than that:

- a change made through another process (or a CLI) takes effect there within ``ttl``
  (under one second: ``AuthSettings.principal_cache_seconds`` is held below 1);
- a change committed through this process drops the user's rows at once (the write
  session dependency calls :meth:`forget` with the users the transaction changed, which
  the repositories record with :func:`changed`).

The rows are the database's records, never built from a token's claims.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from time import monotonic
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

# Key of AsyncSession.info: the users whose principal row the transaction changed.
CHANGED_PRINCIPALS = "changed_principals"


def changed(session: AsyncSession, *user_ids: uuid.UUID) -> None:
    """Record that the session's transaction changes these users' principal rows (roles,
    disabled flag, sessions): once it commits, every cached row of theirs is dropped."""
    principals: set[uuid.UUID] = session.info.setdefault(CHANGED_PRINCIPALS, set())
    principals.update(user_ids)


def changed_in(session: AsyncSession) -> set[uuid.UUID]:
    principals: set[uuid.UUID] = session.info.get(CHANGED_PRINCIPALS, set())
    return principals


Key = tuple[uuid.UUID, uuid.UUID | None]  # the token's subject and session


class PrincipalCache:
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._rows: dict[Key, tuple[float, Any]] = {}

    def get(self, key: Key) -> Any | None:
        """The cached row, or None (none, or older than ``ttl``)."""
        entry = self._rows.get(key)
        if entry is None:
            return None
        if monotonic() - entry[0] >= self.ttl:
            del self._rows[key]
            return None
        return entry[1]

    def put(self, key: Key, row: Any, read_at: float) -> None:
        """Keep ``row``, read by a query that started at ``read_at`` (``monotonic()``)."""
        if self.ttl <= 0 or row is None:
            return
        rows = self._rows
        rows.pop(key, None)
        if len(rows) >= self.max_entries:
            del rows[next(iter(rows))]  # the oldest entry
        rows[key] = (read_at, row)

    def forget(self, user_ids: Iterable[uuid.UUID]) -> None:
        users = set(user_ids)
        if users:
            for key in [key for key in self._rows if key[0] in users]:
                del self._rows[key]
