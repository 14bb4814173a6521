"""Greenlets reused across SQLAlchemy's ``greenlet_spawn`` calls.

SQLAlchemy's asyncio layer runs its synchronous core in a greenlet: every
``greenlet_spawn`` (a pool checkout or checkin, ``session.execute``, ``commit``,
``close``) starts a new one. On Python 3.11 a new greenlet's first frame allocates a
fresh frame stack with ``mmap`` and its end frees it with ``munmap``: two system calls
and a page fault, several times a request (docs/benchmarks.md, "Figures behind the
code").

``install()`` makes ``greenlet_spawn`` run its function in an idle worker greenlet of
the thread instead. A worker runs one function at a time, exactly as a new greenlet
would (``await_`` inside it switches to the spawning coroutine and back), then waits
for the next, keeping its frame stack. ``tests/api/test_greenlets.py`` holds the
contract with SQLAlchemy's pinned version; the replaced class is a private name of
SQLAlchemy, reached through ``kit/internals.py`` (fast path ``greenlets``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from greenlet import GreenletExit, greenlet  # type: ignore[import-untyped]

from taskhub_api.kit import internals

# Idle workers kept per thread; beyond that a finished worker simply ends.
MAX_IDLE = 64


class _Idle(threading.local):
    def __init__(self) -> None:
        self.workers: list[_Worker] = []


_idle = _Idle()


@internals.greenlet_provider
class _Worker(greenlet):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(self._serve)

    def _serve(self, spawn: Spawn | None, args: Any, kwargs: Any) -> None:
        while spawn is not None:
            try:
                spawn.result = spawn.fn(*args, **kwargs)
            except GreenletExit:
                raise  # collected while suspended: end, as any greenlet does
            except BaseException as exc:
                spawn.error = exc
            spawn.dead = True
            idle = _idle.workers
            if len(idle) >= MAX_IDLE:
                return  # enough spare workers: this one ends
            idle.append(self)
            # Keep nothing of the finished call while waiting for the next one.
            spawn = args = kwargs = None
            spawn, args, kwargs = self.parent.switch()


class Spawn:
    """What ``greenlet_spawn`` drives: the interface of SQLAlchemy's ``_AsyncIoGreenlet``
    (``switch``, ``throw``, ``dead``), run on a reused worker."""

    __slots__ = ("_started", "_worker", "dead", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], driver: greenlet) -> None:
        self.fn = fn
        self.dead = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._started = False
        idle = _idle.workers
        worker = idle.pop() if idle else _Worker()
        worker.parent = driver
        worker.gr_context = driver.gr_context  # the spawning task's context variables
        self._worker = worker

    def switch(self, *args: Any, **kwargs: Any) -> Any:
        if self._started:  # the value an ``await_`` in the function waited for
            return self._outcome(self._worker.switch(*args))
        self._started = True
        return self._outcome(self._worker.switch(self, args, kwargs))

    def throw(self, *exc_info: Any) -> Any:
        return self._outcome(self._worker.throw(*exc_info))

    def _outcome(self, value: Any) -> Any:
        """What the worker switched back: an awaitable for ``greenlet_spawn`` to await
        while the function runs, then the function's result or error."""
        if not self.dead:
            return value
        worker = self._worker
        if not worker.dead:
            worker.gr_context = None  # keep no reference to this call's context
        error, self.error = self.error, None
        if error is not None:
            # Raised here, the error would take the caller's current exception as its
            # context; keep the one it had, as a greenlet's own ending does.
            context = error.__context__
            try:
                raise error
            finally:
                error.__context__ = context
                del error
        result, self.result = self.result, None
        return result


def install() -> None:
    """Make SQLAlchemy's ``greenlet_spawn`` use reused workers when the fast path is on,
    else its own greenlets (idempotent)."""
    internals.set_greenlet_class(Spawn if internals.enabled("greenlets") else None)
