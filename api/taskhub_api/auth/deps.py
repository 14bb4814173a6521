"""The login form, validated and throttled before the password is checked."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Form, Request

from taskhub_api.auth.schemas import TokenRequest
from taskhub_api.ratelimit.deps import client_address, enforce
from taskhub_api.settings import RateLimitSettings


async def limit_login(request: Request, form: Annotated[TokenRequest, Form()]) -> TokenRequest:
    """Password guessing: a bucket per client address and username, checked before the
    (deliberately slow) password hash. Runs only on a form that passed validation
    (FastAPI does not call a dependency whose parameters failed), so no username
    reaches the throttle or the database unchecked."""
    settings: RateLimitSettings = request.app.state.settings.ratelimit
    subject = f"{client_address(request)}\n{form.username.lower()}"
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    await enforce(request, "token", digest, settings.token)
    return form


# The validated login form, throttled per address and username.
LoginForm = Annotated[TokenRequest, Depends(limit_login)]
