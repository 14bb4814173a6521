from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from taskhub_api.kit.schemas import Schema, Storable
from taskhub_api.users.schemas import LoginName

# No password is longer (registration and the bootstrap admin refuse them), so a
# longer one is refused before the (deliberately slow) hash.
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=128), Storable]


class TokenRequest(BaseModel):
    """The OAuth2 password grant form (RFC 6749 4.3.2), validated like a JSON body:
    whatever reaches the login throttle and the database has passed these rules.
    Other OAuth2 fields (client_id, client_secret) are ignored."""

    grant_type: Literal["password"] | None = None
    username: LoginName
    password: LoginPassword
    scope: Annotated[str, StringConstraints(max_length=1024), Storable] = ""


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshRequest(Schema):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512), Storable]
