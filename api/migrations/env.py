"""Alembic environment: async engine from TASKHUB_DB__URL (or -x url=...), or the
connection `taskhub migrate` hands over (``config.attributes["connection"]``)."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from taskhub_api.models import Base
from taskhub_api.schema import lock_migrations, migration_engine
from taskhub_api.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or get_settings().db.url
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    # One transaction for the whole run (Alembic's, or the caller's: then this one is a
    # no-op and the caller commits). The advisory lock is transaction-level and taken
    # before Alembic reads alembic_version, so a plain `alembic upgrade` waits for a
    # running `taskhub migrate` (and the reverse) and then sees its result; taking it
    # again in the caller's transaction is harmless (it is re-entrant). No revision may
    # use autocommit_block(): it would commit, and so release the lock, mid-run.
    with context.begin_transaction():
        lock_migrations(connection)
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = migration_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif isinstance(given := config.attributes.get("connection"), Connection):
    _run(given)
else:
    asyncio.run(run_migrations_online())
