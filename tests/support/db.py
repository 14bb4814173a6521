"""The database as the tests clean it."""

from __future__ import annotations

from taskhub_api.models import Base

# Every table of the models, so that a new model is cleaned from its first test.
TRUNCATE = "TRUNCATE {} RESTART IDENTITY CASCADE".format(
    ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
)


def asyncpg_dsn(url: str) -> str:
    """The plain asyncpg DSN of a SQLAlchemy ``postgresql+asyncpg`` URL."""
    return url.replace("postgresql+asyncpg", "postgresql", 1)
