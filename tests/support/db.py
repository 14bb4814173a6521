"""The database as the tests clean it."""

from __future__ import annotations

from taskhub_api.models import Base

# Every table of the models, children first, so that a new model is cleaned from its
# first test. DELETE, not TRUNCATE: on the few rows a test leaves, TRUNCATE's new files
# per table and index cost far more than the rows, and it runs before every test.
_DELETES = [
    f'DELETE FROM "{table.name}"'  # noqa: S608 (names of the models' tables)
    for table in reversed(Base.metadata.sorted_tables)
]
# Identity columns start again from 1, as after TRUNCATE ... RESTART IDENTITY.
_RESTARTS = [
    f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', '{column.name}'), 1, false)"
    for table in Base.metadata.sorted_tables
    for column in table.columns
    if column.identity is not None
]
CLEAN = "; ".join(_DELETES + _RESTARTS)


def asyncpg_dsn(url: str) -> str:
    """The plain asyncpg DSN of a SQLAlchemy ``postgresql+asyncpg`` URL."""
    return url.replace("postgresql+asyncpg", "postgresql", 1)
