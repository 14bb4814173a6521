"""Entity tags from a row's version (RFC 9110 section 8.8.3 and 13.1)."""

from __future__ import annotations

import re

from taskhub_api.errors import BadRequest, PreconditionFailed, field_error

_ENTITY_TAG = re.compile(r'^(W/)?"[\x21\x23-\x7e]*"$')


def etag(version: int) -> str:
    return f'"{version}"'


def _parse(header: str, name: str) -> list[str] | None:
    """The listed tags, or None for ``*``."""
    if header.strip() == "*":
        return None
    tags = [part.strip() for part in header.split(",") if part.strip()]
    if not tags or not all(_ENTITY_TAG.match(tag) for tag in tags):
        message = 'must be "*" or a list of quoted entity tags such as "3"'
        raise BadRequest(f"The {name} header {message}.", errors=[field_error(name, message)])
    return tags


def check_if_match(header: str | None, version: int) -> None:
    """412 unless ``If-Match`` is absent, ``*`` or names the current version (strong
    comparison: weak tags never match)."""
    if header is None:
        return
    tags = _parse(header, "If-Match")
    if tags is not None and etag(version) not in tags:
        raise PreconditionFailed(
            f"The task has changed: its current ETag is {etag(version)}.",
            errors=[field_error("If-Match", "does not match the current ETag")],
        )


def if_none_match_hit(header: str | None, version: int) -> bool:
    """True when ``If-None-Match`` names the current version (weak comparison)."""
    if header is None:
        return False
    tags = _parse(header, "If-None-Match")
    return tags is None or etag(version) in (t.removeprefix("W/") for t in tags)
