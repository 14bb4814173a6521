from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from taskhub_api.errors import BadRequest
from taskhub_api.kit import cursor
from taskhub_api.kit.pages import Keyset, created_and_id

KEY = b"k" * 32
KEYSET = Keyset(KEY, "created_at", cursor.fingerprint({"owner": "x"}))


def _sort_key(row: dict[str, Any]) -> list[Any]:
    return [row["created_at"].isoformat(), str(row["id"])]


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {"created_at": datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC), "id": uuid.uuid4()}
        for i in range(n)
    ]


class TestKeyset:
    def test_the_first_page_starts_nowhere(self) -> None:
        assert KEYSET.start(None, created_and_id) is None

    def test_an_extra_row_means_a_next_page_from_the_last_row_returned(self) -> None:
        rows = _rows(4)
        items, meta = KEYSET.page(rows, 3, _sort_key)
        assert items == rows[:3]
        assert meta.has_more
        assert meta.limit == 3
        assert meta.next_cursor is not None
        assert KEYSET.start(meta.next_cursor, created_and_id) == (
            rows[2]["created_at"],
            rows[2]["id"],
        )

    def test_no_extra_row_means_the_last_page(self) -> None:
        rows = _rows(3)
        items, meta = KEYSET.page(rows, 3, _sort_key)
        assert items == rows
        assert not meta.has_more
        assert meta.next_cursor is None

    def test_an_empty_page(self) -> None:
        items, meta = KEYSET.page([], 3, _sort_key)
        assert items == []
        assert not meta.has_more

    @pytest.mark.parametrize(
        "values", [[], ["2026-01-01T00:00:00+00:00"], ["not a date", str(uuid.uuid4())], [1, 2]]
    )
    def test_signed_values_of_the_wrong_shape_are_a_malformed_cursor(
        self, values: list[Any]
    ) -> None:
        signed = cursor.encode(KEY, KEYSET.sort, KEYSET.bound_to, values)
        with pytest.raises(BadRequest) as raised:
            KEYSET.start(signed, created_and_id)
        assert raised.value.detail == "The cursor is malformed."
        assert raised.value.errors == [{"field": "cursor", "message": "is malformed"}]

    def test_a_cursor_of_another_list_is_refused(self) -> None:
        other = Keyset(KEY, "created_at", cursor.fingerprint({"owner": "y"}))
        _, meta = other.page(_rows(2), 1, _sort_key)
        assert meta.next_cursor is not None
        with pytest.raises(BadRequest, match="other filters"):
            KEYSET.start(meta.next_cursor, created_and_id)
