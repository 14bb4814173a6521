from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api.db import Database
from taskhub_api.settings import Settings


def bootstrap(
    settings: Settings, credentials: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "taskhub_api.cli",
            "bootstrap-admin",
            "--credentials-file",
            str(credentials),
        ],
        env={**os.environ, "TASKHUB_DB__URL": settings.db.url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestBootstrapAdmin:
    async def test_generates_a_password_once(
        self, settings: Settings, tmp_path: Path, client: httpx.AsyncClient
    ) -> None:
        credentials = tmp_path / "admin-credentials"
        first = bootstrap(settings, credentials)
        assert first.returncode == 0, first.stderr
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        password = dict(line.split("=", 1) for line in credentials.read_text().splitlines())[
            "password"
        ]
        assert password in first.stdout  # printed once

        second = bootstrap(settings, credentials)
        assert second.returncode == 0
        assert password not in second.stdout
        assert "exists" in second.stdout

        token = await client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": password}
        )
        assert token.status_code == 200
        me = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
        )
        assert me.json()["roles"] == ["admin"]

    async def test_uses_the_configured_password(
        self, settings: Settings, tmp_path: Path, client: httpx.AsyncClient
    ) -> None:
        result = bootstrap(
            settings,
            tmp_path / "unused",
            TASKHUB_BOOTSTRAP_ADMIN_USERNAME="root-admin",
            TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="configured-pass-77",
        )
        assert result.returncode == 0, result.stderr
        assert "configured-pass-77" not in result.stdout
        assert not (tmp_path / "unused").exists()
        token = await client.post(
            "/api/v1/auth/token", data={"username": "root-admin", "password": "configured-pass-77"}
        )
        assert token.status_code == 200

    async def test_rejects_a_weak_configured_password(
        self, settings: Settings, tmp_path: Path
    ) -> None:
        result = bootstrap(settings, tmp_path / "c", TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="short")
        assert result.returncode != 0
        assert "at least 10 characters" in result.stderr


class TestReadiness:
    async def test_not_ready_until_the_schema_is_at_head(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        db: Database = app.state.db
        async with db.primary.begin() as conn:
            head = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one()
            await conn.execute(text("DELETE FROM alembic_version"))
        try:
            response = await client.get("/health/ready")
            assert response.status_code == 503
            assert "needs" in response.json()["checks"]["schema"]
            assert (await client.get("/health/live")).status_code == 200
        finally:
            async with db.primary.begin() as conn:
                await conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": head})
        assert (await client.get("/health/ready")).status_code == 200
