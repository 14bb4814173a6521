"""Picks the verifier for a bearer token by its issuer."""

from __future__ import annotations

import jwt

from taskhub_api.errors import Unauthorized
from taskhub_api.identity.oidc import OidcVerifier
from taskhub_api.identity.tokens import AccessClaims, BuiltinVerifier
from taskhub_api.settings import AuthSettings


class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self.builtin = BuiltinVerifier(settings)
        self.oidc = OidcVerifier(settings) if settings.oidc_issuer else None

    async def verify(self, token: str) -> AccessClaims:
        if self.oidc is not None:
            # Only to route the token; the chosen verifier checks everything.
            try:
                issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            except jwt.PyJWTError as exc:
                raise Unauthorized("The access token is invalid.") from exc
            if isinstance(issuer, str) and issuer.rstrip("/") == self.oidc.issuer:
                return await self.oidc.verify(token)
        return self.builtin.verify(token)

    async def aclose(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()
