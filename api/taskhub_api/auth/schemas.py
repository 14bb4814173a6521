from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from taskhub_api.kit.schemas import Schema, Storable


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshRequest(Schema):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512), Storable]
