from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from taskhub_api.identity.principal import Role
from taskhub_api.kit.schemas import InputText, PageMeta, Schema, Text

Username = Annotated[
    str,
    StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    InputText(),
]
# What a login may name: any existing account's username (the bootstrap admin's is
# configured, not checked against the pattern above), but never a control character,
# NUL or an overlong string, which could only fail deeper down (the throttle, the
# database).
LoginName = Annotated[str, StringConstraints(min_length=1, max_length=64), InputText()]


def _unique_roles(roles: list[Role]) -> list[Role]:
    if len(set(roles)) != len(roles):
        raise ValueError("roles must not repeat")
    return roles


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    roles: list[Role]
    disabled: bool
    created_at: datetime
    updated_at: datetime


class UserCreate(Schema):
    username: Username = Field(description="3-64 letters, digits, '.', '_' or '-'.")
    email: EmailStr
    password: Text = Field(description="10-128 characters with a letter and a digit.")


class UserUpdate(Schema):
    roles: Annotated[list[Role], AfterValidator(_unique_roles)] | None = Field(
        default=None, min_length=1
    )
    disabled: bool | None = None


class UserPage(BaseModel):
    items: list[UserRead]
    meta: PageMeta
