"""Shared fixtures: a fresh, migrated PostgreSQL database per test run (never SQLite),
and the application running its real lifespan."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskhub_api.main import create_app
from taskhub_api.schema import alembic_config
from taskhub_api.settings import (
    DatabaseSettings,
    Rate,
    RateLimitSettings,
    RedisSettings,
    Settings,
)
from tests.stack import REDIS_URL, devstack

ROOT = Path(__file__).resolve().parent.parent
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))


def pg_url(database: str, driver: str = "postgresql+asyncpg") -> str:
    return f"{driver}://postgres@{PG_HOST}:{PG_PORT}/{database}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(pg_url("postgres", "postgresql"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"taskhub_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = pg_url(name)
    command.upgrade(alembic_config(url), "head")
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The project's own Redis (never the machine's), keys prefixed per run."""
    devstack("start", "redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        db=DatabaseSettings(url=database_url),
        redis=RedisSettings(url=redis_url, key_prefix=f"taskhub-test-{uuid.uuid4().hex[:8]}:"),
        # Many logins per username across tests; tests/data checks the real limits.
        ratelimit=RateLimitSettings(
            token=Rate(requests=10_000),
            token_per_ip=Rate(requests=10_000),
            register_per_ip=Rate(requests=10_000),
            refresh_per_ip=Rate(requests=10_000),
            logout_per_ip=Rate(requests=10_000),
        ),
        log_json=False,
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application
