from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints

from taskhub_api.events.schemas import PUBLIC_EVENTS, EventType
from taskhub_api.kit.schemas import PageMeta, Schema, Text

WebhookUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048)]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class WebhookCreate(Schema):
    url: WebhookUrl
    events: Annotated[
        list[EventType], Field(min_length=1, max_length=len(PUBLIC_EVENTS)), AfterValidator(_unique)
    ]
    secret: Text | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="Signing secret; generated when absent. Returned only in this response.",
    )


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID
    url: str
    events: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(description="Shown once: keep it to verify X-TaskHub-Signature.")


class WebhookPage(BaseModel):
    items: list[WebhookRead]
    meta: PageMeta


class AttemptRead(BaseModel):
    number: int
    attempted_at: datetime
    response_status: int | None
    error: str | None
    duration_ms: float


class DeliveryRead(BaseModel):
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    redelivery_of: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    attempts: list[AttemptRead]


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
    meta: PageMeta
