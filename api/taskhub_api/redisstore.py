"""The Redis connection behind the cache and the rate limiter, with a circuit breaker.

Redis is not a source of truth. When it fails, callers get ``RedisUnavailable`` at once
and go on without it; for ``retry_after_seconds`` after a failure nobody waits on it,
then the next call tries again, so service comes back by itself when Redis does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from taskhub_api.settings import RedisSettings

T = TypeVar("T")
log = logging.getLogger("taskhub.redis")

REDIS_ERRORS = Counter("taskhub_redis_errors_total", "Failed Redis calls")
REDIS_UP = Gauge("taskhub_redis_up", "1 while Redis answers, 0 while it is skipped")


class RedisUnavailable(Exception):
    """Redis failed or is being skipped after a recent failure."""


class RedisStore:
    def __init__(self, settings: RedisSettings) -> None:
        self.prefix = settings.key_prefix
        self._retry_after = settings.retry_after_seconds
        # A call waits (at most socket_timeout) for a free connection when all
        # max_connections are in use. The default pool raised MaxConnectionsError at
        # once instead, which tripped the breaker: under more concurrent requests than
        # connections the API served without its cache, and rate limits failed open,
        # for retry_after_seconds at a time (docs/benchmarks.md, "The whole stack").
        pool = BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=settings.socket_timeout,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.connect_timeout,
            # One attempt per call: the breaker, not a retry loop, handles outages.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client: Redis = Redis.from_pool(pool)  # closes the pool with the client
        self._skip_until = 0.0
        self._down = False
        REDIS_UP.set(1)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> Any:
        """A Lua script run with EVALSHA (one round trip; reloaded after a restart)."""
        return self.client.register_script(source)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def call(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        if not self.available:
            raise RedisUnavailable("skipped after a recent failure")
        try:
            result = await operation(self.client)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            self._failed(exc)
            raise RedisUnavailable(str(exc)) from exc
        except redis_errors.ResponseError as exc:
            # BUSY, LOADING, OOM, READONLY... Redis is there but not usable.
            self._failed(exc)
            raise RedisUnavailable(str(exc)) from exc
        if self._down:
            self._down = False
            REDIS_UP.set(1)
            log.warning("redis is available again: cache and rate limits resume")
        return result

    def _failed(self, exc: BaseException) -> None:
        REDIS_ERRORS.inc()
        self._skip_until = time.monotonic() + self._retry_after
        if not self._down:
            self._down = True
            REDIS_UP.set(0)
            log.warning(
                "redis unavailable (%s): serving without cache, rate limits fail open",
                type(exc).__name__,
            )

    async def close(self) -> None:
        await self.client.aclose()
