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


def set_password(
    settings: Settings, username: str, password: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskhub_api.cli", "set-password", username, "--password-stdin"],
        input=password + "\n",
        env={**os.environ, "TASKHUB_DB__URL": settings.db.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
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

    async def test_a_different_configured_password_is_left_unchanged(
        self, settings: Settings, tmp_path: Path, client: httpx.AsyncClient
    ) -> None:
        env = {"TASKHUB_BOOTSTRAP_ADMIN_USERNAME": "ops-admin"}
        first = bootstrap(
            settings, tmp_path / "c", **env, TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="first-pass-11"
        )
        assert first.returncode == 0, first.stderr
        same = bootstrap(
            settings, tmp_path / "c", **env, TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="first-pass-11"
        )
        assert same.returncode == 0
        assert "left unchanged" not in same.stdout

        other = bootstrap(
            settings, tmp_path / "c", **env, TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="second-pass-22"
        )
        assert other.returncode == 0, other.stderr
        assert "password was left unchanged" in other.stdout
        assert "taskhub set-password ops-admin" in other.stdout
        assert "second-pass-22" not in other.stdout + other.stderr
        assert (await login(client, "ops-admin", "first-pass-11")).status_code == 200
        assert (await login(client, "ops-admin", "second-pass-22")).status_code == 401

    async def test_an_existing_user_is_made_an_admin(
        self, settings: Settings, tmp_path: Path, client: httpx.AsyncClient
    ) -> None:
        registered = await client.post(
            "/api/v1/auth/register",
            json={
                "username": "later-admin",
                "email": "later@example.com",
                "password": "user-pass-123",
            },
        )
        assert registered.status_code == 201, registered.text
        result = bootstrap(settings, tmp_path / "c", TASKHUB_BOOTSTRAP_ADMIN_USERNAME="later-admin")
        assert result.returncode == 0, result.stderr
        assert "made an admin" in result.stdout
        token = (await login(client, "later-admin", "user-pass-123")).json()["access_token"]
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert "admin" in me.json()["roles"]


class TestSetPassword:
    async def test_changes_the_password_and_ends_every_session(
        self, settings: Settings, tmp_path: Path, client: httpx.AsyncClient
    ) -> None:
        env = {"TASKHUB_BOOTSTRAP_ADMIN_USERNAME": "pw-admin"}
        assert (
            bootstrap(
                settings, tmp_path / "c", **env, TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="old-pass-111"
            ).returncode
            == 0
        )
        session = (await login(client, "pw-admin", "old-pass-111")).json()
        bearer = {"Authorization": f"Bearer {session['access_token']}"}
        assert (await client.get("/api/v1/users/me", headers=bearer)).status_code == 200

        result = set_password(settings, "pw-admin", "new-pass-222")
        assert result.returncode == 0, result.stderr
        assert "new-pass-222" not in result.stdout + result.stderr
        assert (await login(client, "pw-admin", "old-pass-111")).status_code == 401
        assert (await login(client, "pw-admin", "new-pass-222")).status_code == 200
        # The old login is over: its access token and its refresh token.
        assert (await client.get("/api/v1/users/me", headers=bearer)).status_code == 401
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert refreshed.status_code == 401

        # And the bootstrap no longer reports a difference for the new one.
        again = bootstrap(
            settings, tmp_path / "c", **env, TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="new-pass-222"
        )
        assert "left unchanged" not in again.stdout

    async def test_refuses_a_weak_password_and_an_unknown_user(
        self, settings: Settings, tmp_path: Path, client: httpx.AsyncClient
    ) -> None:
        env = {"TASKHUB_BOOTSTRAP_ADMIN_USERNAME": "pw-admin2"}
        assert (
            bootstrap(
                settings, tmp_path / "c", **env, TASKHUB_BOOTSTRAP_ADMIN_PASSWORD="old-pass-333"
            ).returncode
            == 0
        )
        weak = set_password(settings, "pw-admin2", "short")
        assert weak.returncode == 1
        assert "at least 10 characters" in weak.stderr
        assert (await login(client, "pw-admin2", "old-pass-333")).status_code == 200
        unknown = set_password(settings, "nobody-here", "new-pass-444")
        assert unknown.returncode == 1
        assert "does not exist" in unknown.stderr


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
