from __future__ import annotations

from pydantic import BaseModel, Field

from taskhub_api.kit.schemas import Schema, Text


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshRequest(Schema):
    refresh_token: Text = Field(min_length=1, max_length=512)
