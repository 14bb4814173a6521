"""Query parameter types shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

# A keyset page: its size, and where the previous page ended (its `meta.next_cursor`).
Limit = Annotated[int, Query(ge=1, le=100, description="The page size.")]
Cursor = Annotated[
    str | None,
    Query(max_length=1024, description="`meta.next_cursor` of the previous page."),
]
