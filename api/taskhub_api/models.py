"""Every mapped model, imported once so metadata (and Alembic) sees them all."""

from taskhub_api.events.models import Event, Outbox
from taskhub_api.idempotency.models import IdempotencyKey
from taskhub_api.identity.models import RefreshToken
from taskhub_api.jobs.models import JobExecution
from taskhub_api.kit.model import Base
from taskhub_api.tasks.models import Task
from taskhub_api.users.models import User
from taskhub_api.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

__all__ = [
    "Base",
    "Event",
    "IdempotencyKey",
    "JobExecution",
    "Outbox",
    "RefreshToken",
    "Task",
    "User",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]
