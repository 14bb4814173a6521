"""Types shared by every domain's schemas."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, GetCoreSchemaHandler
from pydantic_core import core_schema


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _rfc3339(value: Any) -> Any:
    # pydantic would also read a number (or a string of one) as Unix time: the
    # documented format is an RFC 3339 string, and nothing else is one.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2027-01-01T09:00:00Z")
    return value


# Before a datetime type in an Annotated chain: the type then reads only strings.
RFC3339 = BeforeValidator(_rfc3339)

# Goes last in an Annotated chain: pydantic applies length constraints placed after a
# validator to the unstripped input.
Storable = AfterValidator(_storable)
Text = Annotated[str, Storable]

# C0 and C1 controls and DEL (terminal escapes, NUL), and the explicit bidirectional
# embeddings, overrides and isolates, which make text display other than it reads
# ("Trojan Source"). The implicit marks (LRM, RLM, ALM) stay: right-to-left text
# needs them.
_BIDI = "\u202a-\u202e\u2066-\u2069"
_SINGLE_LINE_FORBIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
# Multi-line text keeps tab, line feed and carriage return.
_MULTI_LINE_FORBIDDEN = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}]")
_BIDI_ONLY = re.compile(f"[{_BIDI}]")
# Categories that render as nothing: separators, controls, format characters
# (zero-width space and joiners, BOM, soft hyphen, tag characters).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
# Letters and symbols that render blank all the same: Hangul fillers, the braille
# blank, the combining grapheme joiner and variation selectors.
_INVISIBLE_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f") | frozenset(
    chr(c) for c in range(0xFE00, 0xFE10)
)


def is_blank(value: str) -> bool:
    """True when nothing of ``value`` would be visible."""
    return all(
        c.isspace()
        or c in _INVISIBLE_CHARACTERS
        or unicodedata.category(c) in _INVISIBLE_CATEGORIES
        for c in value
    )


@dataclass(frozen=True, slots=True)
class InputText:
    """``Annotated`` metadata for text a client sends, after any ``StringConstraints``:
    storable (no NUL, no lone surrogates), no control characters (``multiline`` keeps
    tab, CR and LF), no bidirectional overrides, and not blank (only whitespace and
    invisible characters) unless ``blank``. Request models only: stored rows written
    before these rules must still read back, so response models use plain ``str``."""

    multiline: bool = False
    blank: bool = False

    def validate(self, value: str) -> str:
        _storable(value)
        forbidden = (_MULTI_LINE_FORBIDDEN if self.multiline else _SINGLE_LINE_FORBIDDEN).search(
            value
        )
        if forbidden is not None:
            if _BIDI_ONLY.match(forbidden.group()):
                raise ValueError("must not contain bidirectional override characters")
            raise ValueError(
                f"must not contain control characters (found U+{ord(forbidden.group()):04X})"
            )
        if not self.blank and is_blank(value):
            raise ValueError("must not be blank")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))


# A single line (names, titles, labels) and free text (descriptions).
Line = Annotated[str, InputText()]
Paragraphs = Annotated[str, InputText(multiline=True, blank=True)]


class Schema(BaseModel):
    """Request bodies: unknown fields are rejected, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PageMeta(BaseModel):
    limit: int
    has_more: bool
    next_cursor: str | None
