"""A connection pool that serves waiting requests in arrival order.

SQLAlchemy's asyncio pool keeps idle connections in an ``asyncio.Queue``. When a
connection comes back, the queue wakes the longest waiter, but any request that asks
in the meantime takes the connection first; the waiter finds the queue empty again and
goes to the back of the line. Under load (more requests in flight than connections)
some requests lose that race over and over: they wait for seconds and end in the pool
timeout (503) while the average request is fast.

``FairQueue`` hands a returned connection straight to the longest waiter, and a new
request queues behind the waiters instead of taking a connection past them. Idle
connections are kept as before (FIFO or LIFO).

Each engine's pool class is :func:`pool_class` of its name ("primary", "replica"),
which carries the metric children of that name, so a checkout touches no label lookup;
the checked-out gauge is read from the live pools at scrape time, off the hot path.
"""

from __future__ import annotations

import asyncio
import functools
import os
import weakref
from collections import deque
from time import perf_counter
from typing import Any, ClassVar, TypeVar

from prometheus_client import Gauge, Histogram
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

T = TypeVar("T")

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


class FairQueue(AsyncAdaptedQueue[T]):
    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[asyncio.Future[T]] = deque()

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter that gave up is skipped
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        # The pool only returns connections without blocking; the queue holds them all.
        self.put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if not block or not self._waiters:  # nobody is ahead of this request
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if not block:
                    raise Empty() from None
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


class FairAsyncPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool, with waiters served first come, first served."""

    _queue_class = FairQueue[ConnectionPoolEntry]
    # Set per pool name by ``pool_class`` (this class itself is counted as the
    # primary). A pool's ``recreate()`` (on dispose) keeps its class, so a reset pool
    # keeps reporting under its name.
    _wait_seconds: ClassVar[Any] = POOL_WAIT.labels("primary")
    _live: ClassVar[weakref.WeakSet[FairAsyncPool]] = weakref.WeakSet()

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
def pool_class(name: str) -> type[FairAsyncPool]:
    """The fair pool whose metrics carry ``pool=name``."""
    live: weakref.WeakSet[FairAsyncPool] = weakref.WeakSet()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # A worker's pool processes report through files, which a function cannot
        # feed: there the series would be a constant 0, so it is left out.
        POOL_CHECKED_OUT.labels(name).set_function(lambda: sum(p.checkedout() for p in live))
    return type(
        f"FairAsyncPool[{name}]",
        (FairAsyncPool,),
        {"_wait_seconds": POOL_WAIT.labels(name), "_live": live},
    )
