"""Types shared by every domain's schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


# Goes last in an Annotated chain: pydantic applies length constraints placed after a
# validator to the unstripped input.
Storable = AfterValidator(_storable)
Text = Annotated[str, Storable]


class Schema(BaseModel):
    """Request bodies: unknown fields are rejected, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PageMeta(BaseModel):
    limit: int
    has_more: bool
    next_cursor: str | None
