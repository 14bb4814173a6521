"""Keyset pages: where a page starts (from its cursor) and how it ends (the next cursor).

Every list of the API pages the same way: the repository is asked for ``limit + 1`` rows
after the cursor's position; the extra row only says that there is a next page, whose
cursor holds the sort key of the last row returned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from taskhub_api.errors import BadRequest, field_error
from taskhub_api.kit import cursor
from taskhub_api.kit.schemas import PageMeta

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Keyset:
    """One list's cursors: signed with ``key``, for the sort ``sort``, bound to the
    filters whose ``cursor.fingerprint`` is ``bound_to``."""

    key: bytes
    sort: str
    bound_to: str

    def start(self, after: str | None, parse: Callable[[list[Any]], P]) -> P | None:
        """The position the page starts after (None: the first page). ``parse`` turns
        the cursor's values into the repository's position; values it refuses (a
        ValueError, TypeError, IndexError or AttributeError) are a malformed cursor."""
        if after is None:
            return None
        values = cursor.decode(self.key, after, self.sort, self.bound_to)
        try:
            return parse(values)
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise BadRequest(
                "The cursor is malformed.", errors=[field_error("cursor", "is malformed")]
            ) from exc

    def page(
        self, rows: Sequence[R], limit: int, sort_key: Callable[[R], list[Any]]
    ) -> tuple[list[R], PageMeta]:
        """The page of ``rows`` (fetched with ``limit + 1``) and its meta; the next
        cursor holds ``sort_key`` of the last row (JSON values)."""
        has_more = len(rows) > limit
        items = list(rows[:limit])
        next_cursor = (
            cursor.encode(self.key, self.sort, self.bound_to, sort_key(items[-1]))
            if has_more
            else None
        )
        return items, PageMeta(limit=limit, has_more=has_more, next_cursor=next_cursor)


def created_and_id(values: list[Any]) -> tuple[datetime, uuid.UUID]:
    """The position of the lists ordered by creation time, then id."""
    created_at, row_id = values
    return datetime.fromisoformat(created_at), uuid.UUID(row_id)
