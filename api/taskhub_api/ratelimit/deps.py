"""Rate-limit checks for routers: per principal for the API; per client address for
the auth endpoints, and per client address and username for the token endpoint.
Decisions travel as response headers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, Request

from taskhub_api.errors import TooManyRequests
from taskhub_api.kit.response_headers import add_response_headers
from taskhub_api.ratelimit.clientip import ClientAddressResolver
from taskhub_api.ratelimit.limiter import RateLimiter
from taskhub_api.settings import Rate, RateLimitSettings

# Most privileged first: a principal gets the bucket of its best role.
_ROLE_ORDER = ("admin", "user", "viewer")
_REMAINING = "ratelimit_remaining"


def rate_for(settings: RateLimitSettings, roles: Iterable[str]) -> Rate:
    held = set(roles)
    for role in _ROLE_ORDER:
        if role in held and role in settings.roles:
            return settings.roles[role]
    return settings.roles.get("viewer") or min(settings.roles.values(), key=lambda r: r.requests)


async def enforce(request: Request, bucket: str, subject: str, rate: Rate) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    decision = await limiter.check(bucket, subject, rate)
    if decision is None:
        return
    if not decision.allowed:
        raise TooManyRequests(
            f"Too many requests; retry in {decision.retry_after_seconds} s.",
            headers=decision.headers(),
        )
    # Several buckets may check one request (address, then address and username): the
    # headers tell of the one closest to refusing.
    state = request.scope.setdefault("state", {})
    if decision.remaining <= state.get(_REMAINING, decision.remaining):
        state[_REMAINING] = decision.remaining
        add_response_headers(request, decision.headers())


def client_address(request: Request) -> str:
    resolver: ClientAddressResolver = request.app.state.client_address
    peer = request.client.host if request.client else None
    return resolver.resolve(peer, request.headers.getlist("x-forwarded-for"))


def limit_address(bucket: str, rate: Callable[[RateLimitSettings], Rate]) -> Callable[..., Any]:
    """A dependency throttling one endpoint per client address (behind trusted proxies,
    the forwarded client's). It takes only the request: it runs before the body is
    read, so floods of malformed bodies count too."""

    async def limit(request: Request) -> None:
        state = request.app.state
        if state.rate_limiter.enabled:
            await enforce(request, bucket, client_address(request), rate(state.settings.ratelimit))

    return limit


TokenAddressRateLimit = Annotated[
    None, Depends(limit_address("token_per_ip", lambda s: s.token_per_ip))
]
RegisterRateLimit = Annotated[
    None, Depends(limit_address("register_per_ip", lambda s: s.register_per_ip))
]
RefreshRateLimit = Annotated[
    None, Depends(limit_address("refresh_per_ip", lambda s: s.refresh_per_ip))
]
LogoutRateLimit = Annotated[
    None, Depends(limit_address("logout_per_ip", lambda s: s.logout_per_ip))
]
