"""Which errors mean "the database is unavailable" (503): those of the driver and of
SQLAlchemy's pool, never a builtin error some other code raised."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from taskhub_api.db import Database, DatabaseUnavailable, database_boundary, driver_connection


class TestDatabaseBoundary:
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
