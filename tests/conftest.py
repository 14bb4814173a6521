"""Shared fixtures of every suite: a fresh, migrated PostgreSQL database per test run
(never SQLite), the application running its real lifespan, a client, users with tokens
per role, and the port guard (tests/support/guard_plugin.py). Importing this module starts
nothing: every service is started by the fixture that needs it."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskhub_api.db import Database
from taskhub_api.main import create_app
from taskhub_api.schema import alembic_config
from taskhub_api.settings import (
    DatabaseSettings,
    Rate,
    RateLimitSettings,
    RedisSettings,
    Settings,
)
from tests import stack
from tests.support.broker import Broker, new_node
from tests.support.db import CLEAN, asyncpg_dsn
from tests.support.net import PG_HOST, PG_PORT
from tests.support.users import Actor, NewUser, create_user

ROOT = Path(__file__).resolve().parent.parent


def pg_url(database: str, driver: str = "postgresql+asyncpg") -> str:
    return f"{driver}://postgres@{PG_HOST}:{PG_PORT}/{database}"


pytest_plugins = ["tests.support.guard_plugin"]


# The database, Redis and the app


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
    stack.devstack("start", "redis")
    return stack.REDIS_URL


def _running(node: Broker) -> Iterator[Broker]:
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A RabbitMQ node of the session's (tests/support/broker.py)."""
    yield from _running(new_node(management=False))


@pytest.fixture(scope="session")
def managed_broker() -> Iterator[Broker]:
    """A node with its management API (the operator reads queue depths there). Apart
    from ``broker``: a node's restart takes longer with the plugin."""
    yield from _running(new_node(management=True))


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


@asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app on ``settings``, its lifespan run for real."""
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with started_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def _cleaner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def clean_database(_cleaner: asyncpg.Connection) -> None:
    """Empty tables (every table of the models); suites that share the per-run database
    use it autouse."""
    await _cleaner.execute(CLEAN)


@pytest.fixture
def new_user(db: Database, settings: Settings) -> NewUser:
    """Creates a user straight in the database: ``await new_user("admin")``."""

    async def create(*roles: str, username: str | None = None) -> Actor:
        return await create_user(db, settings, *roles, username=username)

    return create
