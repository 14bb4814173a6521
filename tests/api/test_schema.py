from __future__ import annotations

from alembic import command

from taskhub_api.schema import alembic_config


class TestMigrations:
    def test_models_and_migrations_do_not_drift(self, database_url: str) -> None:
        # Raises when autogenerate would emit operations (alembic check).
        command.check(alembic_config(database_url))
