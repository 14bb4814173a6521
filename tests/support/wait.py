"""Bounded waiting for a condition that other processes make true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import httpx

T = TypeVar("T")

# Errors of a process that is still starting or restarting: the check is tried again.
TRANSIENT = (httpx.HTTPError, OSError, asyncpg.PostgresError)


async def eventually(
    check: Callable[[], Awaitable[T]],
    within: float = 15,
    what: str = "the condition",
    *,
    interval: float = 0.1,
) -> T:
    """The first truthy result of ``check`` within ``within`` seconds, else fail the
    test with ``what`` and the last result."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
        except TRANSIENT as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
