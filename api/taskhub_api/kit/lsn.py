"""PostgreSQL WAL positions (LSNs) as integers, and the consistency token built on them.

An LSN prints as ``16/B374D848``: the high and low 32 bits in hex. As an integer it
compares and subtracts naturally (lag in bytes); in Redis it is stored as 16 hex
digits so Lua can compare two of them as strings.
"""

from __future__ import annotations

import re

_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
ZERO = 0


def parse(text: str) -> int:
    """``'16/B374D848'`` -> integer; ValueError when malformed."""
    match = _TEXT.match(text.strip())
    if match is None:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def fixed_hex(value: int) -> str:
    """Sixteen hex digits: string order is numeric order."""
    return f"{max(value, 0):016x}"


def parse_token(header: str | None) -> int:
    """The LSN a client's ``Consistency-Token`` asks for; 0 when absent or malformed
    (a bad token only costs its holder freshness guarantees, never an error)."""
    if not header:
        return ZERO
    try:
        return parse(header)
    except ValueError:
        return ZERO
