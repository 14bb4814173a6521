"""A connection pool that serves waiting requests in arrival order.

SQLAlchemy's asyncio pool keeps idle connections in an ``asyncio.Queue``. When a
connection comes back, the queue wakes the longest waiter, but any request that asks
in the meantime takes the connection first; the waiter finds the queue empty again and
goes to the back of the line. Under load (more requests in flight than connections)
some requests lose that race over and over: they wait for seconds and end in the pool
timeout (503) while the average request is fast.

``FairQueue`` hands a returned connection straight to the longest waiter, and a new
request queues behind the waiters instead of taking a connection past them. Idle
connections are kept as before (FIFO or LIFO). The pool takes it through a private
class attribute (fast path ``fair_pool``, kit/internals.py).

Each engine's pool class is :func:`pool_class` of its name ("primary", "replica"),
which carries the metric children of that name, so a checkout touches no label lookup;
the checked-out gauge is read from the live pools at scrape time, off the hot path.

A pooled connection whose server closed it while it sat idle (PgBouncer restarted, a
backend terminated) is replaced before anything is sent on it: by ``db.raw_connection``
on the hot paths, by :func:`replace_closed_on_connect` for ``Connection`` and session
users. :func:`warm_up` opens the pools to their size at start, so the first requests do not
pay for new connections (see docs/data.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from time import perf_counter
from typing import Any, ClassVar, TypeVar

import asyncpg
from prometheus_client import Gauge, Histogram
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import (
    AsyncAdaptedQueuePool,
    ConnectionPoolEntry,
    PoolProxiedConnection,
    QueuePool,
)

from taskhub_api.kit import internals
from taskhub_api.kit.internals import Empty, Full, QueueCommon, await_
from taskhub_api.settings import DatabaseSettings

T = TypeVar("T")
log = logging.getLogger("taskhub.db")

POOL_CHECKED_OUT = Gauge(
    "taskhub_db_pool_checked_out", "Connections checked out of the pool", ["pool"]
)
POOL_WAIT = Histogram(
    "taskhub_db_pool_wait_seconds",
    "Time a checkout waited for a connection (including opening a new one, and "
    "checkouts that timed out)",
    ["pool"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class FairQueue(QueueCommon[T]):
    """The pool's queue of idle connections (SQLAlchemy's queue interface), kept in a
    deque of its own, and the checkouts waiting for one, in arrival order."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        return len(self._idle)

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter that gave up is skipped
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._idle.append(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        # The pool only returns connections without blocking; the queue holds them all.
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._idle:
            raise Empty()
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if not block or not self._waiters:  # nobody is ahead of this request
            if self._idle:
                return self.get_nowait()
            if not block:
                raise Empty()
        return await_(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> T:  # noqa: ASYNC109 - a timer, see below
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._waiters.append(waiter)
        # A timer handle rather than asyncio.timeout(): this runs for most checkouts
        # under load, and the handle is the cheaper of the two.
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection just as this request was cancelled: pass it on.
                self.put_nowait(waiter.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(Empty())


class MeteredPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool, with its checkout wait and checked-out count
    measured; :func:`pool_class` makes its waiters served first come, first served."""

    # Set per pool name by ``pool_class`` (this class itself is counted as the
    # primary). A pool's ``recreate()`` (on dispose) keeps its class, so a reset pool
    # keeps reporting under its name.
    _wait_seconds: ClassVar[Any] = POOL_WAIT.labels("primary")
    _live: ClassVar[weakref.WeakSet[MeteredPool]] = weakref.WeakSet()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._live.add(self)

    def connect(self) -> PoolProxiedConnection:
        # Here rather than in ``_do_get``, which calls itself after some races.
        started = perf_counter()
        try:
            return super().connect()
        finally:
            self._wait_seconds.observe(perf_counter() - started)


@functools.cache
def _live(name: str) -> weakref.WeakSet[MeteredPool]:
    """The live pools of that name, which its checked-out gauge counts (one set per
    name, whatever pool classes are made for it)."""
    live: weakref.WeakSet[MeteredPool] = weakref.WeakSet()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # A worker's pool processes report through files, which a function cannot
        # feed: there the series would be a constant 0, so it is left out.
        POOL_CHECKED_OUT.labels(name).set_function(lambda: sum(p.checkedout() for p in live))
    return live


@functools.cache
def pool_class(name: str) -> type[MeteredPool]:
    """The pool whose metrics carry ``pool=name``: fair (``FairQueue``) with the
    ``fair_pool`` fast path on (the queue class is a private name of SQLAlchemy's
    pool), else SQLAlchemy's own queue."""
    attributes: dict[str, Any] = {"_wait_seconds": POOL_WAIT.labels(name), "_live": _live(name)}
    if internals.enabled("fair_pool"):
        attributes[internals.POOL_QUEUE_CLASS] = FairQueue[ConnectionPoolEntry]
    return type(f"MeteredPool[{name}]", (MeteredPool,), attributes)


def _replace_if_closed(connection: Connection) -> None:
    # The peer closed the socket while the connection sat in the pool and the event
    # loop saw it: asyncpg knows without a round trip. An invalidated Connection takes
    # the next one from the pool when its `.connection` is read; after a server restart
    # every idle one is closed, so at most all of them, then one that reconnects.
    pool = connection.engine.pool
    for _ in range((pool.checkedin() if isinstance(pool, QueuePool) else 0) + 1):
        driver: asyncpg.Connection | None = connection.connection.driver_connection
        if driver is None or not driver.is_closed():
            return
        connection.invalidate()


def replace_closed_on_connect(engine: AsyncEngine) -> None:
    """A ``Connection`` (so every session) never starts on a pooled connection its
    server already closed. Not a pool ``checkout`` listener: that costs every checkout,
    the hot paths' too (docs/benchmarks.md, "Figures behind the code"), and they check
    for themselves."""
    event.listen(engine.sync_engine, "engine_connect", _replace_if_closed)


Checkout = Callable[[AsyncEngine], AbstractAsyncContextManager[asyncpg.Connection]]
# Every enum of the schema and its array, selected once on each new connection at
# start-up: asyncpg introspects a type on each connection the first time it meets it.
_PRIME_SQL = (
    "SELECT 'SELECT ' || coalesce(string_agg(format('NULL::%s, NULL::%s', t.oid::regtype,"
    " t.typarray::regtype), ', '), 'NULL') FROM pg_type t"
    " JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE t.typtype = 'e' AND n.nspname = ANY (current_schemas(false))"
)


async def warm_up(
    engines: dict[str, AsyncEngine], checkout: Checkout, settings: DatabaseSettings
) -> bool:
    """Warms each engine's pool to ``pool_size`` (:func:`warm_pool`) at once, within
    about ``warm_up_seconds``, and at most that plus a connect and a statement timeout
    (then: True, serve anyway). False when the primary's failed (try again later); a
    replica's failure only is logged."""
    within = settings.warm_up_seconds
    bound = within + settings.connect_timeout + settings.command_timeout

    async def warm(engine: AsyncEngine) -> int:
        async with checkout(engine) as conn:
            prime: str = await conn.fetchval(_PRIME_SQL)
        return await warm_pool(lambda: checkout(engine), settings.pool_size, prime, within)

    try:
        async with asyncio.timeout(bound):
            outcomes = await asyncio.gather(
                *(warm(engine) for engine in engines.values()), return_exceptions=True
            )
    except TimeoutError:
        log.warning("connection pools not warm after %.1f s: serving anyway", bound)
        return True
    for name, outcome in zip(engines, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            log.warning("warming the %s pool failed: %s", name, type(outcome).__name__)
            if name == "primary":
                return False
        else:
            log.info("%s pool warm: %d connections", name, outcome)
    return True


async def warm_pool(
    checkout: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
    size: int,
    prime: str,
    within: float,
) -> int:
    """Opens ``size`` connections at once and runs ``prime`` on each inside a
    transaction held until all of them got that far (or ``within`` seconds passed):
    the pool then holds ``size`` connections whose per-connection set-up is done (the
    driver's type introspection), and PgBouncer in transaction mode, which opens its
    server connections one at a time and only for a waiting transaction, as many
    server connections. Returns how many connections were warmed; raises what a
    checkout or the query raised (the database is not there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    everyone = asyncio.Event()
    arrived = 0

    async def one() -> None:
        nonlocal arrived
        async with checkout() as conn, conn.transaction(readonly=True):
            await conn.fetch(prime)
            arrived += 1
            if arrived == size:
                everyone.set()
            # Past the deadline the rest are not coming (PgBouncer's pool is smaller
            # than ours): let go rather than hold what is warm already.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await everyone.wait()

    results = await asyncio.gather(*(one() for _ in range(size)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if len(failures) == size:
        raise failures[0]
    return size - len(failures)
