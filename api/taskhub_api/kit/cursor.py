"""Opaque, tamper-evident keyset cursors.

A cursor is ``base64url(json) "." base64url(hmac)``. The JSON holds the sort, a
fingerprint of the filters and the sort key of the last row. A cursor that was altered,
or is used with another sort or other filters, is rejected with 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from taskhub_api.errors import BadRequest, field_error

_SIG_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def fingerprint(filters: dict[str, Any]) -> str:
    """A short stable digest of the filters a cursor is bound to."""
    canonical = orjson.dumps(filters, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode(key: bytes, sort: str, filters_fp: str, values: list[Any]) -> str:
    body = orjson.dumps({"s": sort, "f": filters_fp, "k": values})
    sig = hmac.new(key, body, hashlib.sha256).digest()[:_SIG_BYTES]
    return f"{_b64(body)}.{_b64(sig)}"


def decode(key: bytes, cursor: str, sort: str, filters_fp: str) -> list[Any]:
    """The sort-key values stored in ``cursor``, after checking it belongs here."""

    def invalid(message: str) -> BadRequest:
        return BadRequest(message, errors=[field_error("cursor", message)])

    try:
        body_part, sig_part = cursor.split(".")
        body, sig = _unb64(body_part), _unb64(sig_part)
    except (ValueError, UnicodeEncodeError) as exc:
        raise invalid("The cursor is malformed.") from exc
    expected = hmac.new(key, body, hashlib.sha256).digest()[:_SIG_BYTES]
    if not hmac.compare_digest(sig, expected):
        raise invalid("The cursor is invalid or was altered.")
    payload = orjson.loads(body)
    if payload.get("s") != sort:
        raise invalid("The cursor was issued for another sort order.")
    if payload.get("f") != filters_fp:
        raise invalid("The cursor was issued for other filters.")
    values = payload.get("k")
    if not isinstance(values, list):
        raise invalid("The cursor is malformed.")
    return values
