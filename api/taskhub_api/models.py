"""Every mapped model, imported once so metadata (and Alembic) sees them all."""

from taskhub_api.auth.models import RefreshToken
from taskhub_api.idempotency.models import IdempotencyKey
from taskhub_api.kit.model import Base
from taskhub_api.tasks.models import Task
from taskhub_api.users.models import User

__all__ = ["Base", "IdempotencyKey", "RefreshToken", "Task", "User"]
