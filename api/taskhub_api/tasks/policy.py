"""Who may do what to a task: the role matrix, in one place.

- admin: everything.
- user: reads tasks they own or are assigned to; edits and deletes their own; may
  change only the status of a task assigned to them. Tasks they cannot read are 404.
- viewer: reads everything; every write is 403 (enforced by ``WriterPrincipal``).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from taskhub_api.errors import Forbidden
from taskhub_api.identity.principal import Principal

ASSIGNEE_EDITABLE = frozenset({"status"})


def can_read(principal: Principal, task: Mapping[str, Any]) -> bool:
    return principal.reads_all or principal.id in (task["owner_id"], task["assignee_id"])


def ensure_can_edit(principal: Principal, task: Mapping[str, Any], fields: Set[str]) -> None:
    if principal.is_admin or task["owner_id"] == principal.id:
        return
    if task["assignee_id"] == principal.id and fields <= ASSIGNEE_EDITABLE:
        return
    raise Forbidden("You may only change the status of a task assigned to you.")


def ensure_can_delete(principal: Principal, task: Mapping[str, Any]) -> None:
    if not (principal.is_admin or task["owner_id"] == principal.id):
        raise Forbidden("Only the task's owner or an admin may delete it.")
