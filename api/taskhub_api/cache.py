"""Read-through cache of serialised responses, kept safe by WAL positions.

Every entry starts with the LSN its data is known to include (``asof``, 16 hex
digits). Every write moves the *watermark* of each scope it touches (the owner's, the
assignees', "all") up to its commit LSN: one ``SET`` per scope, O(1), never a scan.
A lookup reads the global floor, the scope's watermark and the entry in one ``MGET``
(one round trip, atomic) and returns the entry only if its ``asof`` reaches the
highest of those and of the client's own consistency token. So an entry written
before a write can never be served after it, and a client never sees data older than
its own last write. Redis being down only means misses.

Concurrent calls share their round trip (as a database shares a commit flush): while
one call is in flight, the next lookups gather into one batch (one ``MGET`` of every
key they need), and so do the next writes' invalidations; each batch is sent when the
previous one of its kind returns, and each caller waits for its own batch, so a
write's marks are up before its response leaves. Under load that is one Redis call
per batch instead of one per request, and redis-py's cost per call (about 80 µs of
CPU) is paid once per batch. An invalidation batch raises all its scopes to its
highest commit LSN: a mark set higher than a write needed only costs misses, never a
stale hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from prometheus_client import Counter

from taskhub_api.kit.lsn import fixed_hex
from taskhub_api.redisstore import RedisStore, RedisUnavailable
from taskhub_api.settings import CacheSettings

log = logging.getLogger("taskhub.cache")

CACHE_REQUESTS = Counter(
    "taskhub_cache_requests_total", "Cache lookups by result (hit, miss, bypass)", ["result"]
)
_HIT = CACHE_REQUESTS.labels("hit")
_MISS = CACHE_REQUESTS.labels("miss")
_BYPASS = CACHE_REQUESTS.labels("bypass")

# Raise each key to ARGV[1] unless it is higher already (watermarks never go back).
_RAISE = """
for _, key in ipairs(KEYS) do
  local mark = redis.call('GET', key)
  if not mark or mark < ARGV[1] then redis.call('SET', key, ARGV[1]) end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Lookup:
    floor: int  # the LSN a read for this scope must have reached
    value: bytes | None


@dataclass(slots=True)
class _Batch:
    """Invalidations waiting for the next call to Redis."""

    keys: set[str] = field(default_factory=set)
    lsn: int = 0
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Wanted:
    """A lookup waiting for the next call to Redis: its keys and its answer."""

    mark: str
    entry: str
    min_lsn: int
    found: asyncio.Future[Lookup] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _lsn(mark: bytes | None) -> int:
    return int(mark, 16) if mark else 0


class Cache:
    def __init__(self, store: RedisStore, settings: CacheSettings) -> None:
        self.store = store
        self.enabled = settings.enabled
        self.ttl = settings.ttl_seconds
        self._floor_key = store.key("cache", "floor")
        self._raise = store.script(_RAISE)
        self._wanted: list[_Wanted] = []
        self._reader: asyncio.Task[None] | None = None
        # Highest commit LSN whose invalidation could not reach Redis; raised into the
        # global floor as soon as Redis answers again. -1: a commit LSN is unknown,
        # the next known one is used.
        self._lost: int | None = None
        self._pending: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None

    def _scope_key(self, scope: str) -> str:
        return self.store.key("cache", scope, "mark")

    def _entry_key(self, scope: str, key: str) -> str:
        return self.store.key("cache", scope, key)

    async def lookup(self, scope: str, key: str, min_lsn: int) -> Lookup:
        """The entry, if it is known to include every write of its scope and the
        client's ``min_lsn``; with the floor a read filling it must reach."""
        if not self.enabled:
            return Lookup(min_lsn, None)
        if (self._lost is not None and self._lost < 0) or not self.store.available:
            # A commit whose LSN is unknown was not invalidated: no hits until it is.
            # Redis failed a moment ago: no wait for it.
            _BYPASS.inc()
            return Lookup(min_lsn, None)
        wanted = _Wanted(self._scope_key(scope), self._entry_key(scope, key), min_lsn)
        self._wanted.append(wanted)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        # A cancelled request cancels its own answer only; the batch goes on.
        return await wanted.found

    async def _read(self) -> None:
        """Answers the lookups waiting, then those that gathered meanwhile, until none
        is left: one MGET per batch."""
        try:
            while wanted := self._wanted:
                self._wanted = []
                try:
                    found = await self._fetch(wanted)
                except BaseException as exc:
                    for w in wanted:
                        if not w.found.done():
                            w.found.set_exception(exc)
                    raise
                for w, lookup in zip(wanted, found, strict=True):
                    if not w.found.done():  # not cancelled meanwhile
                        w.found.set_result(lookup)
        finally:
            self._reader = None
            left, self._wanted = self._wanted, []  # only after an unexpected error
            for w in left:
                if not w.found.done():
                    w.found.set_exception(RuntimeError("cache lookup failed"))

    async def _fetch(self, wanted: list[_Wanted]) -> list[Lookup]:
        # Each key once: the floor, then each scope's mark and each entry.
        slots: dict[str, int] = {self._floor_key: 0}
        for w in wanted:
            slots.setdefault(w.mark, len(slots))
            slots.setdefault(w.entry, len(slots))
        keys = list(slots)
        try:
            await self._recover()
            # bytes: the client does not decode responses
            values = cast(list[bytes | None], await self.store.call(lambda r: r.mget(keys)))
        except RedisUnavailable:
            _BYPASS.inc(len(wanted))
            return [Lookup(w.min_lsn, None) for w in wanted]
        floor = _lsn(values[0])
        found = []
        for w in wanted:
            least = max(floor, _lsn(values[slots[w.mark]]), w.min_lsn)
            entry = values[slots[w.entry]]
            if entry is not None and int(entry[:16], 16) >= least:
                _HIT.inc()
                found.append(Lookup(least, entry[16:]))
            else:
                _MISS.inc()
                found.append(Lookup(least, None))
        return found

    async def put(self, scope: str, key: str, asof: int, floor: int, value: bytes) -> None:
        """Store a value read at ``asof``; useless (so skipped) below the floor."""
        if not self.enabled or asof < floor:
            return
        entry = fixed_hex(asof).encode() + value
        with contextlib.suppress(RedisUnavailable):
            await self.store.call(lambda r: r.set(self._entry_key(scope, key), entry, ex=self.ttl))

    async def invalidate(self, scopes: Iterable[str], lsn: int | None) -> None:
        """After a commit at ``lsn`` (None: unknown) touching ``scopes``; returns once
        the scopes' marks are raised (or the loss is recorded)."""
        keys = {self._scope_key(scope) for scope in scopes}
        if not keys:
            return
        if lsn is None:
            self._lose(-1)
            return
        batch = self._pending
        if batch is None:
            batch = self._pending = _Batch()
        batch.keys |= keys
        batch.lsn = max(batch.lsn, lsn)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a cancelled request leaves the batch to finish for the others.
        await asyncio.shield(batch.done)

    async def _flush(self) -> None:
        """Sends the pending batch, then the one that gathered meanwhile, until none
        is left."""
        try:
            while (batch := self._pending) is not None:
                self._pending = None
                try:
                    await self._raise_marks(batch)
                except BaseException as exc:
                    batch.done.set_exception(exc)
                    raise
                batch.done.set_result(None)
        finally:
            self._flusher = None
            if (left := self._pending) is not None:  # only after an unexpected error
                self._pending = None
                left.done.set_exception(RuntimeError("cache invalidation failed"))

    async def _raise_marks(self, batch: _Batch) -> None:
        try:
            await self._recover(batch.lsn)
            keys = sorted(batch.keys)
            mark = fixed_hex(batch.lsn)
            await self.store.call(lambda r: self._raise(keys=keys, args=[mark], client=r))
        except RedisUnavailable:
            self._lose(batch.lsn)

    def _lose(self, lsn: int) -> None:
        if self._lost is None:
            log.warning("cache invalidation deferred until Redis and the commit LSN are known")
        self._lost = max(self._lost if self._lost is not None else -1, lsn)

    async def _recover(self, known_lsn: int | None = None) -> None:
        """Raise the global floor over invalidations that were lost."""
        lost = self._lost
        if lost is None:
            return
        if lost < 0:
            if known_lsn is None:
                return
            lost = known_lsn
        await self.store.call(
            lambda r: self._raise(keys=[self._floor_key], args=[fixed_hex(lost)], client=r)
        )
        self._lost = None
        log.warning("cache floor raised to %s after lost invalidations", fixed_hex(lost))
