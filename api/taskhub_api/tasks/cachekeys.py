"""Which cache entries a task read uses and which scopes a task write touches.

A principal who reads every task (admin, viewer) reads in scope ``all``; anyone else
in ``u:<id>``, the tasks they own or are assigned. A write touches ``all`` and the
scope of every user who could see the task before or after it. Keys are per principal.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from taskhub_api.db import CACHE_SCOPES, WriteSession
from taskhub_api.identity.principal import Principal

ALL = "all"


def read_scope(principal: Principal) -> str:
    return ALL if principal.reads_all else f"u:{principal.id}"


def _owner_part(principal: Principal) -> str:
    return str(principal.id) + ":" if principal.reads_all else ""


def task_key(principal: Principal, task_id: uuid.UUID) -> str:
    return f"{_owner_part(principal)}task:{task_id}"


def list_key(principal: Principal, query: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return f"{_owner_part(principal)}list:{digest}"


def touched(session: WriteSession, users: Iterable[uuid.UUID | None]) -> None:
    """Record that this transaction changed tasks visible to ``users`` (and to
    everyone who reads all)."""
    scopes: set[str] = session.info.setdefault(CACHE_SCOPES, set())
    scopes.add(ALL)
    scopes.update(f"u:{user}" for user in users if user is not None)
