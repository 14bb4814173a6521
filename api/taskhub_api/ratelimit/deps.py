"""Rate-limit checks for routers: per principal for the API, per client address and
username for the token endpoint. Decisions travel as response headers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from taskhub_api.errors import TooManyRequests
from taskhub_api.kit.response_headers import add_response_headers
from taskhub_api.ratelimit.clientip import ClientAddressResolver
from taskhub_api.ratelimit.limiter import RateLimiter
from taskhub_api.settings import Rate, RateLimitSettings

# Most privileged first: a principal gets the bucket of its best role.
_ROLE_ORDER = ("admin", "user", "viewer")


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
    add_response_headers(request, decision.headers())


def client_address(request: Request) -> str:
    resolver: ClientAddressResolver = request.app.state.client_address
    peer = request.client.host if request.client else None
    return resolver.resolve(peer, request.headers.getlist("x-forwarded-for"))


async def limit_login(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> None:
    """Password guessing: a bucket per client address and username, checked before the
    (deliberately slow) password hash."""
    settings: RateLimitSettings = request.app.state.settings.ratelimit
    subject = f"{client_address(request)}\n{form.username.lower()}"
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    await enforce(request, "token", digest, settings.token)


LoginRateLimit = Annotated[None, Depends(limit_login)]
