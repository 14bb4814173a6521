"""Who is calling. Routers and services see only this, never the token format, so the
principal can come from the built-in issuer or from an external OIDC issuer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Principal:
    id: uuid.UUID
    username: str
    roles: frozenset[Role]

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @property
    def reads_all(self) -> bool:
        """Admins and viewers read every task."""
        return bool(self.roles & {Role.ADMIN, Role.VIEWER})

    @property
    def can_write(self) -> bool:
        return bool(self.roles & {Role.ADMIN, Role.USER})
