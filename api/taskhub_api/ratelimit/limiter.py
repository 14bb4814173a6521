"""Token buckets in Redis, one atomic Lua script per check.

A bucket holds up to ``requests`` tokens and refills ``requests / per_seconds`` per
second; a request takes one. Redis' clock (``TIME``) is used so every API replica
agrees. Redis down: the request is allowed (fail open), counted and logged, because
an outage of the cache must not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from prometheus_client import Counter

from taskhub_api.redisstore import RedisStore, RedisUnavailable
from taskhub_api.settings import Rate

log = logging.getLogger("taskhub.ratelimit")

RATELIMIT_DECISIONS = Counter(
    "taskhub_ratelimit_decisions_total",
    "Rate-limit checks by bucket kind and outcome (allowed, limited, fail_open)",
    ["bucket", "outcome"],
)

# KEYS[1]: the bucket. ARGV: capacity, refill per second. Returns allowed (0/1),
# tokens left, seconds until one token, seconds until full (as strings: Redis would
# truncate Lua numbers to integers).
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
local full = (capacity - tokens) / rate
redis.call('PEXPIRE', KEYS[1], math.ceil(full * 1000) + 1000)
local wait = 0
if allowed == 0 then wait = (1 - tokens) / rate end
return {allowed, tostring(tokens), tostring(wait), tostring(full)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after_seconds: int  # until the next request may pass (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


class RateLimiter:
    def __init__(self, store: RedisStore, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self._take = store.script(_TAKE)

    async def check(self, bucket: str, subject: str, rate: Rate) -> Decision | None:
        """The decision for one request, or None when not checked (disabled, or Redis
        unavailable: fail open)."""
        if not self.enabled:
            return None
        key = self.store.key("rl", bucket, subject)
        refill = rate.requests / rate.per_seconds
        try:
            allowed, tokens, wait, full = await self.store.call(
                lambda r: self._take(keys=[key], args=[rate.requests, repr(refill)], client=r)
            )
        except RedisUnavailable:
            RATELIMIT_DECISIONS.labels(bucket, "fail_open").inc()
            return None
        decision = Decision(
            allowed=bool(int(allowed)),
            limit=rate.requests,
            remaining=max(0, math.floor(float(tokens))),
            reset_seconds=math.ceil(float(full)),
            retry_after_seconds=max(1, math.ceil(float(wait))),
        )
        RATELIMIT_DECISIONS.labels(bucket, "allowed" if decision.allowed else "limited").inc()
        return decision
