"""Which errors mean "the database is unavailable" (503): those of the driver and of
SQLAlchemy's pool, never a builtin error some other code raised."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import (
    Database,
    DatabaseUnavailable,
    database_boundary,
    driver_connection,
    raw_connection,
)
from taskhub_api.deps import ReadSessionDep, WriteSessionDep
from taskhub_api.main import create_app
from taskhub_api.settings import Settings

BUILTIN_ERRORS = {"timeout": TimeoutError, "reset": ConnectionResetError, "os": OSError}


@pytest.fixture
async def full_database(settings: Settings) -> AsyncIterator[Database]:
    """A Database whose server refuses every new connection as "too many clients": a
    role with a connection limit of 0, on the run's real PostgreSQL."""
    role = f"taskhub_full_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(settings.db.url.replace("+asyncpg", ""))
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        url = settings.db.url.replace("//postgres@", f"//{role}@")
        db = Database(settings.db.model_copy(update={"url": url, "replica_url": None}))
        try:
            yield db
        finally:
            await db.dispose()
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


class TestDatabaseBoundary:
    async def test_a_server_out_of_connections_is_unavailable(
        self, full_database: Database
    ) -> None:
        with pytest.raises(DatabaseUnavailable) as caught, database_boundary():
            async with full_database.transaction() as session:
                await session.execute(text("SELECT 1"))
        assert "too many connections" in str(caught.value.__cause__)
        with pytest.raises(DatabaseUnavailable):
            async with raw_connection(full_database.primary) as conn:
                await conn.fetchval("SELECT 1")

    async def test_a_driver_statement_timing_out_is_unavailable(self, app: FastAPI) -> None:
        db: Database = app.state.db
        with pytest.raises(DatabaseUnavailable) as caught, database_boundary():
            async with db.transaction() as session:
                conn = await driver_connection(session)
                await conn.execute("SELECT pg_sleep(2)", timeout=0.05)
        assert isinstance(caught.value.__cause__, TimeoutError)

    @pytest.mark.parametrize("error", [TimeoutError(), ConnectionResetError(), OSError()])
    def test_builtin_errors_of_other_code_pass_unchanged(self, error: Exception) -> None:
        with pytest.raises(type(error)) as caught, database_boundary():
            raise error
        assert caught.value is error


@pytest.fixture(scope="module")
async def buggy(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)

    @app.post("/bug/write/{kind}")
    async def write_bug(kind: str, session: WriteSessionDep) -> None:
        raise BUILTIN_ERRORS[kind]("not the database")

    @app.get("/bug/read/{kind}")
    async def read_bug(kind: str, session: ReadSessionDep) -> None:
        raise BUILTIN_ERRORS[kind]("not the database")

    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


class TestRoutes:
    """A builtin error raised by a route's own code (not the driver's) is a bug: 500
    problem+json, not "the database is unavailable", also inside a session."""

    @pytest.mark.parametrize("kind", sorted(BUILTIN_ERRORS))
    @pytest.mark.parametrize("route", ["write", "read"])
    async def test_is_a_500_problem(self, buggy: httpx.AsyncClient, route: str, kind: str) -> None:
        method = buggy.post if route == "write" else buggy.get
        response = await method(f"/bug/{route}/{kind}")
        assert response.status_code == 500, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "retry-after" not in response.headers
        assert response.json()["detail"] == "An unexpected error occurred."
