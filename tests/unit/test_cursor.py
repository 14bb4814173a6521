"""The keyset cursor codec (kit/cursor.py): what it encodes comes back, anything else
is a 400 naming the cursor."""

from __future__ import annotations

import pytest

from taskhub_api.errors import BadRequest
from taskhub_api.kit import cursor

KEY = b"k" * 32
FILTERS = cursor.fingerprint({"status": ["todo"], "q": None})
VALUES = ["2026-12-01T10:00:00+00:00", "0b3a1f6e-7c1d-4b1e-9f5a-2d3c4b5a6978"]


def rejected(token: str, *, key: bytes = KEY, sort: str = "-created_at", fp: str = FILTERS) -> str:
    with pytest.raises(BadRequest) as caught:
        cursor.decode(key, token, sort, fp)
    assert caught.value.errors == [{"field": "cursor", "message": caught.value.detail}]
    return str(caught.value.detail)


class TestCursor:
    def test_what_is_encoded_decodes_unchanged(self) -> None:
        token = cursor.encode(KEY, "-created_at", FILTERS, VALUES)
        assert cursor.decode(KEY, token, "-created_at", FILTERS) == VALUES

    def test_the_token_is_url_safe_without_padding(self) -> None:
        token = cursor.encode(KEY, "-created_at", FILTERS, VALUES)
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
        )

    def test_an_altered_body_is_rejected(self) -> None:
        body, sig = cursor.encode(KEY, "-created_at", FILTERS, VALUES).split(".")
        other_body = cursor.encode(KEY, "-created_at", FILTERS, ["x", "y"]).split(".")[0]
        assert "altered" in rejected(f"{other_body}.{sig}")
        assert "altered" in rejected(f"{body}.{sig[:-2]}AA")

    def test_a_cursor_signed_with_another_key_is_rejected(self) -> None:
        token = cursor.encode(b"other" * 8, "-created_at", FILTERS, VALUES)
        assert "altered" in rejected(token)

    def test_another_sort_or_other_filters_are_rejected(self) -> None:
        token = cursor.encode(KEY, "-created_at", FILTERS, VALUES)
        assert "sort" in rejected(token, sort="priority")
        assert "filters" in rejected(token, fp=cursor.fingerprint({"status": ["done"]}))

    @pytest.mark.parametrize("token", ["", "abc", "a.b.c", "é.é", "!!!.???"])
    def test_malformed_tokens_are_rejected(self, token: str) -> None:
        rejected(token)

    def test_signed_values_that_are_not_a_list_are_rejected(self) -> None:
        token = cursor.encode(KEY, "-created_at", FILTERS, {"a": 1})  # type: ignore[arg-type]
        assert "malformed" in rejected(token)

    def test_the_fingerprint_ignores_key_order_but_not_values(self) -> None:
        assert cursor.fingerprint({"a": 1, "b": 2}) == cursor.fingerprint({"b": 2, "a": 1})
        assert cursor.fingerprint({"a": 1}) != cursor.fingerprint({"a": 2})
