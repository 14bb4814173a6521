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
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

T = TypeVar("T")


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
