"""Engines and the two session types.

``WriteSession`` is bound to the primary: writes and reads that must be fresh.
``ReadSession`` may be bound to a replica. Keeping them distinct types lets the type
checker see which one a function needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from taskhub_api.settings import DatabaseSettings


class WriteSession(AsyncSession):
    """A session on the primary."""


class ReadSession(AsyncSession):
    """A session that may read from a replica."""


def create_engine(url: str, settings: DatabaseSettings) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        "timeout": settings.connect_timeout,
        "statement_cache_size": settings.statement_cache_size,
        "server_settings": {"application_name": "taskhub"},
    }
    if settings.statement_cache_size == 0:
        # SQLAlchemy keeps its own prepared-statement cache on top of asyncpg's.
        connect_args["prepared_statement_cache_size"] = 0
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=1800,
        connect_args=connect_args,
    )


class Database:
    def __init__(self, settings: DatabaseSettings) -> None:
        self.primary = create_engine(settings.url, settings)
        self.replica = (
            create_engine(settings.replica_url, settings) if settings.replica_url else self.primary
        )
        self.write_sessions = async_sessionmaker(
            self.primary, class_=WriteSession, expire_on_commit=False, autoflush=False
        )
        self.read_sessions = async_sessionmaker(
            self.replica, class_=ReadSession, expire_on_commit=False, autoflush=False
        )

    async def dispose(self) -> None:
        await self.primary.dispose()
        if self.replica is not self.primary:
            await self.replica.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteSession]:
        """One unit of work on the primary: commits when the block finishes cleanly,
        else rolls back."""
        async with self.write_sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy connection, for hot read paths.

    Using it sends no BEGIN: SQLAlchemy's asyncpg adapter starts its transaction lazily
    on its own first statement.
    """
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver
