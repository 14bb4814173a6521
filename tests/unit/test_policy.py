"""The task role matrix (tasks/policy.py) as plain function calls."""

from __future__ import annotations

import uuid

import pytest

from taskhub_api.errors import Forbidden
from taskhub_api.identity.principal import Principal, Role
from taskhub_api.tasks import policy

OWNER, ASSIGNEE, STRANGER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
TASK = {"owner_id": OWNER, "assignee_id": ASSIGNEE}


def who(user_id: uuid.UUID, *roles: Role) -> Principal:
    return Principal(user_id, "someone", frozenset(roles or (Role.USER,)))


ADMIN = who(STRANGER, Role.ADMIN)
VIEWER = who(STRANGER, Role.VIEWER)


class TestRead:
    @pytest.mark.parametrize(
        ("principal", "allowed"),
        [
            (ADMIN, True),
            (VIEWER, True),
            (who(OWNER), True),
            (who(ASSIGNEE), True),
            (who(STRANGER), False),
        ],
    )
    def test_who_reads_a_task(self, principal: Principal, allowed: bool) -> None:
        assert policy.can_read(principal, TASK) is allowed

    def test_a_task_without_assignee_is_not_read_by_a_stranger(self) -> None:
        assert not policy.can_read(who(STRANGER), {"owner_id": OWNER, "assignee_id": None})


class TestEdit:
    @pytest.mark.parametrize("principal", [ADMIN, who(OWNER)])
    def test_admin_and_owner_edit_any_field(self, principal: Principal) -> None:
        policy.ensure_can_edit(principal, TASK, {"title", "status", "assignee_id"})

    def test_the_assignee_changes_only_the_status(self) -> None:
        policy.ensure_can_edit(who(ASSIGNEE), TASK, {"status"})
        policy.ensure_can_edit(who(ASSIGNEE), TASK, set())
        with pytest.raises(Forbidden):
            policy.ensure_can_edit(who(ASSIGNEE), TASK, {"status", "title"})

    @pytest.mark.parametrize("principal", [who(STRANGER), VIEWER])
    def test_anyone_else_is_forbidden(self, principal: Principal) -> None:
        with pytest.raises(Forbidden):
            policy.ensure_can_edit(principal, TASK, {"status"})


class TestDelete:
    @pytest.mark.parametrize("principal", [ADMIN, who(OWNER)])
    def test_admin_and_owner_delete(self, principal: Principal) -> None:
        policy.ensure_can_delete(principal, TASK)

    @pytest.mark.parametrize("principal", [who(ASSIGNEE), who(STRANGER), VIEWER])
    def test_anyone_else_is_forbidden(self, principal: Principal) -> None:
        with pytest.raises(Forbidden):
            policy.ensure_can_delete(principal, TASK)
